// Package push is the projection that turns inbox entries into push
// notifications for recipients with no online device.
//
// Each entry waits Delay after it was sent; then it is dropped if the
// recipient is online or a device of theirs has acknowledged the entry
// meanwhile, or if it is older than MaxAge (a replay of old entries sends
// nothing), and otherwise handed to the Sender, once: a notification is
// keyed by (user, message) in the store (ReservePush) before it is sent, so
// neither a restart nor a full replay of the projection sends it again.
// The price is at most once: a crash between the reservation and the send
// loses that one notification.
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/store"
)

// Name is the projection's name: its consumer group and position key.
const Name = "push"

// Notification is what a Sender delivers to a user's devices.
type Notification struct {
	UserID    domain.UserID
	ChannelID domain.ChannelID
	MessageID domain.MessageID
	SenderID  domain.UserID
	Text      string
	SentAt    time.Time
}

// Sender hands a notification to a push provider.
type Sender interface {
	Send(ctx context.Context, n Notification) error
}

// Presence answers whether a user is online.
type Presence interface {
	Of(u domain.UserID) (domain.PresenceChange, bool)
}

// Texts resolves the text of inbox entries that point at their message
// (package bodies).
type Texts interface {
	Resolve(ctx context.Context, ms []domain.InboxMessage) error
}

// Store is what the projection needs of the store.
type Store interface {
	DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error)
	ReservePush(ctx context.Context, u domain.UserID, id domain.MessageID, at time.Time) (bool, error)
}

// Config configures the projection.
type Config struct {
	// Epoch of the inbox. Default 1.
	Epoch int32
	// Delay before deciding on an entry. Default 3s.
	Delay time.Duration
	// MaxAge drops entries sent longer ago than this when they come up
	// for decision (after a long outage, or in a replay): a notification
	// about an old message is noise, and a replay must not send what the
	// first run did not. Default 2m.
	MaxAge time.Duration
	// Decoded decodes inbox records once for the process's readers of
	// the inbox; nil decodes each record here.
	Decoded *inbox.Decoded
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Outcomes, if set, counts each entry for another user by what became
	// of it (label "outcome", see the Outcome constants): why a person got
	// no notification is a question operators are asked.
	Outcomes *prometheus.CounterVec
	// Logger; default discard.
	Logger *slog.Logger
}

// Outcomes of an entry for another user than its sender.
const (
	OutcomeTooOld       = "too_old"      // older than MaxAge when it came up
	OutcomeOnline       = "online"       // the recipient was online after Delay
	OutcomeAcknowledged = "acknowledged" // a device of theirs had it already
	OutcomeReserved     = "reserved"     // sent before (a restart or a replay)
	OutcomeSent         = "sent"         // handed to the Sender
	OutcomeFailed       = "failed"       // the Sender failed three times: lost
)

// NewOutcomes returns the counter of Config.Outcomes, registered with reg.
func NewOutcomes(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "evchat_push_entries_total",
		Help: "Inbox entries for another user than the sender that the push projection decided on, by outcome: too_old, online, acknowledged, reserved (sent before), sent, failed.",
	}, []string{"outcome"})
	reg.MustRegister(c)
	return c
}

// Projection implements projector.Handler.
type Projection struct {
	cfg      Config
	st       Store
	texts    Texts
	presence Presence
	send     Sender
}

