// Package chat carries out the commands of clients: sign-up, login, opening
// channels, changing members and sending messages. It reads the state the
// projections keep, decides with the domain's rules, and appends the
// resulting events to the log. REST and WebSocket handlers call it; it knows
// neither HTTP nor frames.
package chat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sony/sonyflake"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/store"
)

// Store is what the service needs of the store.
type Store interface {
	CreateUser(ctx context.Context, u store.User) error
	DeleteUser(ctx context.Context, u store.User) error
	UserByName(ctx context.Context, name string) (store.User, error)
	User(ctx context.Context, id domain.UserID) (store.User, error)
	RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error)
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// Appender appends events to the log.
type Appender interface {
	// Append writes an event and returns its position once the log holds
	// it. It gives up after Config.DeliveryTimeout.
	Append(ctx context.Context, topic, key string, ev domain.Event, m domain.Meta) (eventlog.Position, error)
}

// IDs issues unique, time-sortable ids (sonyflake).
type IDs interface {
	NextID() (uint64, error)
}

// Config configures the service.
type Config struct {
	// Limits of the chat. Default domain.DefaultLimits().
	Limits domain.Limits
	// Topics are the log's topic names. Required.
	Topics eventlog.Topics
	// ApplyWait bounds how long a REST command waits for the history
	// projection to apply its event. Default 10s.
	ApplyWait time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default discard.
	Logger *slog.Logger
	// Passwords hashes and checks passwords on a bounded pool. Default:
	// auth.NewPasswords with its defaults.
	Passwords *auth.Passwords
	// Replies is where the sends processor's answers arrive
	// (gateway/replies). Required.
	Replies Replies
	// Texts, if set, is told every message's text just before it is
	// appended, so the members' inbox entries (which point at the message)
	// find it there rather than waiting for history to store it.
	Texts TextCache
	// ChannelLease is how long a send's membership check may use a
	// channel's state after the read that fetched it began, and how long
	// RemoveMember waits, after the store has applied a removal, before it
	// answers (lease.go). Every process of a deployment must use the same
	// value (or the API a longer one than the gateways). Default
	// DefaultChannelLease; negative: none, every send reads its channel
	// and a removal does not wait.
	ChannelLease time.Duration
}

// DefaultChannelLease is Config.ChannelLease's default.
const DefaultChannelLease = time.Second

// Replies hands the sends processor's answers to the sends that wait for
// them (gateway/replies).
type Replies interface {
	// To is the address a request names for its answer.
	To() string
	// Expect registers a wait for the answer to a request id; done
	// unregisters it.
	Expect(requestID string) (answer <-chan domain.SendDecided, done func())
}

// TextCache remembers recent messages' texts (projections/bodies).
type TextCache interface {
	Put(id domain.MessageID, text string)
}

// Service carries out commands. It is safe for concurrent use.
type Service struct {
	cfg    Config
	st     Store
	log    Appender
	ids    IDs
	tokens *auth.Tokens
	logger *slog.Logger
	// channels reads channels from st, a read shared by the calls of a
	// moment (freshReads): every decision but a send's.
	channels *freshReads[domain.ChannelID, domain.Channel]
	// leases holds the channels' states sends are checked against
	// (leasedChannels), read through channels.
	leases *leasedChannels
}

func (c Config) withDefaults() (Config, error) {
	if c.Limits == (domain.Limits{}) {
		c.Limits = domain.DefaultLimits()
	}
	if c.ApplyWait == 0 {
		c.ApplyWait = 10 * time.Second
	}
	if c.ChannelLease == 0 {
		c.ChannelLease = DefaultChannelLease
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Passwords == nil {
		p, err := auth.NewPasswords(auth.PasswordsConfig{})
		if err != nil {
			return c, fmt.Errorf("chat: passwords: %w", err)
		}
		c.Passwords = p
	}
	return c, nil
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if c.Topics.Channels == "" {
		return errors.New("chat: topics are required")
	}
	if c.Replies == nil {
		return errors.New("chat: a replies reader is required")
	}
	if c.ApplyWait < 0 {
		return fmt.Errorf("chat: apply wait %s < 0", c.ApplyWait)
	}
	return nil
}

// New returns the service.
func New(cfg Config, st Store, app Appender, ids IDs, tokens *auth.Tokens) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	channels := newFreshReads(st.Channel)
	return &Service{cfg: cfg, st: st, log: app, ids: ids, tokens: tokens, logger: cfg.Logger,
		channels: channels, leases: newLeasedChannels(cfg.ChannelLease, channels)}, nil
}

