package api_test

import (
	"slices"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/evchat/evchat/gateway/api"
	"github.com/evchat/evchat/schemas"
)

// TestRoutesMatchOpenAPI holds the registered routes to schemas/openapi.yaml:
// every operation there has a route, and there is no route it does not
// document.
func TestRoutesMatchOpenAPI(t *testing.T) {
	want, err := schemas.OpenAPIRoutes()
	if err != nil {
		t.Fatal(err)
	}
	// Registering routes calls no dependency, so none is needed.
	e := api.New(api.Config{})

	var got []string
	for _, r := range e.Routes() {
		// echo adds "route not found" routes for a group with middleware
		// (the authenticated group's "" and "/*"); they serve no operation.
		if r.Method == echo.RouteNotFound {
			continue
		}
		got = append(got, r.Method+" "+r.Path)
	}
	slices.Sort(got)
	if dup := slices.Compact(slices.Clone(got)); len(dup) != len(got) {
		t.Errorf("a route is registered twice: %q", got)
	}
	got = slices.Compact(got)

	var missing, extra []string
	for _, r := range want {
		if !slices.Contains(got, r) {
			missing = append(missing, r)
		}
	}
	for _, r := range got {
		if !slices.Contains(want, r) {
			extra = append(extra, r)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("routes differ from schemas/openapi.yaml\nin openapi.yaml, not registered: %q\nregistered, not in openapi.yaml: %q", missing, extra)
	}
	if len(want) == 0 {
		t.Error("openapi.yaml has no routes")
	}
}