// New returns the projection. It reads the texts of the notifications it
// sends with texts.
func New(cfg Config, st Store, texts Texts, presence Presence, send Sender) *Projection {
	if cfg.Epoch == 0 {
		cfg.Epoch = 1
	}
	if cfg.Delay == 0 {
		cfg.Delay = 3 * time.Second
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Projection{cfg: cfg, st: st, texts: texts, presence: presence, send: send}
}

// Reset does nothing: the projection caches nothing.
func (p *Projection) Reset() {}

// Handle decides on the entries of one partition of the inbox topic; it
// writes no state but its position.
func (p *Projection) Handle(ctx context.Context, _ int32, recs []*kgo.Record, _ *store.Batch) error {
	// Decoded all at once, while the process's other readers of the
	// inbox have them fresh (see inbox.Decoded); then decided one by one.
	ms := make([]domain.InboxMessage, len(recs))
	oks := make([]bool, len(recs))
	for i, rec := range recs {
		m, ok, err := p.cfg.Decoded.Entry(rec)
		ms[i], oks[i] = m, ok && err == nil
	}
	for i, rec := range recs {
		m := ms[i]
		if !oks[i] || m.SenderID == m.UserID {
			continue
		}
		if p.cfg.Now().Sub(m.SentAt) > p.cfg.MaxAge {
			p.count(OutcomeTooOld)
			continue
		}
		if wait := m.SentAt.Add(p.cfg.Delay).Sub(p.cfg.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		if pr, ok := p.presence.Of(m.UserID); ok && pr.Online {
			p.count(OutcomeOnline)
			continue
		}
		acked, err := p.acked(ctx, m.UserID, rec.Offset)
		if err != nil {
			return err
		}
		if acked {
			p.count(OutcomeAcknowledged)
			continue
		}
		// The text before the reservation: an entry whose text history
		// has not stored in time fails the batch, which runs again, and
		// no notification is reserved without being sent. Resolved
		// together with the batch's later entries that look bound for
		// a notification too: one read of history for a burst.
		if !m.Resolved() {
			if err := p.resolveFrom(ctx, ms, oks, i); err != nil {
				return err
			}
			m = ms[i]
		}
		created, err := p.st.ReservePush(ctx, m.UserID, m.MessageID, p.cfg.Now().UTC())
		if err != nil {
			return err
		}
		if !created {
			p.count(OutcomeReserved)
			continue
		}
		n := Notification{UserID: m.UserID, ChannelID: m.ChannelID, MessageID: m.MessageID,
			SenderID: m.SenderID, Text: m.Text, SentAt: m.SentAt}
		if err := p.deliver(ctx, n); err != nil {
			p.count(OutcomeFailed)
			p.cfg.Logger.Error("push notification lost", "user", m.UserID, "message", m.MessageID, "err", err)
			continue
		}
		p.count(OutcomeSent)
	}
	return nil
}

func (p *Projection) count(outcome string) {
	if p.cfg.Outcomes != nil {
		p.cfg.Outcomes.WithLabelValues(outcome).Inc()
	}
}

// resolveFrom resolves the texts of ms[i] and of every later entry that
// may become a notification: not the sender's own, not too old, its
// recipient offline now.
func (p *Projection) resolveFrom(ctx context.Context, ms []domain.InboxMessage, oks []bool, i int) error {
	var at []int
	var need []domain.InboxMessage
	for j := i; j < len(ms); j++ {
		m := ms[j]
		if j > i && (!oks[j] || m.Resolved() || m.SenderID == m.UserID || p.cfg.Now().Sub(m.SentAt) > p.cfg.MaxAge) {
			continue
		}
		if pr, ok := p.presence.Of(m.UserID); j > i && ok && pr.Online {
			continue
		}
		at, need = append(at, j), append(need, m)
	}
	err := p.texts.Resolve(ctx, need)
	for k, j := range at {
		ms[j].Text = need[k].Text
	}
	return err
}

// acked reports whether a device of u has acknowledged the entry at offset.
func (p *Projection) acked(ctx context.Context, u domain.UserID, offset int64) (bool, error) {
	cs, err := p.st.DeviceCursors(ctx, u)
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if c.Epoch == p.cfg.Epoch && c.Position >= offset {
			return true, nil
		}
	}
	return false, nil
}

// deliver sends with three tries.
func (p *Projection) deliver(ctx context.Context, n Notification) error {
	var err error
	for i := range 3 {
		if err = p.send.Send(ctx, n); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(100*(i+1)) * time.Millisecond):
		}
	}
	return err
}

// LogSender logs notifications instead of sending them: the default.
type LogSender struct{ Logger *slog.Logger }

// Send logs n.
func (s LogSender) Send(_ context.Context, n Notification) error {
	s.Logger.Info("push", "user", n.UserID, "channel", n.ChannelID, "message", n.MessageID)
	return nil
}

// WebhookSender posts each notification as JSON shaped like an FCM HTTP v1
// message to URL, with an Idempotency-Key header of "user:message".
type WebhookSender struct {
	URL    string
	Client *http.Client // default: 10 s timeout
}

// fcmMessage is the body: FCM's {"message": {...}} with the user as topic.
type fcmMessage struct {
	Message struct {
		Topic        string `json:"topic"`
		Notification struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"notification"`
		Data map[string]string `json:"data"`
	} `json:"message"`
}

// Payload returns the JSON body for n.
func Payload(n Notification) ([]byte, error) {
	var m fcmMessage
	m.Message.Topic = "user-" + string(n.UserID)
	m.Message.Notification.Title = "New message"
	body := []rune(n.Text)
	if len(body) > 200 {
		body = append(body[:199], '…')
	}
	m.Message.Notification.Body = string(body)
	m.Message.Data = map[string]string{
		"user_id": string(n.UserID), "channel_id": string(n.ChannelID),
		"message_id": n.MessageID.String(), "sender_id": string(n.SenderID),
		"sent_at": n.SentAt.UTC().Format(time.RFC3339Nano),
	}
	return json.Marshal(m)
}

// Send posts n; any status but 2xx is an error.
func (s WebhookSender) Send(ctx context.Context, n Notification) error {
	b, err := Payload(n)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", string(n.UserID)+":"+n.MessageID.String())
	cl := s.Client
	if cl == nil {
		cl = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("push webhook: status %d", resp.StatusCode)
	}
	return nil
}
