package api

import (
	"errors"
	"math"
	"net/http"
	"strconv"

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
	domain.CodeRateLimited:  http.StatusTooManyRequests,
	// The WebSocket upgrade of a user or device over its cap.
	domain.CodeTooManyConnections: http.StatusTooManyRequests,
	domain.CodeInternal:           http.StatusInternalServerError,
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
		status = statusOf[body.Error.Code]
		if d := domain.RetryAfterOf(err); d > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
		}
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
	}
	if status >= 500 {
		return domain.CodeInternal
	}
	return domain.CodeBadRequest
}

// StatusOf returns the HTTP status of an error's code.
func StatusOf(err error) int {
	if s, ok := statusOf[domain.CodeOf(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}
