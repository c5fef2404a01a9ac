package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/evchat/evchat/domain"
)

// FuzzBind feeds the REST binder any body, content type and size bound:
// it fills the request or answers bad_request or too_long, never another
// code, and never panics (the fuzzing of the whole OpenAPI
// document found no 5xx; this keeps the binder to it).
func FuzzBind(f *testing.F) {
	for _, seed := range []struct {
		body, ctype string
		limit       int64
	}{
		{`{"name":"ann","password":"correct horse"}`, "application/json", 1 << 16},
		{`{"kind":"group","members":["1","2"]}`, "application/json", 1 << 16},
		{`{"members":"nope"}`, "application/json", 1 << 16},
		{`{"name":"` + string(bytes.Repeat([]byte("a"), 100)) + `"}`, "application/json", 32},
		{"name=ann&password=x", "application/x-www-form-urlencoded", 1 << 16},
		{"\xff\xfe{", "application/json", 1 << 16},
		{`{"user_id":1e999}`, "application/json", 1 << 16},
		{"", "", 1 << 16},
	} {
		f.Add(seed.body, seed.ctype, seed.limit)
	}
	e := echo.New()
	f.Fuzz(func(t *testing.T, body, ctype string, limit int64) {
		limit = max(1, min(limit, 1<<20))
		req := httptest.NewRequest(http.MethodPost, "/v1/channels", bytes.NewReader([]byte(body)))
		if ctype != "" {
			req.Header.Set(echo.HeaderContentType, ctype)
		}
		rec := httptest.NewRecorder()
		req.Body = http.MaxBytesReader(rec, req.Body, limit)
		c := e.NewContext(req, rec)
		var channel struct {
			Kind    domain.ChannelKind `json:"kind"`
			Name    string             `json:"name"`
			Members []domain.UserID    `json:"members"`
		}
		var login struct {
			Name     string          `json:"name"`
			Password string          `json:"password"`
			DeviceID domain.DeviceID `json:"device_id"`
		}
		for _, v := range []any{&channel, &login} {
			err := bind(c, v)
			if err == nil {
				continue
			}
			if code := domain.CodeOf(err); code != domain.CodeBadRequest && code != domain.CodeTooLong {
				t.Fatalf("bind(%q, %q, %d): code %s (%v), want bad_request or too_long", body, ctype, limit, code, err)
			}
		}
	})
}
