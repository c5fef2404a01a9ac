package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/verify"
)

// admin serves the operators' endpoints on their own listener: replay,
// verify and pprof.
type admin struct {
	kadm   *kadm.Client // offsets for replays: one client for the node's life
	node   *Node
	limits domain.Limits
	logger *slog.Logger
	token  string   // every request's bearer token
	hosts  []string // Host names answered besides loopback and localhost

	mu  sync.Mutex
	job *ReplayJob
}

// switchLag is how close (in events) a rebuilt epoch must be to the log's
// end for its epoch to start: the rest follows within moments, and the
// readers of the new epoch wait for it as they would for any projection.
const switchLag = 50

// ReplayJob is the state of the current (or last) replay, as
// GET /admin/replay answers it.
type ReplayJob struct {
	Projection string    `json:"projection"`
	From       string    `json:"from"`
	Output     string    `json:"output,omitempty"` // the output a rebuild writes the next epoch of
	Epoch      int32     `json:"epoch,omitempty"`  // the epoch a rebuild writes
	State      string    `json:"state"`            // running, done, failed
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished,omitzero"`
	Applied    int64     `json:"applied"`           // events applied since the start
	Lag        int64     `json:"lag"`               // events still to apply
	Rate       float64   `json:"events_per_second"` // since the start
	Left       float64   `json:"seconds_left"`      // estimated from how fast the lag fell lately; 0: unknown
	Error      string    `json:"error,omitempty"`
}

// progressFunc measures a replay: events applied since it started, and
// how far it is behind the log.
type progressFunc func(ctx context.Context) (applied, lag int64, err error)

func (a *admin) handler() http.Handler {
	return a.guard(a.routes())
}

// guard lets a request through only when its Host names this address (a
// loopback address, localhost, or one of a.hosts: a page in a browser on
// the operator's machine cannot reach it by DNS rebinding), it carries
// the admin token (pprof included), and, for a POST, its body is JSON of
// at most 64 KiB (a form post from a page cannot start a replay).
func (a *admin) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.hostAllowed(r.Host) {
			writeErr(w, http.StatusForbidden, domain.Errorf(domain.CodeForbidden, "host %q is not this admin address's (see --admin-hosts)", r.Host))
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) != 1 {
			writeErr(w, http.StatusUnauthorized, domain.Errorf(domain.CodeUnauthorized,
				"send Authorization: Bearer <the token in the node's admin token file>"))
			return
		}
		if r.Method == http.MethodPost {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				writeErr(w, http.StatusUnsupportedMediaType, domain.Errorf(domain.CodeUnsupportedMedia, "send Content-Type: application/json"))
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		next.ServeHTTP(w, r)
	})
}

func (a *admin) hostAllowed(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || strings.EqualFold(host, "localhost") {
		return true
	}
	return slices.ContainsFunc(a.hosts, func(h string) bool { return strings.EqualFold(h, host) })
}

