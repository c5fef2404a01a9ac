// Package verify checks a projection's state in the store against what the
// log says it must be: it reads the projection's positions in the store,
// reads the projection's topic from the beginning up to them, rebuilds the
// expected state with the same rules as the projection, reads the store's
// state, and compares them entity by entity (channel or user), in id order,
// with a digest of each. Records past the positions (not applied yet) are
// not compared.
//
// It verifies history (chat.channels → channels and messages, positions
// under "history"), the inbox of the node's current inbox epoch N
// (chat.inbox.eN → the store's inbox of epoch N, one entry per (user,
// message), the first copy; positions under "inbox.eN"), and cursors
// (chat.sessions → each device's furthest acknowledged position and each
// member's furthest read mark; positions under "cursors"), and presence
// (chat.sessions → the presence topic of the node's presence epoch, each
// user's latest change; positions are the presence projection's committed
// offsets, see verifyPresence), and the fan-out (chat.channels → the inbox
// topic of the current epoch: one entry per member and admitted message,
// none twice; positions are its committed offsets, see verifyFanout), and
// the sends processor (chat.sends → each (sender, client message id)'s
// decision in the store is its first request's, and chat.channels holds
// its message once; positions are the processor's progress, see
// verifySends).
//
// A verification that compared nothing proves nothing: when the topic holds
// records but no entity or no event was compared (the projection has not
// applied anything, or its positions are read under the wrong name), the
// report does not agree and Report.Err says so. A disagreement names the
// first difference: the channel and the message's offset, or the user and
// the inbox position.
//
// The entities are those the log names: state the store holds for a
// channel or user the log never mentions is not seen.
package verify

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/cursors"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/fanout"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/presence"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/store"
)

// Store is what verification reads.
type Store interface {
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error)
	Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error)
	DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error)
	ChannelReads(ctx context.Context, ch domain.ChannelID) ([]store.ReadMark, error)
	SendDecisions(ctx context.Context, keys []store.SendKey) (map[store.SendKey]store.SendDecision, error)
}

// Errors of Report.Err.
var (
	// ErrComparedNothing: the log holds records, but verification
	// compared no entity or no event.
	ErrComparedNothing = errors.New("verify compared nothing")
	// ErrDisagree: the store and the log disagree.
	ErrDisagree = errors.New("the store and the log disagree")
)

// Report is the outcome of a verification.
type Report struct {
	Projection string `json:"projection"`
	// Epoch is the inbox epoch compared (inbox only).
	Epoch int32 `json:"epoch,omitempty"`
	// Positions is the name the projection's positions are stored under
	// ("history", "inbox.e2"); Partitions how many partitions have one.
	Positions  string `json:"positions"`
	Partitions int    `json:"partitions"`
	// Topic is the topic read; LogRecords how many records (and
	// transaction markers) it holds, compared or not.
	Topic      string `json:"topic"`
	LogRecords int64  `json:"log_records"`
	// Agree is true when something was compared (or the log is empty) and
	// every entity's state matches the log.
	Agree bool `json:"agree"`
	// Entities is how many entities were compared, of Kind ("channels" or
	// "users"); Events how many log records below the positions were read.
	Entities int    `json:"entities"`
	Kind     string `json:"kind"`
	Events   int64  `json:"events"`
	// LogDigest and StoreDigest digest the whole state, as rebuilt from the
	// log and as read from the store.
	LogDigest   string `json:"log_digest"`
	StoreDigest string `json:"store_digest"`
	// FirstDifference names the first entity (in id order) that differs,
	// and how, when the digests differ.
	FirstDifference string `json:"first_difference,omitempty"`
	// NoneKept: the events read below the positions hold nothing the
	// projection keeps (a session topic of heartbeats and logins, no
	// acknowledgement or read yet), so there is no entity to compare.
	NoneKept bool `json:"none_kept,omitempty"`
}