// Limits returns the chat's limits.
func (s *Service) Limits() domain.Limits { return s.cfg.Limits }

// NewSonyflake returns a sonyflake generator with a fixed machine id (each
// process of a deployment needs its own). skew shifts the generator's
// clock, to test what clock skew between gateways does (nothing, if
// positions are right): a positive skew issues ids as if the clock ran
// ahead.
func NewSonyflake(machineID uint16, skew time.Duration) (*sonyflake.Sonyflake, error) {
	sf, err := sonyflake.New(sonyflake.Settings{
		StartTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(-skew),
		MachineID: func() (uint16, error) { return machineID, nil },
	})
	if err != nil {
		return nil, fmt.Errorf("chat: sonyflake: %w", err)
	}
	return sf, nil
}

func (s *Service) newID() (uint64, error) {
	id, err := s.ids.NextID()
	if err != nil {
		return 0, &domain.Error{Code: domain.CodeUnavailable, Msg: "no id available", Err: err}
	}
	return id, nil
}

func (s *Service) meta() (domain.Meta, error) {
	id, err := s.newID()
	if err != nil {
		return domain.Meta{}, err
	}
	return domain.Meta{EventID: fmt.Sprint(id), Time: s.cfg.Now().UTC()}, nil
}

// SignUp creates an account under the name's canonical form
// (domain.CanonicalUserName) and records user.registered. When the log
// does not take user.registered, the account is removed again and the
// answer is unavailable: a retry of the same sign-up makes it afresh.
func (s *Service) SignUp(ctx context.Context, name, password string) (store.User, error) {
	name, err := domain.CanonicalUserName(name)
	if err != nil {
		return store.User{}, err
	}
	if n := len([]rune(password)); n < 8 || n > 1024 {
		return store.User{}, domain.Errorf(domain.CodeBadRequest, "password must be 8 to 1024 characters")
	}
	hash, err := s.cfg.Passwords.Hash(ctx, password)
	if err != nil {
		return store.User{}, err
	}
	m, err := s.meta()
	if err != nil {
		return store.User{}, err
	}
	u := store.User{ID: domain.UserID(m.EventID), Name: name, PasswordHash: hash, CreatedAt: m.Time}
	if err := s.st.CreateUser(ctx, u); err != nil {
		return store.User{}, err
	}
	if _, err := s.log.Append(ctx, s.cfg.Topics.Sessions, string(u.ID), domain.UserRegistered{UserID: u.ID, Name: name}, m); err != nil {
		// No account without its user.registered: undo it, so that the
		// name is free and the client's retry makes the account afresh.
		if derr := s.st.DeleteUser(context.WithoutCancel(ctx), u); derr != nil {
			s.logger.Error("user.registered not appended and the account not undone", "user", u.ID, "err", derr)
		}
		return store.User{}, &domain.Error{Code: domain.CodeUnavailable, Msg: "the log did not take the sign-up: try again", Err: err}
	}
	return u, nil
}

