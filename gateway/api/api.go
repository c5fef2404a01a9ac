// Package api is the REST API on echo: sign-up, login, channels, members,
// history and health, and the route that upgrades to the WebSocket gateway.
// Its routes are exactly the paths of schemas/openapi.yaml (a test holds
// them to it), and errors.go is the one place where errors become HTTP
// statuses.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/throttle"
	"github.com/evchat/evchat/projections/store"
)

// Service is the command side the API calls.
type Service interface {
	SignUp(ctx context.Context, name, password string) (store.User, error)
	Login(ctx context.Context, name, password string, device domain.DeviceID) (auth.Claims, string, error)
	Logout(ctx context.Context, c auth.Claims) error
	Channel(ctx context.Context, caller domain.UserID, id domain.ChannelID) (domain.Channel, error)
	CreateChannel(ctx context.Context, caller domain.UserID, kind domain.ChannelKind, name string, members []domain.UserID) (domain.Channel, bool, error)
	AddMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error)
	RemoveMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error)
}

// Reader is the query side the API reads.
type Reader interface {
	UserByName(ctx context.Context, name string) (store.User, error)
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	ChannelsOf(ctx context.Context, u domain.UserID) ([]domain.ChannelID, error)
	MessagesBefore(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]store.Message, error)
	MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error)
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error)
	ChannelReads(ctx context.Context, ch domain.ChannelID) ([]store.ReadMark, error)
}

// PresenceReader answers who is online.
type PresenceReader interface {
	Of(u domain.UserID) (domain.PresenceChange, bool)
}

// Verifier checks tokens.
type Verifier interface {
	Verify(token string, now time.Time) (auth.Claims, error)
}

// WebSocket serves an authenticated upgrade request (an upgrade it refuses
// before making it returns the error, for the status table to answer), and
// closes a device's connections on this node when it logs out.
type WebSocket interface {
	Serve(w http.ResponseWriter, r *http.Request, c auth.Claims) error
	CloseDevice(u domain.UserID, d domain.DeviceID, why string)
}

// Sessions tells a revoked (logged-out) session.
type Sessions interface {
	SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error)
}

// Config wires the API.
type Config struct {
	Service Service
	Reader  Reader
	Tokens  Verifier
	// Sessions, if set, is asked about every token's session: a logged-out
	// one is refused (401) on every route, the WebSocket's included.
	Sessions Sessions
	WS       WebSocket
	Presence PresenceReader
	// Live reports whether the process is up (GET /healthz); nil means
	// always.
	Live func() bool
	// Ready reports whether the process is caught up with the log within
	// its bound (GET /readyz), with a reason when not; nil means always.
	Ready func() (bool, string)
	// Errors, if set, counts error responses by code.
	Errors *prometheus.CounterVec
	// Channels and MemberAdds are the per-user buckets of channel
	// creations and of members added (each member named when creating a
	// channel counts as one add); over either, 429 rate_limited with
	// Retry-After, and nothing is written. Nil: no limit.
	Channels, MemberAdds *throttle.Buckets
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxBody bounds every request body, in bytes: a larger one is
	// refused with too_long (413) before more than MaxBody bytes are
	// read. Default 64 KiB.
	MaxBody int64
	// LoginsByName and LoginsByAddr throttle failed logins per user name
	// (canonical) and per source address (the connection's, never a
	// header): past their limit a login is refused with rate_limited
	// (429) and Retry-After, before any password is checked. nil: off.
	LoginsByName, LoginsByAddr *auth.Throttle
}

// DefaultMaxBody is Config.MaxBody's default: a group of 500 members
// created in one request is about 12 KiB.
const DefaultMaxBody = 64 << 10

// New returns the echo server with every route registered.
func New(cfg Config) *echo.Echo {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	h := &handlers{cfg: cfg}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) { httpError(err, c, cfg.Errors) }
	e.Pre(h.limitBody)
	e.GET("/healthz", h.health)
	e.GET("/readyz", h.ready)
	e.POST("/v1/users", h.signUp)
	e.POST("/v1/login", h.login)
	// The token check sits on each route, not on a group: a group would
	// answer unknown paths with 401 instead of 404.
	auth := h.authenticate(false)
	e.GET("/v1/users", h.userByName, auth)
	e.POST("/v1/logout", h.logout, auth)
	e.GET("/v1/channels", h.channels, auth)
	e.POST("/v1/channels", h.createChannel, auth)
	e.GET("/v1/channels/:channel_id", h.channel, auth)
	e.POST("/v1/channels/:channel_id/members", h.addMember, auth)
	e.DELETE("/v1/channels/:channel_id/members/:user_id", h.removeMember, auth)
	e.GET("/v1/channels/:channel_id/messages", h.messages, auth)
	e.GET("/v1/channels/:channel_id/reads", h.reads, auth)
	e.GET("/v1/presence", h.presence, auth)
	e.GET("/v1/ws", h.ws, h.authenticate(true))
	return e
}

