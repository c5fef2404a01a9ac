// Package chat carries out the commands of clients: sign-up, login, opening
// channels, changing members and sending messages. It reads the state the
// projections keep, decides with the domain's rules, and appends the
// resulting events to the log. REST and WebSocket handlers call it; it knows
// neither HTTP nor frames.
package chat

import (
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
	UserByName(ctx context.Context, name string) (store.User, error)
	User(ctx context.Context, id domain.UserID) (store.User, error)
	ReserveSend(ctx context.Context, r store.SendReservation) (store.SendReservation, bool, error)
	MarkSendAppended(ctx context.Context, sender domain.UserID, clientMsgID string) error
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error)
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// Appender appends events to the log.
type Appender interface {
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
	// ResendLease is how long a resend waits for the first attempt of the
	// same client message id to reach the log before appending it again.
	// Default 10s.
	ResendLease time.Duration
	// ApplyWait bounds how long a REST command waits for the history
	// projection to apply its event. Default 10s.
	ApplyWait time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default discard.
	Logger *slog.Logger
}

// Service carries out commands. It is safe for concurrent use.
type Service struct {
	cfg    Config
	st     Store
	log    Appender
	ids    IDs
	tokens *auth.Tokens
	logger *slog.Logger
}

// New returns the service.
func New(cfg Config, st Store, app Appender, ids IDs, tokens *auth.Tokens) (*Service, error) {
	if cfg.Limits == (domain.Limits{}) {
		cfg.Limits = domain.DefaultLimits()
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if cfg.Topics.Channels == "" {
		return nil, errors.New("chat: topics are required")
	}
	if cfg.ResendLease == 0 {
		cfg.ResendLease = 10 * time.Second
	}
	if cfg.ApplyWait == 0 {
		cfg.ApplyWait = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, st: st, log: app, ids: ids, tokens: tokens, logger: cfg.Logger}, nil
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

// SignUp creates an account and records user.registered.
func (s *Service) SignUp(ctx context.Context, name, password string) (store.User, error) {
	if !domain.ValidUserName(name) {
		return store.User{}, domain.Errorf(domain.CodeBadRequest, "name must be 1 to %d letters, digits, '.', '_' or '-'", domain.MaxNameLen)
	}
	if n := len([]rune(password)); n < 8 || n > 1024 {
		return store.User{}, domain.Errorf(domain.CodeBadRequest, "password must be 8 to 1024 characters")
	}
	hash, err := auth.HashPassword(password)
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
		s.logger.Error("user created but user.registered not appended", "user", u.ID, "err", err)
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
	u, err := s.st.UserByName(ctx, name)
	if errors.Is(err, domain.ErrNotFound) {
		return auth.Claims{}, "", bad
	}
	if err != nil {
		return auth.Claims{}, "", err
	}
	if !auth.CheckPassword(u.PasswordHash, password) {
		return auth.Claims{}, "", bad
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

// Logout records device.logged_out.
func (s *Service) Logout(ctx context.Context, c auth.Claims) error {
	m, err := s.meta()
	if err != nil {
		return err
	}
	_, err = s.log.Append(ctx, s.cfg.Topics.Sessions, string(c.UserID), domain.DeviceLoggedOut{UserID: c.UserID, DeviceID: c.DeviceID}, m)
	return err
}

// Channel returns a channel the caller is a member of.
func (s *Service) Channel(ctx context.Context, caller domain.UserID, id domain.ChannelID) (domain.Channel, error) {
	c, err := s.st.Channel(ctx, id)
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
	c, err = s.appendAndWait(ctx, id, evs)
	return c, err == nil, err
}

// AddMember adds a user to a group.
func (s *Service) AddMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error) {
	if _, err := s.st.User(ctx, u); err != nil {
		return domain.Channel{}, err
	}
	return s.decideAndAppend(ctx, id, domain.AddMember{ChannelID: id, ActorID: caller, UserID: u})
}

// RemoveMember removes a user from a group.
func (s *Service) RemoveMember(ctx context.Context, caller domain.UserID, id domain.ChannelID, u domain.UserID) (domain.Channel, error) {
	return s.decideAndAppend(ctx, id, domain.RemoveMember{ChannelID: id, ActorID: caller, UserID: u})
}

func (s *Service) decideAndAppend(ctx context.Context, id domain.ChannelID, cmd domain.Command) (domain.Channel, error) {
	cur, err := s.st.Channel(ctx, id)
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
	return s.appendAndWait(ctx, id, evs)
}

// current returns the channel's state, or an empty state with its id.
func (s *Service) current(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	c, err := s.st.Channel(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Channel{ID: id}, nil
	}
	return c, err
}

// appendAndWait appends channel events and waits until the history
// projection has applied them, then returns the channel's new state: the
// caller reads its own write.
func (s *Service) appendAndWait(ctx context.Context, id domain.ChannelID, evs []domain.Event) (domain.Channel, error) {
	var last eventlog.Position
	for _, ev := range evs {
		m, err := s.meta()
		if err != nil {
			return domain.Channel{}, err
		}
		if last, err = s.log.Append(ctx, s.cfg.Topics.Channels, string(id), ev, m); err != nil {
			return domain.Channel{}, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyWait)
	defer cancel()
	if err := projector.WaitApplied(wctx, s.st, history.Name, last.Partition, last.Offset); err != nil {
		return domain.Channel{}, err
	}
	return s.st.Channel(ctx, id)
}

// Send posts a message and returns its id once the log holds it. A resend
// with the same client message id returns the first id and creates nothing.
func (s *Service) Send(ctx context.Context, sender domain.UserID, device domain.DeviceID, id domain.ChannelID, clientMsgID, text string) (domain.MessageID, error) {
	c, err := s.st.Channel(ctx, id)
	if err != nil {
		return 0, err
	}
	cmd := domain.SendMessage{ChannelID: id, SenderID: sender, DeviceID: device, ClientMsgID: clientMsgID, Text: text, MessageID: 1}
	if _, err := domain.Decide(c, cmd, s.cfg.Limits); err != nil {
		return 0, err // bad input never reaches the reservation table or the log
	}
	n, err := s.newID()
	if err != nil {
		return 0, err
	}
	now := s.cfg.Now().UTC()
	r, created, err := s.st.ReserveSend(ctx, store.SendReservation{
		SenderID: sender, ClientMsgID: clientMsgID, ChannelID: id, MessageID: domain.MessageID(n), ReservedAt: now,
	})
	if err != nil {
		return 0, err
	}
	// A reservation holding our own new id is ours: the store created it
	// but its answer was lost (a timed-out lightweight transaction).
	if !created && r.MessageID != domain.MessageID(n) {
		if r.ChannelID != id {
			return 0, domain.Errorf(domain.CodeConflict, "client_msg_id %q was used for another channel", clientMsgID)
		}
		done, err := s.awaitFirst(ctx, r)
		if err != nil || done {
			return r.MessageID, err
		}
	}
	cmd.MessageID = r.MessageID
	evs, err := domain.Decide(c, cmd, s.cfg.Limits)
	if err != nil {
		return 0, err
	}
	m := domain.Meta{EventID: r.MessageID.String(), Time: r.ReservedAt}
	if _, err := s.log.Append(ctx, s.cfg.Topics.Channels, string(id), evs[0], m); err != nil {
		return 0, err
	}
	return r.MessageID, nil
}

// Sent records that a send's message is in the log, so that a resend is
// answered at once. The gateway calls it after the acknowledgement: it is
// off the send's critical path, and losing it costs a resend only the wait
// for the first attempt's lease.
func (s *Service) Sent(ctx context.Context, sender domain.UserID, clientMsgID string) {
	if err := s.st.MarkSendAppended(ctx, sender, clientMsgID); err != nil {
		s.logger.Warn("message appended but not marked", "sender", sender, "client_msg_id", clientMsgID, "err", err)
	}
}

// awaitFirst handles a resend of a reserved message: it reports done when
// the first attempt reached the log. While the first attempt may still be
// under way (within the lease) it waits; after the lease it looks in
// history, and otherwise the caller appends again under the same message id
// (history drops a second copy by message id).
func (s *Service) awaitFirst(ctx context.Context, r store.SendReservation) (bool, error) {
	for {
		if r.Appended {
			return true, nil
		}
		if s.cfg.Now().Sub(r.ReservedAt) >= s.cfg.ResendLease {
			_, err := s.st.MessageByID(ctx, r.ChannelID, r.MessageID)
			if err == nil {
				_ = s.st.MarkSendAppended(ctx, r.SenderID, r.ClientMsgID)
				return true, nil
			}
			if !errors.Is(err, domain.ErrNotFound) {
				return false, err
			}
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, &domain.Error{Code: domain.CodeUnavailable, Msg: "the first attempt is still under way; resend later", Err: ctx.Err()}
		case <-time.After(20 * time.Millisecond):
		}
		got, _, err := s.st.ReserveSend(ctx, r)
		if err != nil {
			return false, err
		}
		r = got
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
