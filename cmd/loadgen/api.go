package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// api is chatd's REST interface, as much of it as a load run needs.
type api struct {
	base string       // http://host:port
	hc   *http.Client // setup requests
	// mc reads /metrics over one connection kept open from the first
	// reading on, so that a server out of file descriptors (every
	// connection asked for open) can still be read.
	mc *http.Client
}

func newAPI(server string, conns int) *api {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	mtr := &http.Transport{MaxIdleConns: 1, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}
	return &api{
		base: "http://" + server,
		hc:   &http.Client{Transport: tr, Timeout: 60 * time.Second},
		mc:   &http.Client{Transport: mtr, Timeout: 30 * time.Second},
	}
}

func (a *api) close() {
	a.hc.CloseIdleConnections()
	a.mc.CloseIdleConnections()
}

// apiError is an error answer: its stable code and HTTP status.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends body as JSON and decodes a 2xx answer into out.
func (a *api) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error.Code == "" {
			e.Error.Code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (a *api) healthy(ctx context.Context) error {
	return a.do(ctx, http.MethodGet, "/healthz", "", nil, nil)
}

func (a *api) signUp(ctx context.Context, name, password string) error {
	return a.do(ctx, http.MethodPost, "/v1/users", "", map[string]string{"name": name, "password": password}, nil)
}

// login logs device in and returns its token and the user's id.
func (a *api) login(ctx context.Context, name, password, device string) (token, userID string, err error) {
	var out struct {
		Token  string `json:"token"`
		UserID string `json:"user_id"`
	}
	err = a.do(ctx, http.MethodPost, "/v1/login", "", map[string]string{"name": name, "password": password, "device_id": device}, &out)
	return out.Token, out.UserID, err
}

// createChannel opens a direct channel (one other member) or a group as
// the token's user, and returns its id.
func (a *api) createChannel(ctx context.Context, token, kind, name string, members []string) (string, error) {
	body := map[string]any{"kind": kind, "members": members}
	if name != "" {
		body["name"] = name
	}
	var out struct {
		ChannelID string `json:"channel_id"`
	}
	err := a.do(ctx, http.MethodPost, "/v1/channels", token, body, &out)
	return out.ChannelID, err
}

// memSample is the server's memory and connections as its /metrics says.
type memSample struct {
	RSS         float64 `json:"rss_bytes"`
	HeapInuse   float64 `json:"heap_inuse_bytes"`
	StackInuse  float64 `json:"stack_inuse_bytes"`
	Goroutines  float64 `json:"goroutines"`
	Connections float64 `json:"connections"`
	GCs         float64 `json:"gc_count"`
	CPUSeconds  float64 `json:"cpu_seconds"`
}

// metrics reads the server's memory figures from /metrics.
func (a *api) metrics(ctx context.Context) (memSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return memSample{}, err
	}
	resp, err := a.mc.Do(req)
	if err != nil {
		return memSample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memSample{}, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics picks the unlabelled samples it knows out of Prometheus
// text format.
func parseMetrics(r io.Reader) (memSample, error) {
	var m memSample
	fields := map[string]*float64{
		"process_resident_memory_bytes": &m.RSS,
		"go_memstats_heap_inuse_bytes":  &m.HeapInuse,
		"go_memstats_stack_inuse_bytes": &m.StackInuse,
		"go_goroutines":                 &m.Goroutines,
		"evchat_ws_connections":         &m.Connections,
		"go_gc_duration_seconds_count":  &m.GCs,
		"process_cpu_seconds_total":     &m.CPUSeconds,
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		p := fields[name]
		if p == nil {
			continue
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // a timestamp may follow
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return m, fmt.Errorf("metrics: %s: %w", name, err)
		}
		*p = v
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("metrics: %w", err)
	}
	if m.RSS == 0 || m.HeapInuse == 0 {
		return m, fmt.Errorf("metrics: process_resident_memory_bytes or go_memstats_heap_inuse_bytes missing")
	}
	return m, nil
}
