package schemas_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// releasedDir holds a frozen copy of every released v1 JSON Schema, under
// the same relative name as the current file (common.v1.json,
// events/<type>.v1.json, frames/<side>.v1.json), and SHA256SUMS of them.
const releasedDir = "released/v1"

// TestSchemaEvolution fails when a current schema is not a compatible
// evolution of its released copy (README.md, "The compatibility check").
func TestSchemaEvolution(t *testing.T) {
	released := releasedFiles(t)
	if len(released) == 0 {
		t.Fatalf("no released schemas under %s", releasedDir)
	}
	for _, name := range released {
		t.Run(name, func(t *testing.T) {
			old := readSchema(t, filepath.Join(releasedDir, filepath.FromSlash(name)))
			if _, err := os.Stat(filepath.FromSlash(name)); err != nil {
				t.Fatalf("released schema %s is gone: %v", name, err)
			}
			cur := readSchema(t, filepath.FromSlash(name))
			allowed := compatAllowed[name]
			seen := map[string]bool{}
			for _, issue := range compatIssues(old, cur) {
				if _, ok := allowed[issue]; ok {
					seen[issue] = true
					continue
				}
				t.Errorf("%s: %s", name, issue)
			}
			for _, issue := range sortedKeys(allowed) {
				if !seen[issue] {
					t.Errorf("%s: compatAllowed lists %q, which the check no longer finds: remove it", name, issue)
				}
			}
		})
	}

	// A v1 file that has no released copy yet is new; it is frozen when it
	// ships (README.md says how).
	current, _ := filepath.Glob("events/*.v1.json")
	frames, _ := filepath.Glob("frames/*.v1.json")
	top, _ := filepath.Glob("*.v1.json")
	for _, f := range slices.Concat(current, frames, top) {
		if !slices.Contains(released, filepath.ToSlash(f)) {
			t.Logf("%s has no released copy in %s yet", f, releasedDir)
		}
	}
}

// compatAllowed lists, per released file, the issues the check reports
// that were allowed anyway, each with why (README.md, "The compatibility
// check"). The check does not know which side reads a schema: dropping a
// required name breaks the readers of events, but in frames/client.v1.json
// the server is the only reader, and a client's frame that was valid stays
// valid. Every entry must still be found, so the list stays true.
var compatAllowed = map[string]map[string]string{
	"frames/client.v1.json": {
		`/$defs/sync/required: field "position" is no longer required`: "the server has always accepted a sync without position (it resumes from the device's last received position, as README.md documents); the schema now says so",
	},
}