func (a *admin) routes() http.Handler {
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

// writeErr answers an error with its code and message; an operator sees
// the whole text of an internal error.
func writeErr(w http.ResponseWriter, status int, err error) {
	msg := err.Error()
	if e := (*domain.Error)(nil); errors.As(err, &e) {
		msg = domain.MessageOf(err)
	}
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": string(domain.CodeOf(err)), "message": msg}})
}

// startReplay takes {"projection": "history", "from": "start" | "offset:N" |
// "time:RFC3339"} and rebuilds the projection while everything else runs.
// A watcher (the task "replay") follows it to the end; for a rebuild into
// a new epoch, it then starts the epoch.
func (a *admin) startReplay(w http.ResponseWriter, r *http.Request) {
	var req struct{ Projection, From string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest, "malformed JSON body"))
		return
	}
	role := RoleNamed(req.Projection)
	if role == nil || !Replayable(role) {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest,
			"projection %q: replayable are %s", req.Projection, strings.Join(RoleNames(Replayable), ", ")))
		return
	}
	if !a.node.runs(role.Name) {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest,
			"this node does not run %s (its roles: %s)", role.Name, strings.Join(RoleNamesOf(a.node.roles), ", ")))
		return
	}
	output := ""
	if role.Replay == Rebuild {
		output = role.Output
	}
	if req.From == "" {
		req.From = "start"
	}
	if output != "" && req.From != "start" {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest,
			"%s is rebuilt from the start of the log into a new epoch; from %q is not possible", req.Projection, req.From))
		return
	}
	a.mu.Lock()
	if a.job != nil && a.job.State == "running" {
		a.mu.Unlock()
		writeErr(w, http.StatusConflict, domain.Errorf(domain.CodeConflict, "a replay of %s is running", a.job.Projection))
		return
	}
	job := &ReplayJob{Projection: req.Projection, From: req.From, Output: output, State: "running", Started: time.Now().UTC()}
	a.job = job
	a.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	var (
		progress progressFunc
		finish   func(context.Context) error
		err      error
	)
	if output == "" {
		progress, err = a.rewind(ctx, role, req.From)
	} else {
		var next eventlog.Config
		if next, err = a.node.rebuild(ctx, output); err == nil {
			epoch := eventlog.EpochOf(next, output)
			a.mu.Lock()
			job.Epoch = epoch
			a.mu.Unlock()
			progress = a.epochProgress(next, output)
			finish = func(ctx context.Context) error { return eventlog.StartEpoch(ctx, next, output, epoch) }
		}
	}
	if err != nil {
		a.mu.Lock()
		job.State, job.Error, job.Finished = "failed", err.Error(), time.Now().UTC()
		a.mu.Unlock()
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.node.tasks.start(taskReplay, func(ctx context.Context) error { a.follow(ctx, job, progress, finish); return nil })
	a.logger.Info("replay started", "projection", req.Projection, "from", req.From, "epoch", job.Epoch)
	a.mu.Lock()
	defer a.mu.Unlock()
	writeJSON(w, http.StatusAccepted, *job)
}

// follow measures the job every half second until it has caught up, then
// finishes it.
func (a *admin) follow(ctx context.Context, job *ReplayJob, progress progressFunc, finish func(context.Context) error) {
	bound := int64(0)
	if finish != nil {
		bound = switchLag
	}
	type sample struct {
		at  time.Time
		lag int64
	}
	var recent []sample // the last 10 s
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		applied, lag, err := progress(ctx)
		if err != nil {
			a.logger.Warn("replay progress", "err", err)
			continue
		}
		now := time.Now().UTC()
		recent = append(recent, sample{now, lag})
		for len(recent) > 2 && now.Sub(recent[0].at) > 10*time.Second {
			recent = recent[1:]
		}
		left := 0.0
		if fell, secs := recent[0].lag-lag, now.Sub(recent[0].at).Seconds(); fell > 0 && secs > 0 {
			left = float64(lag) / (float64(fell) / secs)
		}
		a.mu.Lock()
		job.Applied, job.Lag, job.Left = applied, lag, left
		if secs := now.Sub(job.Started).Seconds(); secs > 0 {
			job.Rate = float64(applied) / secs
		}
		a.mu.Unlock()
		if lag > bound {
			continue
		}
		state, why := "done", ""
		if finish != nil {
			if err := finish(ctx); err != nil {
				state, why = "failed", err.Error()
			}
		}
		a.mu.Lock()
		job.State, job.Error, job.Finished = state, why, time.Now().UTC()
		a.mu.Unlock()
		a.logger.Info("replay "+state, "projection", job.Projection, "applied", applied, "seconds", job.Finished.Sub(job.Started).Seconds(), "err", why)
		return
	}
}

