package auth

import (
	"context"
	"runtime"
	"time"

	"github.com/evchat/evchat/domain"
)

// PasswordsConfig bounds the CPU and memory that password hashing may take.
// An argon2id check holds about 19 MiB for its duration (~25 ms on one
// core): 128 concurrent logins once took 2.7 GB.
type PasswordsConfig struct {
	// Workers is how many hashes run at once (--password-workers).
	// Default GOMAXPROCS.
	Workers int
	// Queue is how many more may wait for a worker (--password-queue);
	// past it a request is refused with domain.CodeBusy at once. Default
	// 64. Waiting costs a goroutine, not a hash's memory.
	Queue int
	// RetryAfter is what a refused request is told to wait. Default 1 s.
	RetryAfter time.Duration
	// MaxWait bounds how long a request waits in the queue for a worker
	// (--password-wait); then it is refused with domain.CodeBusy too, so
	// its client hears 503 rather than a connection closed by the HTTP
	// write timeout. Default 10 s.
	MaxWait time.Duration
}

func (c PasswordsConfig) withDefaults() PasswordsConfig {
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.Queue <= 0 {
		c.Queue = 64
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 10 * time.Second
	}
	return c
}

// Passwords hashes and checks passwords on a bounded pool: at most Workers
// hashes at once and Queue more waiting. A request that finds the queue
// full gets domain.ErrBusy with a RetryAfter at once, so no burst of
// logins can take more than Workers × 19 MiB.
//
// Check of an unknown name (CheckUnknown) hashes against a dummy hash made
// with the same parameters, so a login for a name that does not exist
// takes as long as one for a name that does: names cannot be found by
// timing.
type Passwords struct {
	cfg   PasswordsConfig
	slots chan struct{} // a token per request admitted: running or waiting
	run   chan struct{} // a token per hash running
	dummy string
}

// NewPasswords returns a pool of cfg (zero fields take their defaults).
func NewPasswords(cfg PasswordsConfig) (*Passwords, error) {
	cfg = cfg.withDefaults()
	dummy, err := HashPassword("evchat dummy password: never matches a login")
	if err != nil {
		return nil, err
	}
	return &Passwords{
		cfg:   cfg,
		slots: make(chan struct{}, cfg.Workers+cfg.Queue),
		run:   make(chan struct{}, cfg.Workers),
		dummy: dummy,
	}, nil
}

// Hash returns the argon2id hash of pw, or domain.ErrBusy when the pool is
// full, or ctx's error if it ends while waiting.
func (p *Passwords) Hash(ctx context.Context, pw string) (string, error) {
	var h string
	err := p.do(ctx, func() (err error) { h, err = HashPassword(pw); return err })
	return h, err
}

// Check reports whether pw matches hash; the error is domain.ErrBusy when
// the pool is full, or ctx's error.
func (p *Passwords) Check(ctx context.Context, hash, pw string) (bool, error) {
	ok := false
	err := p.do(ctx, func() error { ok = CheckPassword(hash, pw); return nil })
	return ok && err == nil, err
}

// CheckUnknown spends what Check spends and reports false: the answer for
// a name that does not exist.
func (p *Passwords) CheckUnknown(ctx context.Context, pw string) error {
	_, err := p.Check(ctx, p.dummy, pw)
	return err
}

func (p *Passwords) do(ctx context.Context, f func() error) error {
	busy := &domain.Error{Code: domain.CodeBusy, Msg: "too many password checks at once; retry shortly", RetryAfter: p.cfg.RetryAfter}
	select {
	case p.slots <- struct{}{}:
	default:
		return busy
	}
	defer func() { <-p.slots }()
	wait := time.NewTimer(p.cfg.MaxWait)
	defer wait.Stop()
	select {
	case p.run <- struct{}{}:
	case <-wait.C:
		return busy
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.run }()
	return f()
}