// TestReleasedFrozen holds released/v1 to its checksums, so that a released
// copy is not edited to let an incompatible change through.
func TestReleasedFrozen(t *testing.T) {
	f, err := os.Open(filepath.Join(releasedDir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: malformed line %q", sc.Text())
		}
		sums[strings.TrimPrefix(name, "./")] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	released := releasedFiles(t)
	for _, name := range released {
		b, err := os.ReadFile(filepath.Join(releasedDir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		switch want, ok := sums[name]; {
		case !ok:
			t.Errorf("%s/%s is not in SHA256SUMS", releasedDir, name)
		case hex.EncodeToString(h[:]) != want:
			t.Errorf("%s/%s was edited after its release: a released schema never changes", releasedDir, name)
		}
	}
	for name := range sums {
		if !slices.Contains(released, name) {
			t.Errorf("SHA256SUMS names %s, which is not in %s", name, releasedDir)
		}
	}
}

// releasedFiles lists the JSON files under releasedDir, relative to it,
// with slashes, sorted.
func releasedFiles(t *testing.T) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(releasedDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".json" {
			return err
		}
		rel, err := filepath.Rel(releasedDir, p)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func readSchema(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := decodeSchema(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// decodeSchema decodes a JSON document keeping numbers exact, so that
// 9223372036854775807 and 9223372036854775806 differ.
func decodeSchema(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// compatIssues returns the ways the schema document cur is not a compatible
// evolution of old, each as "<JSON pointer>: <what changed>". It walks both
// documents side by side by name and compares keywords; it does not resolve
// $refs and is not a subsumption checker (README.md says what it checks).
func compatIssues(old, cur any) []string {
	var c compat
	c.schema("", old, cur)
	return c.issues
}

type compat struct{ issues []string }

func (c *compat) addf(at, format string, args ...any) {
	if at == "" {
		at = "/"
	}
	c.issues = append(c.issues, at+": "+fmt.Sprintf(format, args...))
}

// Keywords whose value must not change at all.
var compatEqual = []string{"type", "$ref", "const", "pattern", "format", "uniqueItems"}

// Bounds that may only move outward: upper bounds never down, lower bounds
// never up, and neither may be added.
var (
	compatUpper = []string{"maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties"}
	compatLower = []string{"minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties"}
)

// Keywords holding one subschema, compared in place.
var compatInPlace = []string{"items", "contains", "if", "then", "else", "not", "propertyNames"}

// Keywords holding subschemas by name.
var compatNamed = []string{"properties", "$defs", "patternProperties", "dependentSchemas"}

func (c *compat) schema(at string, old, cur any) {
	om, ok := old.(map[string]any)
	if !ok { // a boolean schema
		if !reflect.DeepEqual(old, cur) {
			c.addf(at, "schema %s became %s", brief(old), brief(cur))
		}
		return
	}
	cm, ok := cur.(map[string]any)
	if !ok {
		c.addf(at, "schema object became %s", brief(cur))
		return
	}

	c.required(at, om["required"], cm["required"])
	for _, k := range compatEqual {
		ov, oin := om[k]
		cv, cin := cm[k]
		switch {
		case oin && !cin:
			c.addf(at+"/"+k, "%s %s removed", k, brief(ov))
		case !oin && cin:
			c.addf(at+"/"+k, "%s %s added", k, brief(cv))
		case oin && !sameKeyword(k, ov, cv):
			c.addf(at+"/"+k, "%s changed from %s to %s", k, brief(ov), brief(cv))
		}
	}
	c.enum(at, om, cm)
	for _, k := range compatUpper {
		c.bound(at, k, om, cm, +1)
	}
	for _, k := range compatLower {
		c.bound(at, k, om, cm, -1)
	}
	c.additional(at, om["additionalProperties"], cm["additionalProperties"])

	for _, k := range compatNamed {
		oldNamed, _ := om[k].(map[string]any)
		curNamed, _ := cm[k].(map[string]any)
		for _, name := range sortedKeys(oldNamed) {
			p := at + "/" + k + "/" + pointerEscape(name)
			if v, ok := curNamed[name]; ok {
				c.schema(p, oldNamed[name], v)
			} else {
				c.addf(p, "%s entry %q removed", k, name)
			}
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		ob, _ := om[k].([]any)
		cb, _ := cm[k].([]any)
		byKey := map[string]any{}
		for i, b := range cb {
			byKey[branchKey(b, i)] = b
		}
		for i, b := range ob {
			key := branchKey(b, i)
			if v, ok := byKey[key]; ok {
				c.schema(fmt.Sprintf("%s/%s/%d", at, k, i), b, v)
			} else {
				c.addf(fmt.Sprintf("%s/%s/%d", at, k, i), "%s branch %s removed", k, key)
			}
		}
		if len(ob) == 0 && len(cb) > 0 {
			c.addf(at+"/"+k, "%s added", k)
		}
	}
	for _, k := range []string{"allOf", "prefixItems"} {
		ob, _ := om[k].([]any)
		cb, _ := cm[k].([]any)
		if len(ob) != len(cb) {
			c.addf(at+"/"+k, "%s has %d entries, was %d", k, len(cb), len(ob))
		}
		for i := range min(len(ob), len(cb)) {
			c.schema(fmt.Sprintf("%s/%s/%d", at, k, i), ob[i], cb[i])
		}
	}
	for _, k := range compatInPlace {
		ov, oin := om[k]
		cv, cin := cm[k]
		switch {
		case oin && cin:
			c.schema(at+"/"+k, ov, cv)
		case oin:
			c.addf(at+"/"+k, "%s removed", k)
		case cin:
			c.addf(at+"/"+k, "%s added", k)
		}
	}
}

// required: the set of required names must stay the same.
func (c *compat) required(at string, old, cur any) {
	was, is := stringSet(old), stringSet(cur)
	for _, n := range sortedKeys(is) {
		if !was[n] {
			c.addf(at+"/required", "new required field %q (a new field must be optional)", n)
		}
	}
	for _, n := range sortedKeys(was) {
		if !is[n] {
			c.addf(at+"/required", "field %q is no longer required", n)
		}
	}
}

// enum: values may only be added.
func (c *compat) enum(at string, om, cm map[string]any) {
	ov, oin := om["enum"].([]any)
	cv, cin := cm["enum"].([]any)
	switch {
	case !oin && cin:
		c.addf(at+"/enum", "enum added")
	case oin && !cin:
		c.addf(at+"/enum", "enum removed")
	case oin:
		for _, v := range ov {
			if !slices.ContainsFunc(cv, func(x any) bool { return reflect.DeepEqual(x, v) }) {
				c.addf(at+"/enum", "enum value %s removed", brief(v))
			}
		}
	}
}

// bound checks a numeric bound that may only move outward: dir +1 for an
// upper bound (never lowered), -1 for a lower one (never raised). A bound
// that appears narrows; one that goes widens.
func (c *compat) bound(at, k string, om, cm map[string]any, dir int) {
	ov, oin := om[k]
	cv, cin := cm[k]
	switch {
	case !oin && cin:
		c.addf(at+"/"+k, "%s %s added", k, brief(cv))
	case oin && cin:
		o, ok1 := number(ov)
		n, ok2 := number(cv)
		if !ok1 || !ok2 {
			c.addf(at+"/"+k, "%s is not a number", k)
			return
		}
		if n.Cmp(o)*dir < 0 {
			verb := "lowered"
			if dir < 0 {
				verb = "raised"
			}
			c.addf(at+"/"+k, "%s %s from %s to %s", k, verb, o.RatString(), n.RatString())
		}
	}
}

// additional: additionalProperties may not close (true or absent to false
// or to a schema); a schema value is compared as a schema.
func (c *compat) additional(at string, old, cur any) {
	open := func(v any) bool { return v == nil || v == true }
	switch {
	case open(old) && !open(cur):
		c.addf(at+"/additionalProperties", "additionalProperties closed (%s): readers must accept unknown fields", brief(cur))
	case old == false, open(cur):
	default:
		c.schema(at+"/additionalProperties", old, cur)
	}
}

// sameKeyword compares two values of keyword k; type may be a string or a
// set of strings.
func sameKeyword(k string, a, b any) bool {
	if k == "type" {
		return slices.Equal(slices.Sorted(maps.Keys(stringSet(a))), slices.Sorted(maps.Keys(stringSet(b))))
	}
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x.Cmp(y) == 0
	}
	return reflect.DeepEqual(a, b)
}

// branchKey names a oneOf/anyOf branch: by its $ref, else its title, else
// the const of its "type" property (a frame), else its position.
func branchKey(b any, i int) string {
	m, _ := b.(map[string]any)
	if r, ok := m["$ref"].(string); ok {
		return "$ref " + r
	}
	if t, ok := m["title"].(string); ok {
		return "title " + t
	}
	if props, ok := m["properties"].(map[string]any); ok {
		if typ, ok := props["type"].(map[string]any); ok {
			if c, ok := typ["const"].(string); ok {
				return "type " + c
			}
		}
	}
	return fmt.Sprintf("#%d", i)
}

func stringSet(v any) map[string]bool {
	set := map[string]bool{}
	switch v := v.(type) {
	case string:
		set[v] = true
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				set[s] = true
			}
		}
	}
	return set
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func number(v any) (*big.Rat, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	return new(big.Rat).SetString(string(n))
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// brief renders a keyword's value for a message.
func brief(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

// TestCompatChecker proves that the checker catches what it must, on
// in-memory modified copies of the current files, and lets compatible
// changes through.
func TestCompatChecker(t *testing.T) {
	load := func(name string) map[string]any {
		b, err := os.ReadFile(filepath.FromSlash(name))
		if err != nil {
			t.Fatal(err)
		}
		v, err := decodeSchema(b)
		if err != nil {
			t.Fatal(err)
		}
		return v.(map[string]any)
	}
	obj := func(m map[string]any, keys ...string) map[string]any {
		for _, k := range keys {
			m = m[k].(map[string]any)
		}
		return m
	}
	tests := []struct {
		name   string
		file   string
		change func(doc map[string]any)
		want   []string // substrings of the issues; none when compatible
	}{
		{
			name:   "removed property",
			file:   "events/message.sent.v1.json",
			change: func(d map[string]any) { delete(obj(d, "properties"), "device_id") },
			want:   []string{`/properties/device_id: properties entry "device_id" removed`},
		},
		{
			name: "new required field",
			file: "events/channel.read.v1.json",
			change: func(d map[string]any) {
				obj(d, "properties")["read_at"] = map[string]any{"$ref": "../common.v1.json#/$defs/time"}
				d["required"] = append(d["required"].([]any), "read_at")
			},
			want: []string{`/required: new required field "read_at"`},
		},
		{
			name:   "required field dropped from required",
			file:   "events/device.acked.v1.json",
			change: func(d map[string]any) { d["required"] = []any{"user_id", "device_id", "epoch"} },
			want:   []string{`/required: field "position" is no longer required`},
		},
		{
			name:   "changed type",
			file:   "events/inbox.message.v1.json",
			change: func(d map[string]any) { obj(d, "properties", "channel_partition")["type"] = "string" },
			want:   []string{`/properties/channel_partition/type: type changed from "integer" to "string"`},
		},
		{
			name:   "type widened to a union",
			file:   "events/presence.changed.v1.json",
			change: func(d map[string]any) { obj(d, "properties", "online")["type"] = []any{"boolean", "null"} },
			want:   []string{`/properties/online/type: type changed`},
		},
		{
			name:   "narrowed maxLength",
			file:   "common.v1.json",
			change: func(d map[string]any) { obj(d, "$defs", "text")["maxLength"] = json.Number("4096") },
			want:   []string{`/$defs/text/maxLength: maxLength lowered from 100000 to 4096`},
		},
		{
			name: "narrowed maximum by one",
			file: "events/device.acked.v1.json",
			change: func(d map[string]any) {
				obj(d, "properties", "position")["maximum"] = json.Number("9223372036854775806")
			},
			want: []string{`/properties/position/maximum: maximum lowered`},
		},
		{
			name: "raised minimum",
			file: "frames/client.v1.json",
			change: func(d map[string]any) {
				obj(d, "$defs", "received", "properties", "position")["minimum"] = json.Number("1")
			},
			want: []string{`/$defs/received/properties/position/minimum: minimum raised from 0 to 1`},
		},
		{
			name: "added maxLength",
			file: "frames/server.v1.json",
			change: func(d map[string]any) {
				obj(d, "$defs", "error", "properties", "message")["maxLength"] = json.Number("500")
			},
			want: []string{`/$defs/error/properties/message/maxLength: maxLength 500 added`},
		},
		{
			name: "removed enum value",
			file: "common.v1.json",
			change: func(d map[string]any) {
				e := obj(d, "$defs", "channel_kind")
				e["enum"] = []any{"group"}
			},
			want: []string{`/$defs/channel_kind/enum: enum value "direct" removed`},
		},
		{
			name:   "changed pattern",
			file:   "common.v1.json",
			change: func(d map[string]any) { obj(d, "$defs", "device_id")["pattern"] = "^[a-z0-9-]{1,32}$" },
			want:   []string{`/$defs/device_id/pattern: pattern changed`},
		},
		{
			name: "changed $ref",
			file: "events/channel.read.v1.json",
			change: func(d map[string]any) {
				obj(d, "properties", "device_id")["$ref"] = "../common.v1.json#/$defs/user_name"
			},
			want: []string{`/properties/device_id/$ref: $ref changed`},
		},
		{
			name:   "closed object",
			file:   "events/clock.ticked.v1.json",
			change: func(d map[string]any) { d["additionalProperties"] = false },
			want:   []string{`/additionalProperties: additionalProperties closed`},
		},
		{
			name: "dropped frame type",
			file: "frames/client.v1.json",
			change: func(d map[string]any) {
				d["oneOf"] = slices.DeleteFunc(d["oneOf"].([]any), func(b any) bool {
					return b.(map[string]any)["$ref"] == "#/$defs/read"
				})
				delete(obj(d, "$defs"), "read")
			},
			want: []string{`oneOf branch $ref #/$defs/read removed`, `/$defs/read: $defs entry "read" removed`},
		},
		{
			name: "frame field narrowed deep inside $defs",
			file: "frames/server.v1.json",
			change: func(d map[string]any) {
				obj(d, "$defs", "message", "properties", "position")["minimum"] = json.Number("1")
			},
			want: []string{`/$defs/message/properties/position/minimum: minimum raised`},
		},
		{
			name: "if/then narrowed",
			file: "events/channel.created.v1.json",
			change: func(d map[string]any) {
				obj(d, "then", "properties", "members")["maxItems"] = json.Number("1")
			},
			want: []string{`/then/properties/members/maxItems: maxItems lowered from 2 to 1`},
		},
		{
			name: "several at once",
			file: "events/message.sent.v1.json",
			change: func(d map[string]any) {
				delete(obj(d, "properties"), "text")
				obj(d, "properties", "client_msg_id")["maxLength"] = json.Number("32")
			},
			want: []string{`/properties/text: properties entry "text" removed`, `/properties/client_msg_id/maxLength: maxLength 32 added`},
		},

		// Compatible changes.
		{
			name: "optional property added",
			file: "events/message.sent.v1.json",
			change: func(d map[string]any) {
				obj(d, "properties")["reply_to"] = map[string]any{"description": "x", "$ref": "../common.v1.json#/$defs/message_id"}
			},
		},
		{
			name:   "maxLength raised",
			file:   "common.v1.json",
			change: func(d map[string]any) { obj(d, "$defs", "channel_name")["maxLength"] = json.Number("400") },
		},
		{
			name:   "minimum lowered",
			file:   "events/device.acked.v1.json",
			change: func(d map[string]any) { obj(d, "properties", "position")["minimum"] = json.Number("-1") },
		},
		{
			name: "error code added",
			file: "common.v1.json",
			change: func(d map[string]any) {
				e := obj(d, "$defs", "error_code")
				e["enum"] = append(e["enum"].([]any), "rate_limited")
			},
		},
		{
			name: "server frame type added",
			file: "frames/server.v1.json",
			change: func(d map[string]any) {
				d["oneOf"] = append(d["oneOf"].([]any), map[string]any{"$ref": "#/$defs/typing"})
				obj(d, "$defs")["typing"] = map[string]any{"type": "object", "required": []any{"type"}, "properties": map[string]any{"type": map[string]any{"const": "typing"}}}
			},
		},
		{
			name: "descriptions and examples edited, oneOf reordered",
			file: "frames/client.v1.json",
			change: func(d map[string]any) {
				d["description"] = "new words"
				obj(d, "$defs", "send")["examples"] = []any{map[string]any{"type": "send"}}
				slices.Reverse(d["oneOf"].([]any))
			},
		},
		{
			name: "same numbers written differently",
			file: "common.v1.json",
			change: func(d map[string]any) {
				obj(d, "$defs", "text")["maxLength"] = json.Number("1e5")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := load(tt.file), load(tt.file)
			if issues := compatIssues(old, cur); len(issues) > 0 {
				t.Fatalf("unchanged %s: %q", tt.file, issues)
			}
			tt.change(cur)
			issues := compatIssues(old, cur)
			if len(tt.want) == 0 {
				if len(issues) > 0 {
					t.Fatalf("a compatible change was refused: %q", issues)
				}
				return
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(issues, func(s string) bool { return strings.Contains(s, w) }) {
					t.Errorf("no issue containing %q in %q", w, issues)
				}
			}
		})
	}
}

// TestCompatCheckerWholeFile covers a released file that is gone or that
// is no longer a schema object.
func TestCompatCheckerWholeFile(t *testing.T) {
	old, err := decodeSchema([]byte(`{"type":"object","required":["a"],"properties":{"a":{"type":"string"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := compatIssues(old, []any{}); len(got) != 1 || !strings.Contains(got[0], "schema object became []") {
		t.Errorf("issues %q", got)
	}
	if got := compatIssues(old, map[string]any{}); len(got) != 3 {
		t.Errorf("an empty schema: want 3 issues (type, required, property), got %q", got)
	}
}