type handlers struct{ cfg Config }

const claimsKey = "claims"

// authenticate checks the bearer token of the Authorization header, or, on
// the WebSocket route alone (query), the ?token= parameter: browsers cannot
// set headers on a WebSocket, while elsewhere a token in a URL ends up in
// logs and histories.
func (h *handlers) authenticate(query bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			tok := ""
			if query {
				tok = c.QueryParam("token")
			}
			if a := c.Request().Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
				tok = strings.TrimPrefix(a, "Bearer ")
			}
			if tok == "" {
				return domain.Errorf(domain.CodeUnauthorized, "missing token: send Authorization: Bearer <token>")
			}
			cl, err := h.cfg.Tokens.Verify(tok, h.cfg.Now())
			if err != nil {
				return err
			}
			if h.cfg.Sessions != nil && cl.Session != "" {
				revoked, err := h.cfg.Sessions.SessionRevoked(c.Request().Context(), cl.UserID, cl.Session)
				if err != nil {
					return err
				}
				if revoked {
					return domain.Errorf(domain.CodeUnauthorized, "token revoked: this session logged out")
				}
			}
			c.Set(claimsKey, cl)
			return next(c)
		}
	}
}

// limitBody bounds the body of every request: one that says it is larger
// is refused before it is read, one that turns out larger stops being read
// at the bound (bind reports too_long).
func (h *handlers) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > h.cfg.MaxBody {
			c.Response().Header().Set("Connection", "close")
			return domain.Errorf(domain.CodeTooLong, "body over %d bytes", h.cfg.MaxBody)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, h.cfg.MaxBody)
		return next(c)
	}
}

func claims(c echo.Context) auth.Claims { return c.Get(claimsKey).(auth.Claims) }

func bind(c echo.Context, v any) error {
	if err := c.Bind(v); err != nil {
		if mb := (*http.MaxBytesError)(nil); errors.As(err, &mb) {
			return domain.Errorf(domain.CodeTooLong, "body over %d bytes", mb.Limit)
		}
		return domain.Errorf(domain.CodeBadRequest, "malformed JSON body")
	}
	return nil
}

