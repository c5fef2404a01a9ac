package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

func (r *runner) signUp(ctx context.Context) error {
	var done atomic.Int64
	r.setPhase(counter("signing up users", &done, len(r.users)))
	return parallel(ctx, len(r.users), r.cfg.Concurrency, func(ctx context.Context, i int) error {
		u := r.users[i]
		first := true
		err := r.retry(ctx, "signup_", func() error {
			err := r.api.signUp(ctx, u.name, password)
			var ae *apiError
			if !first && errors.As(err, &ae) && ae.Code == "conflict" {
				return nil // an earlier attempt went through
			}
			first = false
			return err
		})
		if err != nil {
			return fmt.Errorf("signing up %s: %w", u.name, err)
		}
		done.Add(1)
		return nil
	})
}

func (r *runner) login(ctx context.Context) error {
	type job struct {
		u *user
		d *device
	}
	var jobs []job
	for _, u := range r.users {
		for _, d := range u.devices {
			jobs = append(jobs, job{u, d})
		}
	}
	var done atomic.Int64
	r.setPhase(counter("logging devices in", &done, len(jobs)))
	return parallel(ctx, len(jobs), r.cfg.Concurrency, func(ctx context.Context, i int) error {
		j := jobs[i]
		var uid string
		err := r.retry(ctx, "login_", func() error {
			var err error
			j.d.token, uid, err = r.api.login(ctx, j.u.name, password, j.d.id)
			return err
		})
		if err != nil {
			return fmt.Errorf("logging %s/%s in: %w", j.u.name, j.d.id, err)
		}
		if j.d == j.u.devices[0] {
			j.u.id = uid // each user's first device is the only writer
		}
		done.Add(1)
		return nil
	})
}

func (r *runner) createChannels(ctx context.Context) error {
	var done atomic.Int64
	r.setPhase(counter("creating channels", &done, len(r.channels)))
	return parallel(ctx, len(r.channels), r.cfg.Concurrency, func(ctx context.Context, i int) error {
		ch := r.channels[i]
		creator := ch.members[0]
		var others []string
		for _, u := range ch.members[1:] {
			others = append(others, u.id)
		}
		kind, name := "group", fmt.Sprintf("%s-g%d", r.cfg.Prefix, i)
		if r.cfg.GroupSize == 0 {
			kind, name = "direct", ""
		}
		err := r.retry(ctx, "channel_", func() error {
			var err error
			ch.id, err = r.api.createChannel(ctx, creator.devices[0].token, kind, name, others)
			return err
		})
		if err != nil {
			return fmt.Errorf("creating channel %d: %w", i, err)
		}
		done.Add(1)
		return nil
	})
}

// retry runs fn up to 4 times while it fails with a retryable error,
// counting each failure under prefix and its code.
func (r *runner) retry(ctx context.Context, prefix string, fn func() error) error {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.errs.add(errCode(prefix, err))
		if attempt == 4 || !retryable(err) {
			return err
		}
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff *= 2
	}
}

// parallel runs fn(ctx, i) for every i in [0, n) on at most k goroutines
// and waits for them. The first error stops the rest and is returned.
func parallel(ctx context.Context, n, k int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(k, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}