// Login checks a password and returns a token for the device (a new device
// id when device is empty).
func (s *Service) Login(ctx context.Context, name, password string, device domain.DeviceID) (auth.Claims, string, error) {
	bad := domain.Errorf(domain.CodeUnauthorized, "wrong name or password")
	if device != "" && !domain.ValidDeviceID(device) {
		return auth.Claims{}, "", domain.Errorf(domain.CodeBadRequest, "device_id must be 1 to %d letters, digits, '.', '_' or '-'", domain.MaxDeviceIDLen)
	}
	if len(password) > 4096 { // sign-up takes at most 1024 characters
		return auth.Claims{}, "", bad
	}
	// An unknown name, or one that cannot be a name, costs a check of a
	// dummy hash: as long as a known name's.
	canonical, err := domain.CanonicalUserName(name)
	if err != nil {
		return auth.Claims{}, "", cmp.Or(s.cfg.Passwords.CheckUnknown(ctx, password), bad)
	}
	u, err := store.FindUser(ctx, s.st, name, canonical)
	if errors.Is(err, domain.ErrNotFound) {
		return auth.Claims{}, "", cmp.Or(s.cfg.Passwords.CheckUnknown(ctx, password), bad)
	}
	if err != nil {
		return auth.Claims{}, "", err
	}
	if ok, err := s.cfg.Passwords.Check(ctx, u.PasswordHash, password); err != nil || !ok {
		return auth.Claims{}, "", cmp.Or(err, bad)
	}
	m, err := s.meta()
	if err != nil {
		return auth.Claims{}, "", err
	}
	if device == "" {
		device = domain.DeviceID("dev" + m.EventID)
	}
	if _, err := s.log.Append(ctx, s.cfg.Topics.Sessions, string(u.ID), domain.DeviceLoggedIn{UserID: u.ID, DeviceID: device}, m); err != nil {
		return auth.Claims{}, "", err
	}
	tok, exp := s.tokens.Issue(u.ID, device, m.Time)
	return auth.Claims{UserID: u.ID, DeviceID: device, Expires: exp.Unix()}, tok, nil
}

// Logout revokes the token's session in the store (durable: every node
// and every later start refuse the token), then records
// device.logged_out. A token without a session cannot be revoked: it is
// refused here rather than logged out in name only.
func (s *Service) Logout(ctx context.Context, c auth.Claims) error {
	if c.Session == "" {
		return domain.Errorf(domain.CodeUnauthorized, "this token predates sessions: log in again")
	}
	if err := s.st.RevokeSession(ctx, c.UserID, c.Session, time.Unix(c.Expires, 0)); err != nil {
		return err
	}
	m, err := s.meta()
	if err != nil {
		return err
	}
	_, err = s.log.Append(ctx, s.cfg.Topics.Sessions, string(c.UserID), domain.DeviceLoggedOut{UserID: c.UserID, DeviceID: c.DeviceID}, m)
	return err
}

// Channel returns a channel the caller is a member of.
func (s *Service) Channel(ctx context.Context, caller domain.UserID, id domain.ChannelID) (domain.Channel, error) {
	c, err := s.channels.get(ctx, id)
	if err != nil {
		return domain.Channel{}, err
	}
	if !c.IsMember(caller) {
		return domain.Channel{}, domain.Errorf(domain.CodeNotMember, "not a member of channel %s", id)
	}
	return c, nil
}

// CreateChannel opens a group, or the direct channel with the one other
// member. created is false when the direct channel existed.
func (s *Service) CreateChannel(ctx context.Context, caller domain.UserID, kind domain.ChannelKind, name string, members []domain.UserID) (c domain.Channel, created bool, err error) {
	for _, u := range members {
		if _, err := s.st.User(ctx, u); err != nil {
			if errors.Is(err, domain.ErrNotFound) {
				return domain.Channel{}, false, domain.Errorf(domain.CodeNotFound, "user %q not found", u)
			}
			return domain.Channel{}, false, err
		}
	}
	var id domain.ChannelID
	switch kind {
	case domain.KindDirect:
		if len(members) != 1 || members[0] == caller {
			return domain.Channel{}, false, domain.Errorf(domain.CodeBadRequest, "a direct channel takes exactly one other member")
		}
		id = domain.DirectChannelID(caller, members[0])
	case domain.KindGroup:
		n, err := s.newID()
		if err != nil {
			return domain.Channel{}, false, err
		}
		id = domain.GroupChannelID(n)
	default:
		return domain.Channel{}, false, domain.Errorf(domain.CodeBadRequest, "kind must be direct or group")
	}
	cur, err := s.current(ctx, id)
	if err != nil {
		return domain.Channel{}, false, err
	}
	evs, err := domain.Decide(cur, domain.CreateChannel{ChannelID: id, Kind: kind, Name: name, CreatorID: caller, Members: members}, s.cfg.Limits)
	if err != nil {
		return domain.Channel{}, false, err
	}
	if len(evs) == 0 {
		return cur, false, nil
	}
	c, at, err := s.appendAndWait(ctx, id, evs)
	if err != nil {
		return domain.Channel{}, false, err
	}
	// A group's id is new, so its channel.created is admitted. A direct
	// channel opened by both its members at once is created by the first
	// channel.created in the log; the other is dropped, and its caller
	// found the channel rather than created it.
	return c, kind == domain.KindGroup || c.Version == at.Offset+1, nil
}