// health answers 200 while the process is up and serving.
func (h *handlers) health(c echo.Context) error {
	if h.cfg.Live != nil && !h.cfg.Live() {
		return domain.Errorf(domain.CodeUnavailable, "starting")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// ready answers 200 when the process is caught up with the log within its
// bound: a load balancer sends clients elsewhere meanwhile.
func (h *handlers) ready(c echo.Context) error {
	if h.cfg.Live != nil && !h.cfg.Live() {
		return domain.Errorf(domain.CodeUnavailable, "starting")
	}
	if h.cfg.Ready != nil {
		if ok, why := h.cfg.Ready(); !ok {
			return domain.Errorf(domain.CodeUnavailable, "not ready: %s", why)
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

type userJSON struct {
	UserID domain.UserID `json:"user_id"`
	Name   string        `json:"name"`
}

func (h *handlers) signUp(c echo.Context) error {
	var req struct{ Name, Password string }
	if err := bind(c, &req); err != nil {
		return err
	}
	u, err := h.cfg.Service.SignUp(c.Request().Context(), req.Name, req.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, userJSON{u.ID, u.Name})
}

func (h *handlers) userByName(c echo.Context) error {
	name := c.QueryParam("name")
	if name == "" {
		return domain.Errorf(domain.CodeBadRequest, "query parameter name is required")
	}
	canonical, err := domain.CanonicalUserName(name)
	if err != nil {
		return err
	}
	u, err := store.FindUser(c.Request().Context(), h.cfg.Reader, name, canonical)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, userJSON{u.ID, u.Name})
}

func (h *handlers) login(c echo.Context) error {
	var req struct {
		Name     string          `json:"name"`
		Password string          `json:"password"`
		DeviceID domain.DeviceID `json:"device_id"`
	}
	if err := bind(c, &req); err != nil {
		return err
	}
	// Throttled by the name people would read (any form of "ann" counts
	// for ann) and by the connection's address.
	name, _ := domain.CanonicalUserName(req.Name)
	name = cmp.Or(name, req.Name)
	addr, _, _ := net.SplitHostPort(c.Request().RemoteAddr)
	now := h.cfg.Now()
	if err := cmp.Or(h.cfg.LoginsByAddr.Allow(addr, now), h.cfg.LoginsByName.Allow(name, now)); err != nil {
		return err
	}
	cl, tok, err := h.cfg.Service.Login(c.Request().Context(), req.Name, req.Password, req.DeviceID)
	if errors.Is(err, domain.ErrUnauthorized) {
		h.cfg.LoginsByAddr.Fail(addr, now)
		h.cfg.LoginsByName.Fail(name, now)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"token": tok, "user_id": cl.UserID, "device_id": cl.DeviceID,
		"expires_at": time.Unix(cl.Expires, 0).UTC(),
	})
}

func (h *handlers) logout(c echo.Context) error {
	cl := claims(c)
	if err := h.cfg.Service.Logout(c.Request().Context(), cl); err != nil {
		return err
	}
	if h.cfg.WS != nil {
		h.cfg.WS.CloseDevice(cl.UserID, cl.DeviceID, "logged out")
	}
	return c.NoContent(http.StatusNoContent)
}

func (h *handlers) channels(c echo.Context) error {
	ctx := c.Request().Context()
	ids, err := h.cfg.Reader.ChannelsOf(ctx, claims(c).UserID)
	if err != nil {
		return err
	}
	out := make([]domain.Channel, 0, len(ids))
	for _, id := range ids {
		ch, err := h.cfg.Reader.Channel(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		out = append(out, ch)
	}
	return c.JSON(http.StatusOK, map[string]any{"channels": out})
}

func (h *handlers) createChannel(c echo.Context) error {
	var req struct {
		Kind    domain.ChannelKind `json:"kind"`
		Name    string             `json:"name"`
		Members []domain.UserID    `json:"members"`
	}
	if err := bind(c, &req); err != nil {
		return err
	}
	if err := h.admit(c, 1, len(req.Members)); err != nil {
		return err
	}
	ch, created, err := h.cfg.Service.CreateChannel(c.Request().Context(), claims(c).UserID, req.Kind, req.Name, req.Members)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, ch)
}

func (h *handlers) channel(c echo.Context) error {
	ch, err := h.cfg.Service.Channel(c.Request().Context(), claims(c).UserID, domain.ChannelID(c.Param("channel_id")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ch)
}

func (h *handlers) addMember(c echo.Context) error {
	var req struct {
		UserID domain.UserID `json:"user_id"`
	}
	if err := bind(c, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return domain.Errorf(domain.CodeBadRequest, "user_id is required")
	}
	if err := h.admit(c, 0, 1); err != nil {
		return err
	}
	ch, err := h.cfg.Service.AddMember(c.Request().Context(), claims(c).UserID, domain.ChannelID(c.Param("channel_id")), req.UserID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ch)
}

func (h *handlers) removeMember(c echo.Context) error {
	ch, err := h.cfg.Service.RemoveMember(c.Request().Context(), claims(c).UserID,
		domain.ChannelID(c.Param("channel_id")), domain.UserID(c.Param("user_id")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ch)
}

type messageJSON struct {
	ChannelID domain.ChannelID `json:"channel_id"`
	MessageID domain.MessageID `json:"message_id"`
	Seq       int64            `json:"seq"`
	SenderID  domain.UserID    `json:"sender_id"`
	Text      string           `json:"text"`
	SentAt    time.Time        `json:"sent_at"`
}

// messages pages a channel's history, newest first, in the channel's log
// order: before, after or around a message id, or the newest page.
func (h *handlers) messages(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := h.cfg.Service.Channel(ctx, claims(c).UserID, domain.ChannelID(c.Param("channel_id")))
	if err != nil {
		return err
	}
	limit := 50
	if s := c.QueryParam("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 200 {
			return domain.Errorf(domain.CodeBadRequest, "limit must be 1 to 200")
		}
	}
	var anchors []string
	for _, k := range []string{"before", "after", "around"} {
		if c.QueryParam(k) != "" {
			anchors = append(anchors, k)
		}
	}
	if len(anchors) > 1 {
		return domain.Errorf(domain.CodeBadRequest, "give at most one of before, after and around")
	}
	var (
		msgs    []store.Message
		hasMore bool
	)
	if len(anchors) == 0 {
		msgs, hasMore, err = h.before(ctx, ch.ID, 1<<62, limit)
	} else {
		var id domain.MessageID
		if id, err = domain.ParseMessageID(c.QueryParam(anchors[0])); err != nil {
			return err
		}
		var at store.Message
		if at, err = h.cfg.Reader.MessageByID(ctx, ch.ID, id); err != nil {
			return err
		}
		switch anchors[0] {
		case "before":
			msgs, hasMore, err = h.before(ctx, ch.ID, at.Offset, limit)
		case "after":
			msgs, hasMore, err = h.after(ctx, ch.ID, at.Offset, limit)
		case "around":
			var older, newer []store.Message
			var moreOld, moreNew bool
			if newer, moreNew, err = h.after(ctx, ch.ID, at.Offset, (limit-1)/2); err == nil {
				older, moreOld, err = h.before(ctx, ch.ID, at.Offset, limit-1-len(newer))
			}
			msgs = append(append(newer, at), older...)
			hasMore = moreOld || moreNew
		}
	}
	if err != nil {
		return err
	}
	out := make([]messageJSON, len(msgs))
	for i, m := range msgs {
		out[i] = messageJSON{m.ChannelID, m.MessageID, m.Offset, m.SenderID, m.Text, m.SentAt}
	}
	return c.JSON(http.StatusOK, map[string]any{"messages": out, "has_more": hasMore})
}

func (h *handlers) before(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]store.Message, bool, error) {
	if limit <= 0 {
		return nil, false, nil
	}
	ms, err := h.cfg.Reader.MessagesBefore(ctx, ch, before, limit+1)
	if err != nil || len(ms) <= limit {
		return ms, false, err
	}
	return ms[:limit], true, nil
}

// after returns the page above the anchor, newest first like every page.
func (h *handlers) after(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, bool, error) {
	if limit <= 0 {
		return nil, false, nil
	}
	ms, err := h.cfg.Reader.MessagesAfter(ctx, ch, after, limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(ms) > limit
	if more {
		ms = ms[:limit]
	}
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms, more, nil
}

// ws hands the request to the WebSocket server, after lifting the HTTP
// server's read and write deadlines from the connection: they bound a
// request, and an upgraded connection outlives it (the WebSocket server
// has its own bounds: pings, write timeouts). gorilla's Upgrade clears
// them too; this does not depend on it.
func (h *handlers) ws(c echo.Context) error {
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	return h.cfg.WS.Serve(c.Response(), c.Request(), claims(c))
}

// admit takes channel creations and member adds from the caller's
// buckets, or refuses with rate_limited and when to retry.
func (h *handlers) admit(c echo.Context, channels, adds int) error {
	retry, ok := throttle.Allow(h.cfg.Now(), string(claims(c).UserID),
		throttle.Take{B: h.cfg.Channels, N: channels}, throttle.Take{B: h.cfg.MemberAdds, N: adds})
	switch {
	case ok:
		return nil
	case retry == 0:
		// More than the bucket holds, which Validate keeps at least a
		// group's size: more members than a group may have.
		return domain.Errorf(domain.CodeGroupFull, "more members at once than a group may have")
	}
	return &domain.Error{Code: domain.CodeRateLimited, RetryAfter: retry,
		Msg: fmt.Sprintf("too many channel creations or member adds from this user; retry after %s", retry.Round(time.Millisecond))}
}

// reads lists how far each member has read the channel.
func (h *handlers) reads(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := h.cfg.Service.Channel(ctx, claims(c).UserID, domain.ChannelID(c.Param("channel_id")))
	if err != nil {
		return err
	}
	rs, err := h.cfg.Reader.ChannelReads(ctx, ch.ID)
	if err != nil {
		return err
	}
	type readJSON struct {
		UserID    domain.UserID    `json:"user_id"`
		MessageID domain.MessageID `json:"message_id"`
		Seq       int64            `json:"seq"`
		UpdatedAt time.Time        `json:"updated_at"`
	}
	out := []readJSON{}
	for _, r := range rs {
		if ch.IsMember(r.UserID) {
			out = append(out, readJSON{r.UserID, r.MessageID, r.Seq, r.UpdatedAt})
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"reads": out})
}

// presence answers for up to 500 users given as user_id query parameters.
func (h *handlers) presence(c echo.Context) error {
	ids := c.QueryParams()["user_id"]
	if len(ids) == 0 || len(ids) > 500 {
		return domain.Errorf(domain.CodeBadRequest, "give 1 to 500 user_id query parameters")
	}
	type presenceJSON struct {
		UserID       domain.UserID `json:"user_id"`
		Online       bool          `json:"online"`
		LastActiveAt *time.Time    `json:"last_active_at"`
	}
	out := make([]presenceJSON, 0, len(ids))
	for _, id := range ids {
		if _, err := domain.ParseMessageID(id); err != nil { // user ids are sonyflake ids too
			return domain.Errorf(domain.CodeBadRequest, "user_id %q is not a user id", id)
		}
		p := presenceJSON{UserID: domain.UserID(id)}
		if ch, ok := h.cfg.Presence.Of(p.UserID); ok {
			p.Online = ch.Online
			at := ch.LastActiveAt.UTC()
			p.LastActiveAt = &at
		}
		out = append(out, p)
	}
	return c.JSON(http.StatusOK, map[string]any{"presence": out})
}