// ComparedNothing reports a verification that proves nothing: the topic
// holds records, but no entity or no event was compared.
func (r Report) ComparedNothing() bool {
	if r.NoneKept && r.Events > 0 {
		return false
	}
	return r.LogRecords > 0 && (r.Entities == 0 || r.Events == 0)
}

// Err returns nil when the verification passed, an error wrapping
// ErrComparedNothing when it compared nothing while the log holds records,
// and one wrapping ErrDisagree with the first difference otherwise.
func (r Report) Err() error {
	switch {
	case r.ComparedNothing() && r.Partitions == 0:
		return fmt.Errorf("%w: %s holds %d offsets of records and transaction markers, but the store has no positions under %q to compare up to (has the projection applied anything?)",
			ErrComparedNothing, r.Topic, r.LogRecords, r.Positions)
	case r.ComparedNothing():
		return fmt.Errorf("%w: %s holds %d offsets of records and transaction markers; %d events and %d %s compared below the positions under %q of %d partitions",
			ErrComparedNothing, r.Topic, r.LogRecords, r.Events, r.Entities, r.Kind, r.Positions, r.Partitions)
	case !r.Agree:
		return fmt.Errorf("%w: %s", ErrDisagree, r.FirstDifference)
	}
	return nil
}

// Summary is one line saying what was compared: the projection (and the
// inbox's epoch), the counts and the digests.
func (r Report) Summary() string {
	what := r.Projection
	if r.Epoch > 0 {
		what = fmt.Sprintf("%s epoch %d", r.Projection, r.Epoch)
	}
	return fmt.Sprintf("verify %s: compared %d %s and %d events of %s (%d offsets in the topic) up to the positions under %s; log digest %s, store digest %s",
		what, r.Entities, r.Kind, r.Events, r.Topic, r.LogRecords, r.Positions, short(r.LogDigest), short(r.StoreDigest))
}

func short(d string) string { return d[:min(12, len(d))] }

// Projections lists what Run can verify.
var Projections = []string{history.Name, fanout.Name, inbox.Name, cursors.Name, presence.Name, sends.Name}

// Rules are the rules the projections were built with, which verify
// rebuilds them by.
type Rules struct {
	// Limits are history's and the fan-out's (domain.Admit).
	Limits domain.Limits
	// PresenceWindow is the presence projection's window; 0 is
	// domain.DefaultPresenceWindow.
	PresenceWindow time.Duration
}

// Run verifies one projection: history, cursors, the inbox of cfg's inbox
// epoch or the presence of cfg's presence epoch (a node passes its config
// with the epochs it reads).
func Run(ctx context.Context, cfg eventlog.Config, st Store, projection string, rules Rules) (Report, error) {
	rep := Report{Projection: projection}
	switch projection {
	case history.Name:
		rep.Positions, rep.Topic, rep.Kind = history.Name, cfg.Topics().Channels, "channels"
	case inbox.Name:
		rep.Epoch = cfg.Epoch()
		rep.Positions, rep.Topic, rep.Kind = eventlog.Epoched(inbox.Name, rep.Epoch), cfg.Topics().Inbox, "users"
	case cursors.Name:
		rep.Positions, rep.Topic, rep.Kind = cursors.Name, cfg.Topics().Sessions, "users and channels"
	case fanout.Name:
		rep.Epoch = cfg.Epoch()
		rep.Positions, rep.Topic, rep.Kind = cfg.Group(eventlog.Epoched(fanout.Name, rep.Epoch)), cfg.Topics().Channels, "users"
	case presence.Name:
		rep.Epoch = eventlog.EpochOf(cfg, domain.OutputPresence)
		rep.Positions, rep.Topic, rep.Kind = cfg.Group(eventlog.Epoched(presence.Name, rep.Epoch)), cfg.Topics().Sessions, "users"
	case sends.Name:
		rep.Positions, rep.Topic, rep.Kind = cfg.Topics().SendsState, cfg.Topics().Sends, "sends (sender, client message id)"
	default:
		return Report{}, domain.Errorf(domain.CodeBadRequest, "cannot verify %q: verify knows %v", projection, Projections)
	}
	held, err := logRecords(ctx, cfg, rep.Topic)
	if err != nil {
		return Report{}, err
	}
	var pos map[int32]int64
	if projection == presence.Name || projection == fanout.Name || projection == sends.Name {
		// Their consumer offsets (the sends processor's progress), read
		// by verifyPresence, verifyFanout and verifySends.
	} else if pos, err = st.Positions(ctx, rep.Positions); err != nil {
		return Report{}, err
	}
	switch projection {
	case history.Name:
		err = verifyHistory(ctx, cfg, st, pos, rules.Limits, &rep)
	case inbox.Name:
		err = verifyInbox(ctx, cfg, st, pos, &rep)
	case cursors.Name:
		err = verifyCursors(ctx, cfg, st, pos, &rep)
	case fanout.Name:
		pos, err = verifyFanout(ctx, cfg, rules.Limits, &rep)
	case sends.Name:
		pos, err = verifySends(ctx, cfg, st, &rep)
	default:
		pos, err = verifyPresence(ctx, cfg, cmp.Or(rules.PresenceWindow, domain.DefaultPresenceWindow), &rep)
	}
	if err != nil {
		return Report{}, err
	}
	rep.LogRecords = held
	for _, p := range pos {
		if p > 0 {
			rep.Partitions++
		}
	}
	rep.Agree = rep.LogDigest == rep.StoreDigest && !rep.ComparedNothing()
	return rep, nil
}

