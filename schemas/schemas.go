// Package schemas holds the documents that define evchat's outside
// interfaces, and validators that hold the code to them:
//
//   - events/: a JSON Schema (draft 2020-12) of the event envelope and one of
//     each event payload per type and version, <type>.v<version>.json;
//   - frames/: the WebSocket frames, client.v1.json and server.v1.json;
//   - common.v1.json: identifiers shared by the v1 events and frames;
//   - openapi.yaml: the REST API (OpenAPI 3.0.3);
//   - asyncapi.yaml: the topics and the WebSocket (AsyncAPI 2.6.0).
//
// The files are the source of truth; README.md explains them and the rules
// by which they change. They are embedded in the binary and compiled once,
// on first use. Validation errors are *domain.Error values: code
// unknown_type for an event type or version, or a frame type, that no schema
// describes, and bad_request for anything else.
package schemas

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/evchat/evchat/domain"
)

//go:embed common.v1.json events/*.json frames/*.json openapi.yaml asyncapi.yaml
var files embed.FS

// baseURL is where the embedded files live for the JSON Schema compiler, so
// that relative $refs between them resolve. Nothing is ever fetched from it.
const baseURL = "https://evchat.invalid/schemas/"

const envelopeFile = "events/envelope.v1.json"

// eventKey names one payload schema.
type eventKey struct {
	typ     string
	version int
}

// compiled is every schema, compiled.
type compiled struct {
	envelope *jsonschema.Schema
	events   map[eventKey]*jsonschema.Schema
	client   frameSet
	server   frameSet
}

// frameSet is the schemas of one direction's frames: the whole document
// (its oneOf), and one schema per frame type (its $defs entry), whose errors
// are more precise.
type frameSet struct {
	all    *jsonschema.Schema
	byType map[string]*jsonschema.Schema
}

var compileOnce = sync.OnceValues(compile)

// compile loads every embedded JSON file into one compiler and compiles the
// envelope, each payload schema and each frame schema.
func compile() (*compiled, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(embeddedOnly{})
	docs := map[string]any{}
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".json" {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("schemas: %s: %w", p, err)
		}
		docs[p] = doc
		return c.AddResource(baseURL+p, doc)
	})
	if err != nil {
		return nil, fmt.Errorf("schemas: load: %w", err)
	}

	out := &compiled{events: map[eventKey]*jsonschema.Schema{}}
	if out.envelope, err = c.Compile(baseURL + envelopeFile); err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", envelopeFile, err)
	}
	for p := range docs {
		if !strings.HasPrefix(p, "events/") || p == envelopeFile {
			continue
		}
		k, ok := parseEventFile(path.Base(p))
		if !ok {
			return nil, fmt.Errorf("schemas: %s: want events/<type>.v<version>.json", p)
		}
		if out.events[k], err = c.Compile(baseURL + p); err != nil {
			return nil, fmt.Errorf("schemas: compile %s: %w", p, err)
		}
	}
	if out.client, err = compileFrames(c, "frames/client.v1.json", docs); err != nil {
		return nil, err
	}
	if out.server, err = compileFrames(c, "frames/server.v1.json", docs); err != nil {
		return nil, err
	}
	return out, nil
}

// compileFrames compiles the frame document p and each of its $defs.
func compileFrames(c *jsonschema.Compiler, p string, docs map[string]any) (frameSet, error) {
	all, err := c.Compile(baseURL + p)
	if err != nil {
		return frameSet{}, fmt.Errorf("schemas: compile %s: %w", p, err)
	}
	doc, _ := docs[p].(map[string]any)
	defs, _ := doc["$defs"].(map[string]any)
	if len(defs) == 0 {
		return frameSet{}, fmt.Errorf("schemas: %s has no $defs", p)
	}
	set := frameSet{all: all, byType: map[string]*jsonschema.Schema{}}
	for name := range defs {
		if set.byType[name], err = c.Compile(baseURL + p + "#/$defs/" + name); err != nil {
			return frameSet{}, fmt.Errorf("schemas: compile %s#/$defs/%s: %w", p, name, err)
		}
	}
	return set, nil
}

// parseEventFile splits "message.sent.v1.json" into its type and version.
func parseEventFile(name string) (eventKey, bool) {
	name, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return eventKey{}, false
	}
	i := strings.LastIndex(name, ".v")
	if i <= 0 {
		return eventKey{}, false
	}
	v, err := strconv.Atoi(name[i+2:])
	if err != nil || v < 1 || strconv.Itoa(v) != name[i+2:] {
		return eventKey{}, false
	}
	return eventKey{typ: name[:i], version: v}, true
}