// rewind stops a store-positioned projection, resets or rewinds it, and
// starts it again.
func (a *admin) rewind(ctx context.Context, r *Role, from string) (progressFunc, error) {
	lc := a.node.current()
	role, topic := r.task(lc), r.Input(lc.Topics())
	positions, err := a.fromPositions(ctx, topic, from)
	if err != nil {
		return nil, err
	}
	run, err := a.node.tasks.stop(role)
	if err != nil {
		return nil, err
	}
	defer a.node.tasks.start(role, run)
	if positions == nil {
		if err := a.node.st.ResetProjection(ctx, role); err != nil {
			return nil, err
		}
	} else if err := a.node.st.Apply(ctx, store.Batch{Projection: role, Positions: positions}); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (int64, int64, error) {
		pos, err := a.node.st.Positions(ctx, role)
		if err != nil {
			return 0, 0, err
		}
		return a.measure(ctx, topic, pos, positions)
	}, nil
}

// epochProgress measures a rebuild into a new epoch: the writer's consumer
// group on its input, and for the inbox the new epoch's store projection.
func (a *admin) epochProgress(next eventlog.Config, output string) progressFunc {
	writers := a.node.writers(output)
	return func(ctx context.Context) (applied, lag int64, err error) {
		for _, r := range writers {
			input := r.Input(next.Topics())
			pos := map[int32]int64{}
			if r.Replay == Rebuild { // exactly once: its offsets are its group's
				committed, err := a.kadm.FetchOffsets(ctx, next.Group(r.task(next)))
				if err != nil {
					return 0, 0, err
				}
				committed.Each(func(o kadm.OffsetResponse) {
					if o.Topic == input && o.Err == nil {
						pos[o.Partition] = o.At
					}
				})
			} else if pos, err = a.node.st.Positions(ctx, r.task(next)); err != nil {
				return 0, 0, err
			}
			ap, l, err := a.measure(ctx, input, pos, nil)
			if err != nil {
				return 0, 0, err
			}
			if r.Replay == Rebuild {
				applied += ap
			}
			lag += l
		}
		return applied, lag, nil
	}
}

// fromPositions returns the positions a replay starts from; nil means the
// beginning, with the projection's state deleted.
func (a *admin) fromPositions(ctx context.Context, topic, from string) (map[int32]int64, error) {
	if from == "start" {
		return nil, nil
	}
	var listed kadm.ListedOffsets
	switch kind, v, _ := strings.Cut(from, ":"); kind {
	case "offset":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, domain.Errorf(domain.CodeBadRequest, "from %q: want offset:N with N ≥ 0", from)
		}
		if listed, err = a.kadm.ListStartOffsets(ctx, topic); err != nil {
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
		if listed, err = a.kadm.ListOffsetsAfterMilli(ctx, t.UnixMilli(), topic); err != nil {
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
	defer a.mu.Unlock()
	if a.job == nil {
		writeErr(w, http.StatusNotFound, domain.Errorf(domain.CodeNotFound, "no replay has run"))
		return
	}
	writeJSON(w, http.StatusOK, *a.job)
}

// measure returns the events applied since base (nil: the topic's start)
// and the lag behind the topic's end, both summed over partitions, for a
// consumer at pos (a partition missing from pos is at base).
func (a *admin) measure(ctx context.Context, topic string, pos, base map[int32]int64) (applied, lag int64, err error) {
	ends, err := a.kadm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	starts, err := a.kadm.ListStartOffsets(ctx, topic)
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

// verify verifies the projection ?projection= with its role's Verify.
func (a *admin) verify(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("projection")
	role := RoleNamed(name)
	if role == nil || role.Verify == nil {
		writeErr(w, http.StatusBadRequest, domain.Errorf(domain.CodeBadRequest,
			"cannot verify %q: verifiable are %s", name, strings.Join(RoleNames(Verifiable), ", ")))
		return
	}
	rep, err := role.Verify(r.Context(), a.node.current(), a.node.st, verify.Rules{Limits: a.limits, PresenceWindow: a.node.cfg.PresenceWindow})
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