// logRecords returns how many offsets topic holds between its partitions'
// start and end: records, and the markers of transactions.
func logRecords(ctx context.Context, cfg eventlog.Config, topic string) (int64, error) {
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("verify: end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("verify: start offsets of %s: %w", topic, err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(o.Topic, o.Partition)
		n += max(o.Offset-s.Offset, 0)
	})
	return n, nil
}

// readLog calls fn for every record of topic below pos, in partition order.
func readLog(ctx context.Context, cfg eventlog.Config, topic string, pos map[int32]int64, fn func(*kgo.Record)) (int64, error) {
	var parts []int32
	for p, end := range pos {
		if end > 0 {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return 0, nil
	}
	var n int64
	_, err := eventlog.ReadToEnd(ctx, cfg, topic, eventlog.ReadRange{Partitions: parts, Until: pos}, func(r *kgo.Record) {
		n++
		fn(r)
	})
	return n, err
}

type channelState struct {
	Channel   domain.Channel  `json:"channel"`
	Messages  []messageDigest `json:"messages"`
	partition int32           // of the channel topic: one per channel
}

type messageDigest struct {
	Offset    int64            `json:"offset"`
	MessageID domain.MessageID `json:"message_id"`
	SenderID  domain.UserID    `json:"sender_id"`
	Text      string           `json:"text"`
	SentAt    time.Time        `json:"sent_at"`
}

func verifyHistory(ctx context.Context, cfg eventlog.Config, st Store, pos map[int32]int64, limits domain.Limits, rep *Report) error {
	want := map[domain.ChannelID]*channelState{}
	seen := map[domain.MessageID]bool{}
	n, err := readLog(ctx, cfg, cfg.Topics().Channels, pos, func(r *kgo.Record) {
		meta, ev, err := domain.Decode(r.Value)
		if err != nil {
			return
		}
		id := domain.ChannelOf(ev)
		if id == "" {
			return
		}
		cs := want[id]
		if cs == nil {
			cs = &channelState{Channel: domain.Channel{ID: id}, partition: r.Partition}
		}
		if !domain.Admit(cs.Channel, ev, limits) {
			return
		}
		want[id] = cs
		if m, ok := ev.(domain.MessageSent); ok {
			if !seen[m.MessageID] {
				seen[m.MessageID] = true
				cs.Messages = append(cs.Messages, messageDigest{r.Offset, m.MessageID, m.SenderID, m.Text, meta.Time.UTC().Truncate(time.Millisecond)})
			}
			return
		}
		cs.Channel = domain.EvolveAt(cs.Channel, ev, meta.Time, r.Offset)
	})
	if err != nil {
		return err
	}
	rep.Events = n
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, string(id))
	}
	slices.Sort(ids)
	logSum, storeSum := sha256.New(), sha256.New()
	for _, s := range ids {
		id := domain.ChannelID(s)
		w := want[id]
		w.Channel.CreatedAt = w.Channel.CreatedAt.UTC().Truncate(time.Millisecond)
		got := &channelState{}
		c, err := st.Channel(ctx, id)
		switch {
		case errors.Is(err, domain.ErrNotFound):
		case err != nil:
			return err
		default:
			c.CreatedAt = c.CreatedAt.UTC().Truncate(time.Millisecond)
			got.Channel = c
		}
		for after := int64(-1); ; {
			ms, err := st.MessagesAfter(ctx, id, after, 500)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Offset >= pos[w.partition] {
					continue // applied after verification began
				}
				got.Messages = append(got.Messages, messageDigest{m.Offset, m.MessageID, m.SenderID, m.Text, m.SentAt.UTC().Truncate(time.Millisecond)})
			}
			if len(ms) < 500 {
				break
			}
			after = ms[len(ms)-1].Offset
		}
		wd, gd := digest(w), digest(got)
		logSum.Write([]byte(wd))
		storeSum.Write([]byte(gd))
		rep.Entities++
		if wd != gd && rep.FirstDifference == "" {
			rep.FirstDifference = describeChannel(string(id), w, got)
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	return nil
}