// embeddedOnly refuses to load anything: every schema the files refer to is
// embedded and added as a resource, and nothing is fetched from outside.
type embeddedOnly struct{}

func (embeddedOnly) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s is not an embedded schema", url)
}

// ValidateEvent checks raw, one record value from the log, against the
// envelope schema, then its payload against events/<type>.v<version>.json.
// An event whose type or version has no schema is an error of code
// unknown_type; readers that meet one skip it.
func ValidateEvent(raw []byte) error {
	c, err := compileOnce()
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return &domain.Error{Code: domain.CodeBadRequest, Msg: "event is not JSON", Err: err}
	}
	if err := c.envelope.Validate(v); err != nil {
		return &domain.Error{Code: domain.CodeBadRequest, Msg: "invalid event envelope", Err: err}
	}
	env := v.(map[string]any) // the envelope schema requires an object
	typ := env["type"].(string)
	version, ok := intOf(env["version"])
	if !ok {
		return domain.Errorf(domain.CodeUnknownType, "event %s version %v", typ, env["version"])
	}
	sch := c.events[eventKey{typ: typ, version: version}]
	if sch == nil {
		return domain.Errorf(domain.CodeUnknownType, "no schema for event %s version %d", typ, version)
	}
	if err := sch.Validate(env["payload"]); err != nil {
		return &domain.Error{
			Code: domain.CodeBadRequest,
			Msg:  fmt.Sprintf("invalid %s v%d payload", typ, version),
			Err:  err,
		}
	}
	return nil
}

// intOf returns the value of a JSON integer that fits in an int.
func intOf(v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	if i, err := strconv.Atoi(string(n)); err == nil {
		return i, true
	}
	f, err := n.Float64() // such as 1.0, which JSON Schema counts as an integer
	if err != nil || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// ValidateClientFrame checks raw, one WebSocket text frame from a client,
// against frames/client.v1.json. A frame of unknown type is an error of code
// unknown_type.
func ValidateClientFrame(raw []byte) error {
	c, err := compileOnce()
	if err != nil {
		return err
	}
	return validateFrame(c.client, raw)
}

// ValidateServerFrame checks raw, one WebSocket text frame from the server,
// against frames/server.v1.json. A frame of unknown type is an error of code
// unknown_type.
func ValidateServerFrame(raw []byte) error {
	c, err := compileOnce()
	if err != nil {
		return err
	}
	return validateFrame(c.server, raw)
}

// validateFrame validates raw against the schema of its type, whose errors
// are shorter than those of the whole document's oneOf.
func validateFrame(s frameSet, raw []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return &domain.Error{Code: domain.CodeBadRequest, Msg: "frame is not JSON", Err: err}
	}
	obj, _ := v.(map[string]any)
	typ, ok := obj["type"].(string)
	if !ok {
		return &domain.Error{
			Code: domain.CodeBadRequest,
			Msg:  `a frame is a JSON object with a string "type"`,
			Err:  s.all.Validate(v),
		}
	}
	sch := s.byType[typ]
	if sch == nil {
		return domain.Errorf(domain.CodeUnknownType, "unknown frame type %q", typ)
	}
	if err := sch.Validate(v); err != nil {
		return &domain.Error{Code: domain.CodeBadRequest, Msg: "invalid " + typ + " frame", Err: err}
	}
	return nil
}

// EventTypes returns the event types that have a schema in events/, sorted.
func EventTypes() []string {
	var types []string
	entries, _ := fs.ReadDir(files, "events") // embedded: cannot fail
	for _, e := range entries {
		if k, ok := parseEventFile(e.Name()); ok && "events/"+e.Name() != envelopeFile {
			types = append(types, k.typ)
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI document of the REST API, in YAML.
func OpenAPI() []byte { return bytes.Clone(openAPI) }

var openAPIRoutes = sync.OnceValues(func() ([]string, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPI)
	if err != nil {
		return nil, fmt.Errorf("schemas: load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("schemas: openapi.yaml: %w", err)
	}
	var routes []string
	for p, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			routes = append(routes, strings.ToUpper(method)+" "+echoPath(p))
		}
	}
	slices.Sort(routes)
	return routes, nil
})

// OpenAPIRoutes loads and validates the OpenAPI document and returns its
// routes as "METHOD /path", with path parameters in echo's style
// ("GET /v1/channels/:channel_id"), sorted.
func OpenAPIRoutes() ([]string, error) {
	routes, err := openAPIRoutes()
	return slices.Clone(routes), err
}

// echoPath turns "/v1/channels/{channel_id}" into "/v1/channels/:channel_id".
func echoPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = ":" + s[1:len(s)-1]
		}
	}
	return strings.Join(segs, "/")
}
