package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evchat/evchat/domain"
)

// statusOf is the one mapping from error codes to HTTP statuses; the table
// is repeated in schemas/README.md. StatusOf exports it for the WebSocket
// upgrade.
var statusOf = map[domain.Code]int{
	domain.CodeBadRequest:   http.StatusBadRequest,
	domain.CodeUnknownType:  http.StatusBadRequest,
	domain.CodeTooLong:      http.StatusRequestEntityTooLarge,
	domain.CodeUnauthorized: http.StatusUnauthorized,
	domain.CodeForbidden:    http.StatusForbidden,
	domain.CodeNotMember:    http.StatusForbidden,
	domain.CodeNotFound:     http.StatusNotFound,
	domain.CodeConflict:     http.StatusConflict,
	domain.CodeGroupFull:    http.StatusUnprocessableEntity,
	domain.CodeUnavailable:  http.StatusServiceUnavailable,
	// The WebSocket upgrade of a user or device over its cap.
	domain.CodeTooManyConnections: http.StatusTooManyRequests,
	domain.CodeInternal:           http.StatusInternalServerError,

	domain.CodeBusy:             http.StatusServiceUnavailable,
	domain.CodeRateLimited:      http.StatusTooManyRequests,
	domain.CodeUnsupportedMedia: http.StatusUnsupportedMediaType,
}

// StatusOf returns the HTTP status of an error code (500 for a code the
// table does not have): the admin address answers by the same table.
func StatusOf(c domain.Code) int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// retryAfter sets the Retry-After header, in whole seconds rounded up, of
// an error that says when to come back.
func retryAfter(h http.Header, err error) {
	if d := domain.RetryAfterOf(err); d > 0 {
		h.Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

type errorBody struct {
	Error struct {
		Code    domain.Code `json:"code"`
		Message string      `json:"message"`
	} `json:"error"`
}

// httpError writes every error as {"error":{"code","message"}} and counts
// it by code.
func httpError(err error, c echo.Context, counter *prometheus.CounterVec) {
	if c.Response().Committed {
		return
	}
	var body errorBody
	status := http.StatusInternalServerError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		status = he.Code
		body.Error.Code = codeOfStatus(he.Code)
		body.Error.Message = http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok {
			body.Error.Message = m
		}
	default:
		body.Error.Code = domain.CodeOf(err)
		body.Error.Message = domain.MessageOf(err)
		status = StatusOf(body.Error.Code)
		retryAfter(c.Response().Header(), err)
		if body.Error.Code == domain.CodeInternal {
			c.Logger().Error(err)
		}
	}
	if counter != nil {
		counter.WithLabelValues(string(body.Error.Code)).Inc()
	}
	_ = c.JSON(status, body)
}

func codeOfStatus(status int) domain.Code {
	switch status {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return domain.CodeNotFound
	case http.StatusUnauthorized:
		return domain.CodeUnauthorized
	case http.StatusRequestEntityTooLarge:
		return domain.CodeTooLong
	case http.StatusUnsupportedMediaType:
		return domain.CodeUnsupportedMedia
	case http.StatusTooManyRequests:
		return domain.CodeRateLimited
	}
	if status >= 500 {
		return domain.CodeInternal
	}
	return domain.CodeBadRequest
}