// describeChannel names how a channel differs: its members, or the first
// message (by offset in the channel's partition) that differs.
func describeChannel(id string, want, got *channelState) string {
	if !slices.Equal(want.Channel.Members, got.Channel.Members) || want.Channel.Kind != got.Channel.Kind {
		return fmt.Sprintf("channel %s: members %v in the log, %v in the store", id, want.Channel.Members, got.Channel.Members)
	}
	w, g, ok := firstDifference(want.Messages, got.Messages, func(m messageDigest) int64 { return m.Offset })
	switch {
	case !ok:
		return fmt.Sprintf("channel %s: state differs: log %+v, store %+v", id, want.Channel, got.Channel)
	case g == nil:
		return fmt.Sprintf("channel %s: message %s at offset %d is missing from the store", id, w.MessageID, w.Offset)
	case w == nil:
		return fmt.Sprintf("channel %s: message %s at offset %d is in the store but not in the log", id, g.MessageID, g.Offset)
	}
	return fmt.Sprintf("channel %s: message %s at offset %d differs: log %+v, store %+v", id, w.MessageID, w.Offset, *w, *g)
}

// firstDifference walks two lists in offset order and returns the first
// offset at which they differ: an element only want has (got is nil), only
// got has (want is nil), or both have with different digests.
func firstDifference[T any](want, got []T, offset func(T) int64) (w, g *T, ok bool) {
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		switch {
		case j == len(got) || i < len(want) && offset(want[i]) < offset(got[j]):
			return &want[i], nil, true
		case i == len(want) || offset(got[j]) < offset(want[i]):
			return nil, &got[j], true
		case digest(want[i]) != digest(got[j]):
			return &want[i], &got[j], true
		}
		i, j = i+1, j+1
	}
	return nil, nil, false
}

