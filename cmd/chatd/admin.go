package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/verify"
)

// replayable is a projection the admin can rebuild: its topic and a fresh
// handler.
type replayable struct {
	topic   string
	handler func() projector.Handler
}

// admin serves the operators' endpoints on their own listener: replay,
// verify and pprof.
type admin struct {
	roles       *roles
	projections map[string]replayable
	st          store.Store
	log         eventlog.Config
	limits      domain.Limits
	logger      *slog.Logger

	mu  sync.Mutex
	job *replayJob
}

// replayJob is the state of the current (or last) replay.
type replayJob struct {
	Projection string    `json:"projection"`
	From       string    `json:"from"`
	State      string    `json:"state"` // running, done, failed
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished,omitzero"`
	Applied    int64     `json:"applied"`           // events applied since the start
	Lag        int64     `json:"lag"`               // events still to apply
	Rate       float64   `json:"events_per_second"` // over the last second
	Error      string    `json:"error,omitempty"`
	base       map[int32]int64
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/replay", a.startReplay)
	mux.HandleFunc("GET /admin/replay", a.replayStatus)
	mux.HandleFunc("GET /admin/verify", a.verify)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": string(domain.CodeOf(err)), "message": err.Error()}})
}

// startReplay takes {"projection": "history", "from": "start" | "offset:N" |
// "time:RFC3339"} and rebuilds the projection while everything else runs.
func (a *admin) startReplay(w http.ResponseWriter, r *http.Request) {
	var req struct{ Projection, From string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest, "malformed JSON body"))
		return
	}
	p, ok := a.projections[req.Projection]
	if !ok {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest, "projection %q: replayable are history, inbox, cursors, push", req.Projection))
		return
	}
	if req.From == "" {
		req.From = "start"
	}
	a.mu.Lock()
	if a.job != nil && a.job.State == "running" {
		a.mu.Unlock()
		writeErr(w, http.StatusConflict, domain.Errorf(domain.CodeConflict, "a replay of %s is running", a.job.Projection))
		return
	}
	job := &replayJob{Projection: req.Projection, From: req.From, State: "running", Started: time.Now().UTC()}
	a.job = job
	a.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := a.rewind(ctx, req.Projection, p, req.From, job); err != nil {
		a.mu.Lock()
		job.State, job.Error, job.Finished = "failed", err.Error(), time.Now().UTC()
		a.mu.Unlock()
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.logger.Info("replay started", "projection", req.Projection, "from", req.From)
	writeJSON(w, http.StatusAccepted, a.status(r.Context()))
}

// rewind stops the projection, resets or rewinds it, and starts it again.
func (a *admin) rewind(ctx context.Context, name string, p replayable, from string, job *replayJob) error {
	positions, err := a.fromPositions(ctx, p.topic, from)
	if err != nil {
		return err
	}
	run, err := a.roles.stop(name)
	if err != nil {
		return err
	}
	defer a.roles.start(name, run)
	if positions == nil {
		if err := a.st.ResetProjection(ctx, name); err != nil {
			return err
		}
	} else if err := a.st.Apply(ctx, store.Batch{Projection: name, Positions: positions}); err != nil {
		return err
	}
	job.base = positions
	return nil
}

// fromPositions returns the positions a replay starts from; nil means the
// beginning, with the projection's state deleted.
func (a *admin) fromPositions(ctx context.Context, topic, from string) (map[int32]int64, error) {
	if from == "start" {
		return nil, nil
	}
	cl, err := kgo.NewClient(a.log.ClientOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var listed kadm.ListedOffsets
	switch kind, v, _ := strings.Cut(from, ":"); kind {
	case "offset":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, domain.Errorf(domain.CodeBadRequest, "from %q: want offset:N with N ≥ 0", from)
		}
		if listed, err = adm.ListStartOffsets(ctx, topic); err != nil {
			return nil, err
		}
		out := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = max(o.Offset, n) })
		return out, nil
	case "time":
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, domain.Errorf(domain.CodeBadRequest, "from %q: want time:RFC3339", from)
		}
		if listed, err = adm.ListOffsetsAfterMilli(ctx, t.UnixMilli(), topic); err != nil {
			return nil, err
		}
		out := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
		return out, nil
	}
	return nil, domain.Errorf(domain.CodeBadRequest, "from %q: want start, offset:N or time:RFC3339", from)
}

func (a *admin) replayStatus(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	none := a.job == nil
	a.mu.Unlock()
	if none {
		writeErr(w, http.StatusNotFound, domain.Errorf(domain.CodeNotFound, "no replay has run"))
		return
	}
	writeJSON(w, http.StatusOK, a.status(r.Context()))
}