// AddMember adds a user to a group.
func (s *Service) AddMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error) {
	if _, err := s.st.User(ctx, u); err != nil {
		return domain.Channel{}, err
	}
	return s.decideAndAppend(ctx, id, domain.AddMember{ChannelID: id, ActorID: caller, UserID: u})
}

// RemoveMember removes u from the group. It answers a lease
// (Config.ChannelLease) after the store has applied the removal: by then
// no gateway still checks a send against a state read before it
// (leasedChannels), so u can send nothing more once the caller is told u
// is gone.
func (s *Service) RemoveMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error) {
	c, err := s.decideAndAppend(ctx, id, domain.RemoveMember{ChannelID: id, ActorID: caller, UserID: u})
	if err != nil || s.cfg.ChannelLease <= 0 {
		return c, err
	}
	t := time.NewTimer(s.cfg.ChannelLease)
	defer t.Stop()
	select {
	case <-t.C:
		return c, nil
	case <-ctx.Done():
		return domain.Channel{}, &domain.Error{Code: domain.CodeUnavailable, Err: ctx.Err(),
			Msg: fmt.Sprintf("the removal is stored, but gateways may let the member send for up to %s after it", s.cfg.ChannelLease)}
	}
}

func (s *Service) decideAndAppend(ctx context.Context, id domain.ChannelID, cmd domain.Command) (domain.Channel, error) {
	cur, err := s.channels.get(ctx, id)
	if err != nil {
		return domain.Channel{}, err
	}
	evs, err := domain.Decide(cur, cmd, s.cfg.Limits)
	if err != nil {
		return domain.Channel{}, err
	}
	if len(evs) == 0 {
		return cur, nil
	}
	c, _, err := s.appendAndWait(ctx, id, evs)
	// This process's sends see the change at once; other processes' when
	// their leases end.
	s.leases.forget(id)
	if err != nil {
		return domain.Channel{}, err
	}
	return s.outcome(c, cmd)
}

// outcome answers a command whose event history has applied, from the
// channel's state read after it. The command was decided on a state that
// may have been stale: a concurrent add may have filled the group first,
// and then the projections dropped this event (domain.Admit). Success is
// answered only when the state shows the command's effect; else the
// command is decided again on the new state for the error that says why
// (group_full), or, when nothing refuses it now (the group changed again
// since), conflict: the caller reads the group and tries again.
func (s *Service) outcome(c domain.Channel, cmd domain.Command) (domain.Channel, error) {
	if domain.Holds(c, cmd) {
		return c, nil
	}
	if _, err := domain.Decide(c, cmd, s.cfg.Limits); err != nil {
		return domain.Channel{}, err
	}
	return domain.Channel{}, domain.Errorf(domain.CodeConflict, "channel %s changed while this change was made, and it did not take effect: read the channel and try again", c.ID)
}

// current returns the channel's state, or an empty state with its id.
func (s *Service) current(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	c, err := s.channels.get(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Channel{ID: id}, nil
	}
	return c, err
}