func digest(v any) string {
	b, _ := json.Marshal(v)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// inboxDigest is one inbox entry: its position (partition, offset) and
// the whole message it copies.
type inboxDigest struct {
	Partition int32               `json:"partition"`
	Offset    int64               `json:"offset"`
	Message   domain.InboxMessage `json:"message"`
}

func newInboxDigest(partition int32, offset int64, m domain.InboxMessage) inboxDigest {
	m.SentAt = m.SentAt.UTC().Truncate(time.Millisecond)
	return inboxDigest{partition, offset, m}
}

// verifyInbox compares the store's inbox of cfg's epoch with the inbox
// topic of that epoch: one entry per (user, message), the first copy, as
// the inbox projection keeps.
func verifyInbox(ctx context.Context, cfg eventlog.Config, st Store, pos map[int32]int64, rep *Report) error {
	want := map[domain.UserID][]inboxDigest{}
	seen := map[string]bool{}
	n, err := readLog(ctx, cfg, cfg.Topics().Inbox, pos, func(r *kgo.Record) {
		m, ok, err := domain.DecodeInbox(r.Value)
		if err != nil || !ok {
			return
		}
		k := string(m.UserID) + "/" + m.MessageID.String()
		if seen[k] {
			return
		}
		seen[k] = true
		want[m.UserID] = append(want[m.UserID], newInboxDigest(r.Partition, r.Offset, m))
	})
	if err != nil {
		return err
	}
	rep.Events = n
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, string(u))
	}
	slices.Sort(users)
	logSum, storeSum := sha256.New(), sha256.New()
	for _, s := range users {
		u := domain.UserID(s)
		var got []inboxDigest
		for after := int64(-1); ; {
			es, err := st.Inbox(ctx, u, rep.Epoch, after, 500)
			if err != nil {
				return err
			}
			for _, e := range es {
				if p, ok := pos[e.Partition]; ok && e.Offset < p {
					got = append(got, newInboxDigest(e.Partition, e.Offset, e.Message))
				}
			}
			if len(es) < 500 {
				break
			}
			after = es[len(es)-1].Offset
		}
		wd, gd := digest(want[u]), digest(got)
		logSum.Write([]byte(wd))
		storeSum.Write([]byte(gd))
		rep.Entities++
		if wd != gd && rep.FirstDifference == "" {
			rep.FirstDifference = describeInbox(rep.Epoch, u, want[u], got)
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	return nil
}

// describeInbox names the first position of a user's inbox at which the
// store and the log differ.
func describeInbox(epoch int32, u domain.UserID, want, got []inboxDigest) string {
	w, g, ok := firstDifference(want, got, func(e inboxDigest) int64 { return e.Offset })
	at := func(e *inboxDigest) string {
		return fmt.Sprintf("inbox epoch %d, user %s, position %d (partition %d)", epoch, u, e.Offset, e.Partition)
	}
	switch {
	case !ok:
		return fmt.Sprintf("inbox epoch %d, user %s: entries differ", epoch, u)
	case g == nil:
		return fmt.Sprintf("%s: message %s is missing from the store", at(w), w.Message.MessageID)
	case w == nil:
		return fmt.Sprintf("%s: message %s is in the store but not in the log", at(g), g.Message.MessageID)
	}
	return fmt.Sprintf("%s: the entry differs: log %+v, store %+v", at(w), w.Message, g.Message)
}

// cursorDigest is what is compared of a device's cursor or a read mark:
// times to the millisecond (what Cassandra keeps).
type cursorDigest struct {
	Key       string           `json:"key"` // device id, or user id for a read mark
	Epoch     int32            `json:"epoch,omitempty"`
	Position  int64            `json:"position"` // or the read's seq
	MessageID domain.MessageID `json:"message_id,omitempty"`
	UpdatedAt time.Time        `json:"updated_at"`
}

func newCursorDigest(key string, epoch int32, pos int64, id domain.MessageID, at time.Time) cursorDigest {
	return cursorDigest{key, epoch, pos, id, at.UTC().Truncate(time.Millisecond)}
}

// verifyCursors compares the store's device cursors (per user) and read
// marks (per channel) with the session topic below the positions, by the
// cursors projection's rules (cursors.AckAdvances, ReadAdvances): the
// furthest acknowledgement of a device and the furthest read of a member
// win, with the time of the event that set them.
func verifyCursors(ctx context.Context, cfg eventlog.Config, st Store, pos map[int32]int64, rep *Report) error {
	devices := map[domain.UserID]map[domain.DeviceID]cursorDigest{}
	reads := map[domain.ChannelID]map[domain.UserID]cursorDigest{}
	n, err := readLog(ctx, cfg, cfg.Topics().Sessions, pos, func(r *kgo.Record) {
		meta, ev, err := domain.Decode(r.Value)
		if err != nil {
			return
		}
		switch ev := ev.(type) {
		case domain.DeviceAcked:
			if devices[ev.UserID] == nil {
				devices[ev.UserID] = map[domain.DeviceID]cursorDigest{}
			}
			if cur, ok := devices[ev.UserID][ev.DeviceID]; ok && !cursors.AckAdvances(cur.Epoch, cur.Position, ev) {
				return
			}
			devices[ev.UserID][ev.DeviceID] = newCursorDigest(string(ev.DeviceID), ev.Epoch, ev.Position, 0, meta.Time)
		case domain.ChannelRead:
			if reads[ev.ChannelID] == nil {
				reads[ev.ChannelID] = map[domain.UserID]cursorDigest{}
			}
			if cur, ok := reads[ev.ChannelID][ev.UserID]; ok && !cursors.ReadAdvances(cur.Position, ev) {
				return
			}
			reads[ev.ChannelID][ev.UserID] = newCursorDigest(string(ev.UserID), 0, ev.Seq, ev.MessageID, meta.Time)
		}
	})
	if err != nil {
		return err
	}
	rep.Events = n
	rep.NoneKept = len(devices) == 0 && len(reads) == 0
	sorted := func(m map[string]cursorDigest) []cursorDigest {
		out := make([]cursorDigest, 0, len(m))
		for _, d := range m {
			out = append(out, d)
		}
		slices.SortFunc(out, func(a, b cursorDigest) int { return strings.Compare(a.Key, b.Key) })
		return out
	}
	logSum, storeSum := sha256.New(), sha256.New()
	compare := func(what string, want, got map[string]cursorDigest) {
		w, g := sorted(want), sorted(got)
		wd, gd := digest(w), digest(g)
		logSum.Write([]byte(wd))
		storeSum.Write([]byte(gd))
		rep.Entities++
		if wd != gd && rep.FirstDifference == "" {
			rep.FirstDifference = describeCursors(what, w, g)
		}
	}
	for _, u := range slices.Sorted(maps.Keys(devices)) {
		cs, err := st.DeviceCursors(ctx, u)
		if err != nil {
			return err
		}
		want, got := map[string]cursorDigest{}, map[string]cursorDigest{}
		for d, c := range devices[u] {
			want[string(d)] = c
		}
		for _, c := range cs {
			got[string(c.DeviceID)] = newCursorDigest(string(c.DeviceID), c.Epoch, c.Position, 0, c.UpdatedAt)
		}
		compare("user "+string(u)+"'s device cursors", want, got)
	}
	for _, ch := range slices.Sorted(maps.Keys(reads)) {
		rs, err := st.ChannelReads(ctx, ch)
		if err != nil {
			return err
		}
		want, got := map[string]cursorDigest{}, map[string]cursorDigest{}
		for u, r := range reads[ch] {
			want[string(u)] = r
		}
		for _, r := range rs {
			got[string(r.UserID)] = newCursorDigest(string(r.UserID), 0, r.Seq, r.MessageID, r.UpdatedAt)
		}
		compare("channel "+string(ch)+"'s read marks", want, got)
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	return nil
}

// describeCursors names the first device or member whose cursor differs.
func describeCursors(what string, want, got []cursorDigest) string {
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(got) || i < len(want) && want[i].Key < got[i].Key:
			return fmt.Sprintf("%s: %s %+v is missing from the store", what, want[i].Key, want[i])
		case i >= len(want) || got[i].Key < want[i].Key:
			return fmt.Sprintf("%s: %s %+v is in the store but not in the log", what, got[i].Key, got[i])
		case want[i] != got[i]:
			return fmt.Sprintf("%s: %s differs: log %+v, store %+v", what, want[i].Key, want[i], got[i])
		}
	}
	return what + ": they differ"
}
