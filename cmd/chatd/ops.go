package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	chatnode "github.com/evchat/evchat/cmd/internal/node" // harness_test.go has a type node
	"github.com/evchat/evchat/projections/verify"
)

var errReplayFailed = errors.New("replay failed")

// ---- the operator's subcommands: chatd replay, chatd verify ----

// replayCmd asks a running node to rebuild a projection and shows its
// progress until it is done.
func replayCmd(ctx context.Context, adm adminClient, projection, from string, out *printer) error {
	body := fmt.Sprintf(`{"projection":%q,"from":%q}`, projection, from)
	resp, err := adm.do("POST", "/admin/replay", strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("the node's admin address %s does not answer: %w", adm.addr, err)
	}
	var job chatnode.ReplayJob
	err = decodeAdmin(resp, &job)
	if err != nil {
		return err
	}
	for {
		out.progress(fmt.Sprintf("replay %s from %s: %d applied, lag %d, %.0f events/s%s",
			job.Projection, job.From, job.Applied, job.Lag, job.Rate, eta(job)))
		switch job.State {
		case "done":
			started := ""
			if job.Epoch > 0 {
				started = fmt.Sprintf(" %s epoch %d started;", job.Output, job.Epoch)
			}
			out.done(fmt.Sprintf("replay %s done:%s %d events in %.1f s (%.0f events/s)",
				job.Projection, started, job.Applied, job.Finished.Sub(job.Started).Seconds(), job.Rate))
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
		resp, err := adm.do("GET", "/admin/replay", nil)
		if err != nil {
			return err
		}
		if err := decodeAdmin(resp, &job); err != nil {
			return err
		}
	}
}

func eta(j chatnode.ReplayJob) string {
	if j.Left <= 0 || j.Lag <= 0 {
		return ""
	}
	return fmt.Sprintf(", about %s left", (time.Duration(j.Left) * time.Second).Round(time.Second))
}

// verifyCmd asks a running node to verify a projection and prints the
// report; it fails when the store and the log disagree, and when it
// compared nothing while the log holds events.
func verifyCmd(adm adminClient, projection string, out *printer) error {
	resp, err := adm.do("GET", "/admin/verify?projection="+url.QueryEscape(projection), nil)
	if err != nil {
		return fmt.Errorf("the node's admin address %s does not answer: %w", adm.addr, err)
	}
	var rep verify.Report
	if err := decodeAdmin(resp, &rep); err != nil {
		return err
	}
	out.done(rep.Summary())
	if err := rep.Err(); err != nil {
		repair := rep.Projection
		if r := chatnode.RoleNamed(repair); r != nil && r.Replay == chatnode.WithWriter {
			repair = r.RebuiltBy // the inbox in the store is the fan-out's output
		}
		if errors.Is(err, verify.ErrComparedNothing) {
			return fmt.Errorf("%w (wait for the projection to catch up, or rebuild it: chatd replay --projection %s)", err, repair)
		}
		return fmt.Errorf("%w (repair: chatd replay --projection %s)", err, repair)
	}
	out.done("they agree")
	return nil
}

// adminClient calls a node's admin address with its token.
type adminClient struct{ addr, token string }

func (a adminClient) do(method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+a.addr+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

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