// status measures the running job: applied events, lag and rate.
func (a *admin) status(ctx context.Context) replayJob {
	a.mu.Lock()
	job := a.job
	a.mu.Unlock()
	if job.State != "running" {
		return *job
	}
	p := a.projections[job.Projection]
	applied, lag, err := a.progress(ctx, job.Projection, p.topic, job.base)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		return *job
	}
	if !job.Finished.IsZero() || applied < 0 {
		return *job
	}
	now := time.Now().UTC()
	if secs := now.Sub(job.Started).Seconds(); secs > 0 {
		job.Rate = float64(applied) / secs
	}
	job.Applied, job.Lag = applied, lag
	if lag == 0 {
		job.State, job.Finished = "done", now
		a.logger.Info("replay done", "projection", job.Projection, "applied", applied, "seconds", now.Sub(job.Started).Seconds())
	}
	return *job
}

// progress returns the events applied since base and the lag behind the
// log's end, both summed over partitions.
func (a *admin) progress(ctx context.Context, name, topic string, base map[int32]int64) (applied, lag int64, err error) {
	pos, err := a.st.Positions(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	cl, err := kgo.NewClient(a.log.ClientOpts()...)
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	ends.Each(func(o kadm.ListedOffset) {
		from := base[o.Partition]
		if base == nil {
			if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
				from = s.Offset
			}
		}
		at, ok := pos[o.Partition]
		if !ok {
			at = from
		}
		applied += max(at-from, 0)
		// A transaction's commit marker takes the last offset: a
		// projection that has read everything may sit one below the end.
		if d := o.Offset - at; d > 1 {
			lag += d
		}
	})
	return applied, lag, nil
}

func (a *admin) verify(w http.ResponseWriter, r *http.Request) {
	rep, err := verify.Run(r.Context(), a.log, a.st, r.URL.Query().Get("projection"), a.limits)
	if err != nil {
		status := http.StatusInternalServerError
		if domain.CodeOf(err) == domain.CodeBadRequest {
			status = http.StatusBadRequest
		}
		writeErr(w, status, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

var errReplayFailed = errors.New("replay failed")

// ---- the operator's subcommands: chatd replay, chatd verify ----

// replayCmd asks a running node to rebuild a projection and shows its
// progress until it is done.
func replayCmd(ctx context.Context, adminAddr, projection, from string, out *printer) error {
	body := fmt.Sprintf(`{"projection":%q,"from":%q}`, projection, from)
	resp, err := http.Post("http://"+adminAddr+"/admin/replay", "application/json", strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("the node's admin address %s does not answer: %w", adminAddr, err)
	}
	var job replayJob
	err = decodeAdmin(resp, &job)
	if err != nil {
		return err
	}
	for {
		out.progress(fmt.Sprintf("replay %s from %s: %d applied, lag %d, %.0f events/s%s",
			job.Projection, job.From, job.Applied, job.Lag, job.Rate, eta(job)))
		switch job.State {
		case "done":
			out.done(fmt.Sprintf("replay %s done: %d events in %.1f s (%.0f events/s)",
				job.Projection, job.Applied, job.Finished.Sub(job.Started).Seconds(), job.Rate))
			return nil
		case "failed":
			out.done("")
			return fmt.Errorf("%w: %s", errReplayFailed, job.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		resp, err := http.Get("http://" + adminAddr + "/admin/replay")
		if err != nil {
			return err
		}
		if err := decodeAdmin(resp, &job); err != nil {
			return err
		}
	}
}

func eta(j replayJob) string {
	if j.Rate <= 0 || j.Lag <= 0 {
		return ""
	}
	return fmt.Sprintf(", about %s left", (time.Duration(float64(j.Lag)/j.Rate) * time.Second).Round(time.Second))
}

// verifyCmd asks a running node to verify a projection and prints the
// report; it fails when the store and the log disagree.
func verifyCmd(adminAddr, projection string, out *printer) error {
	resp, err := http.Get("http://" + adminAddr + "/admin/verify?projection=" + projection)
	if err != nil {
		return fmt.Errorf("the node's admin address %s does not answer: %w", adminAddr, err)
	}
	var rep verify.Report
	if err := decodeAdmin(resp, &rep); err != nil {
		return err
	}
	out.done(fmt.Sprintf("verify %s: %d entities, %d events; log digest %s, store digest %s",
		rep.Projection, rep.Entities, rep.Events, short(rep.LogDigest), short(rep.StoreDigest)))
	if !rep.Agree {
		return fmt.Errorf("the store and the log disagree: %s", rep.FirstDifference)
	}
	out.done("they agree")
	return nil
}

func short(d string) string { return d[:min(12, len(d))] }

func decodeAdmin(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s: %s", e.Error.Code, e.Error.Message)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