// appendAndWait appends channel events and waits until the history
// projection has applied them, then returns the channel's state and the
// last event's position: the caller reads its own write, or, if the
// projections dropped it, what came first.
func (s *Service) appendAndWait(ctx context.Context, id domain.ChannelID, evs []domain.Event) (domain.Channel, eventlog.Position, error) {
	var last eventlog.Position
	for _, ev := range evs {
		m, err := s.meta()
		if err != nil {
			return domain.Channel{}, last, err
		}
		if last, err = s.log.Append(ctx, s.cfg.Topics.Channels, string(id), ev, m); err != nil {
			return domain.Channel{}, last, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyWait)
	defer cancel()
	if err := projector.WaitApplied(wctx, s.st, history.Name, last.Partition, last.Offset); err != nil {
		return domain.Channel{}, last, err
	}
	c, err := s.channels.get(ctx, id)
	return c, last, err
}

// Send posts a message and returns its id once the log holds it. A resend
// with the same client message id returns the first id and creates nothing;
// one with another text or channel is a conflict.
//
// The gateway checks the send against the channel, then appends a
// send.requested, keyed by sender, for the sends processor
// (projections/sends), which decides each (sender, client message id) once
// and answers on the replies topic in the same transaction as the message
// it appends. The answer is the acknowledgement. A send whose context ends
// first fails with code unavailable: the client resends, and the resend is
// answered with the first request's id.
//
// appended, if not nil, is called once the request is in the log: a later
// send of the same sender may start then, since the processor decides a
// sender's requests in the log's order, so its message cannot overtake
// this one. It is not called when no request was appended.
func (s *Service) Send(ctx context.Context, sender domain.UserID, device domain.DeviceID, id domain.ChannelID, clientMsgID, text string, appended func()) (domain.MessageID, error) {
	c, leased, err := s.leases.get(ctx, id, false)
	if err != nil {
		return 0, err
	}
	candidate, err := s.newID()
	if err != nil {
		return 0, err
	}
	cmd := domain.SendMessage{ChannelID: id, SenderID: sender, DeviceID: device, ClientMsgID: clientMsgID, Text: text, MessageID: domain.MessageID(candidate)}
	evs, err := domain.Decide(c, cmd, s.cfg.Limits)
	if code := domain.CodeOf(err); leased && (code == domain.CodeNotMember || code == domain.CodeNotFound) {
		// A leased state only allows: a refusal is decided again on
		// a fresh read (a member added since it was read).
		if c, _, err = s.leases.get(ctx, id, true); err != nil {
			return 0, err
		}
		evs, err = domain.Decide(c, cmd, s.cfg.Limits)
	}
	if err != nil {
		return 0, err // bad input never reaches the log
	}
	sent := evs[0].(domain.MessageSent)
	m, err := s.meta()
	if err != nil {
		return 0, err
	}
	if s.cfg.Texts != nil {
		s.cfg.Texts.Put(sent.MessageID, text)
	}
	answer, done := s.cfg.Replies.Expect(m.EventID)
	defer done()
	req := domain.SendRequested{MessageSent: sent, ReplyTo: s.cfg.Replies.To()}
	if _, err := s.log.Append(ctx, s.cfg.Topics.Sends, string(sender), req, m); err != nil {
		return 0, err
	}
	if appended != nil {
		appended()
	}
	select {
	case a := <-answer:
		if a.Code != "" {
			return 0, domain.Errorf(a.Code, "%s", a.Message)
		}
		if a.MessageID != sent.MessageID && s.cfg.Texts != nil {
			s.cfg.Texts.Put(a.MessageID, text) // a resend: one id has one text
		}
		return a.MessageID, nil
	case <-ctx.Done():
		return 0, &domain.Error{Code: domain.CodeUnavailable, Msg: "the send was not answered in time; resend it with the same client_msg_id", Err: ctx.Err()}
	}
}

// Acked records that a device has received its inbox up to position.
func (s *Service) Acked(ctx context.Context, c auth.Claims, epoch int32, position int64) error {
	if position < 0 {
		return domain.Errorf(domain.CodeBadRequest, "position must be 0 or more")
	}
	m, err := s.meta()
	if err != nil {
		return err
	}
	_, err = s.log.Append(ctx, s.cfg.Topics.Sessions, string(c.UserID),
		domain.DeviceAcked{UserID: c.UserID, DeviceID: c.DeviceID, Epoch: epoch, Position: position}, m)
	return err
}

// Read records that the caller has read a channel up to a message.
func (s *Service) Read(ctx context.Context, c auth.Claims, ch domain.ChannelID, id domain.MessageID) error {
	if _, err := s.Channel(ctx, c.UserID, ch); err != nil {
		return err
	}
	msg, err := s.st.MessageByID(ctx, ch, id)
	if err != nil {
		return err
	}
	m, err := s.meta()
	if err != nil {
		return err
	}
	_, err = s.log.Append(ctx, s.cfg.Topics.Sessions, string(c.UserID), domain.ChannelRead{
		UserID: c.UserID, DeviceID: c.DeviceID, ChannelID: ch, MessageID: id, Seq: msg.Offset,
	}, m)
	return err
}
