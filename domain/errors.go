package domain

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code is a stable, machine-readable error code. Clients switch on it; the
// gateway maps each code to one HTTP status and one WebSocket error frame.
type Code string

// The error codes. They are part of the public API (see schemas/openapi.yaml
// and schemas/asyncapi.yaml): add new ones, never rename.
const (
	CodeBadRequest   Code = "bad_request"  // malformed input
	CodeUnknownType  Code = "unknown_type" // a frame type the server does not know
	CodeTooLong      Code = "too_long"     // a message or field over its limit
	CodeUnauthorized Code = "unauthorized" // missing, bad or expired token, or wrong password
	CodeForbidden    Code = "forbidden"    // allowed to nobody in the caller's role
	CodeNotMember    Code = "not_member"   // the caller is not a member of the channel
	CodeNotFound     Code = "not_found"    // unknown id
	CodeConflict     Code = "conflict"     // already exists (a taken user name)
	CodeGroupFull    Code = "group_full"   // the group has reached its size limit
	CodeUnavailable  Code = "unavailable"  // the log or the store did not answer in time
	CodeInternal     Code = "internal"     // a bug; the details are in the server log

	// CodeTooManyConnections: the user or device has as many WebSocket
	// connections open as it may.
	CodeTooManyConnections Code = "too_many_connections"
	// Limits (issue 13): each says the client may come back, after the
	// Error's RetryAfter when it has one.
	CodeBusy             Code = "busy"                   // a bounded resource (password checks, connections) is full: retry later
	CodeRateLimited      Code = "rate_limited"           // over a rate (sends, bytes, channel creations, member adds, failed logins): retry after the time given
	CodeUnsupportedMedia Code = "unsupported_media_type" // a body that is not JSON where only JSON is taken
)

// Error is an error with a stable code and a message for people.
type Error struct {
	Code Code
	Msg  string
	Err  error // the underlying cause, if any
	// RetryAfter, when above 0, is how long the client should wait
	// before it tries again (HTTP: the Retry-After header).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Msg, e.Err)
	}
	return string(e.Code) + ": " + e.Msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is match any *Error with the same code, so the sentinels
// below work with errors that carry a more specific message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Err == nil && t.Code == e.Code
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is: they match every *Error of their code.
var (
	ErrBadRequest   = &Error{Code: CodeBadRequest}
	ErrUnknownType  = &Error{Code: CodeUnknownType}
	ErrTooLong      = &Error{Code: CodeTooLong}
	ErrUnauthorized = &Error{Code: CodeUnauthorized}
	ErrForbidden    = &Error{Code: CodeForbidden}
	ErrNotMember    = &Error{Code: CodeNotMember}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrConflict     = &Error{Code: CodeConflict}
	ErrGroupFull    = &Error{Code: CodeGroupFull}
	ErrUnavailable  = &Error{Code: CodeUnavailable}
	ErrBusy         = &Error{Code: CodeBusy}
	ErrRateLimited  = &Error{Code: CodeRateLimited}
)

// RetryAfterOf returns the RetryAfter of err's first *Error, or 0.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// CodeOf returns the code of err: the code of the first *Error in its chain,
// CodeUnavailable for a context that ended (a command that ran out of its
// time, wherever it was: the client tries again), or CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case timedOut(err):
		return CodeUnavailable
	}
	return CodeInternal
}

// timedOut reports whether err is a context's end and no *Error.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// MessageOf returns the message for people of err's first *Error, or a
// generic one that leaks nothing for other errors.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Msg == "" {
			return string(e.Code)
		}
		return e.Msg
	}
	if timedOut(err) {
		return "the request did not finish in time; try again (a send with the same client_msg_id)"
	}
	return "internal error"
}
