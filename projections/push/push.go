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

// Projection implements projector.Holder: Handle keeps each entry until it
// is due (Delay after it was sent) and decides on the due ones, without
// waiting. It used to wait inside Handle, and the runner's next fetch,
// made meanwhile, brought all the log had gained: push read the inbox in
// gulps of a second and more (27,000 entries at 2,000 msg/s into groups of
// 10), and each gulp (the embedded broker reading it back, the client
// decompressing it) held up every other task for a moment; the per-second
// p99 latency of delivery jumped every 3 s (see deploy/README.md, session
// 13). Held, the entries are read as they come, and decoded while the
// process's other readers of the inbox have them fresh.
type Projection struct {
	cfg      Config
	st       Store
	texts    Texts
	presence Presence
	send     Sender

	// held keeps, per partition, the entries handed in and not decided
	// yet, in offset order; nheld counts them over all partitions.
	held  map[int32][]heldEntry
	nheld int
}

// heldEntry is an inbox record and its entry, decoded once.
type heldEntry struct {
	rec *kgo.Record
	m   domain.InboxMessage
}

// maxHeld bounds the entries held (some 300 bytes each): past it, Handle
// waits for the oldest to come due instead of taking more. At 20,000
// entries a second and the default Delay, some 60,000 are held.
const maxHeld = 1 << 18

// maxResolve bounds the texts resolved in one read of history.
const maxResolve = 512

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
	return &Projection{cfg: cfg, st: st, texts: texts, presence: presence, send: send, held: map[int32][]heldEntry{}}
}

// Reset drops the held entries; the runner fetches them again.
func (p *Projection) Reset() {
	p.held, p.nheld = map[int32][]heldEntry{}, 0
}

// Held returns the offset of partition's oldest held entry.
func (p *Projection) Held(partition int32) (int64, bool) {
	if q := p.held[partition]; len(q) > 0 {
		return q[0].rec.Offset, true
	}
	return 0, false
}

// Due returns when the first held entry comes due, or the zero time when
// none is held.
func (p *Projection) Due() time.Time {
	var due time.Time
	for _, q := range p.held {
		if len(q) == 0 {
			continue
		}
		if d := q[0].m.SentAt.Add(p.cfg.Delay); due.IsZero() || d.Before(due) {
			due = d
		}
	}
	return due
}

// Handle adds the entries of recs (of one partition of the inbox topic)
// to those held, and decides on every held entry of the partition that is
// due, in offset order. It writes no state; the runner writes its
// position, up to the oldest entry still held.
func (p *Projection) Handle(ctx context.Context, partition int32, recs []*kgo.Record, _ *store.Batch) error {
	q := p.held[partition]
	for _, rec := range recs {
		m, ok, err := p.cfg.Decoded.Entry(rec)
		if !ok || err != nil || m.SenderID == m.UserID {
			continue
		}
		q = append(q, heldEntry{rec: rec, m: m})
		p.nheld++
	}
	defer func() { p.held[partition] = q }()
	for len(q) > 0 {
		if wait := q[0].m.SentAt.Add(p.cfg.Delay).Sub(p.cfg.Now()); wait > 0 {
			if p.nheld <= maxHeld {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		if err := p.decide(ctx, q); err != nil {
			return err
		}
		q = q[1:]
		p.nheld--
	}
	return nil
}

// decide decides on q[0], which is due; q's later entries are there to be
// resolved with it.
func (p *Projection) decide(ctx context.Context, q []heldEntry) error {
	e := &q[0]
	m := e.m
	if p.cfg.Now().Sub(m.SentAt) > p.cfg.MaxAge {
		p.count(OutcomeTooOld)
		return nil
	}
	if pr, ok := p.presence.Of(m.UserID); ok && pr.Online {
		p.count(OutcomeOnline)
		return nil
	}
	acked, err := p.acked(ctx, m.UserID, e.rec.Offset)
	if err != nil {
		return err
	}
	if acked {
		p.count(OutcomeAcknowledged)
		return nil
	}
	// The text before the reservation: an entry whose text history has
	// not stored in time fails the batch, which runs again, and no
	// notification is reserved without being sent. Resolved together with
	// the later held entries that look bound for a notification too: one
	// read of history for a burst.
	if !m.Resolved() {
		if err := p.resolve(ctx, q); err != nil {
			return err
		}
		m = e.m
	}
	created, err := p.st.ReservePush(ctx, m.UserID, m.MessageID, p.cfg.Now().UTC())
	if err != nil {
		return err
	}
	if !created {
		p.count(OutcomeReserved)
		return nil
	}
	n := Notification{UserID: m.UserID, ChannelID: m.ChannelID, MessageID: m.MessageID,
		SenderID: m.SenderID, Text: m.Text, SentAt: m.SentAt}
	if err := p.deliver(ctx, n); err != nil {
		p.count(OutcomeFailed)
		p.cfg.Logger.Error("push notification lost", "user", m.UserID, "message", m.MessageID, "err", err)
		return nil
	}
	p.count(OutcomeSent)
	return nil
}

func (p *Projection) count(outcome string) {
	if p.cfg.Outcomes != nil {
		p.cfg.Outcomes.WithLabelValues(outcome).Inc()
	}
}

// resolve resolves the texts of q[0] and of every later entry of q that
// may become a notification: due (history has had Delay to store its
// text), not resolved yet, not too old, its recipient offline now; at
// most maxResolve in all.
func (p *Projection) resolve(ctx context.Context, q []heldEntry) error {
	var at []int
	var need []domain.InboxMessage
	now := p.cfg.Now()
	for j := 0; j < len(q) && len(need) < maxResolve; j++ {
		m := q[j].m
		if j > 0 && m.SentAt.Add(p.cfg.Delay).After(now) {
			break // and so, nearly always, are the entries after it
		}
		if j > 0 && (m.Resolved() || now.Sub(m.SentAt) > p.cfg.MaxAge) {
			continue
		}
		if pr, ok := p.presence.Of(m.UserID); j > 0 && ok && pr.Online {
			continue
		}
		at, need = append(at, j), append(need, m)
	}
	err := p.texts.Resolve(ctx, need)
	for k, j := range at {
		q[j].m.Text = need[k].Text
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
