// Package verify checks a projection's state in the store against what the
// log says it must be: it reads the projection's topic from the beginning up
// to the projection's current positions, rebuilds the expected state with
// the same domain rules, reads the store's state, and compares them entity
// by entity (channel or user), in id order, with a digest of each.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
)

// Store is what verification reads.
type Store interface {
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error)
	Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error)
}

// Report is the outcome of a verification.
type Report struct {
	Projection string `json:"projection"`
	// Agree is true when every entity's state matches the log.
	Agree bool `json:"agree"`
	// Entities is how many channels (history) or users (inbox) were
	// compared; Events how many log records were read.
	Entities int   `json:"entities"`
	Events   int64 `json:"events"`
	// LogDigest and StoreDigest digest the whole state, as rebuilt from the
	// log and as read from the store.
	LogDigest   string `json:"log_digest"`
	StoreDigest string `json:"store_digest"`
	// FirstDifference names the first entity (in id order) that differs,
	// and how, when they do not agree.
	FirstDifference string `json:"first_difference,omitempty"`
}

// Projections lists what Run can verify.
var Projections = []string{"history", "inbox"}

// Run verifies one projection.
func Run(ctx context.Context, cfg eventlog.Config, st Store, projection string, limits domain.Limits) (Report, error) {
	pos, err := st.Positions(ctx, projection)
	if err != nil {
		return Report{}, err
	}
	switch projection {
	case "history":
		return history(ctx, cfg, st, pos, limits)
	case "inbox":
		return inbox(ctx, cfg, st, pos)
	}
	return Report{}, domain.Errorf(domain.CodeBadRequest, "cannot verify %q: verify knows %v", projection, Projections)
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

func history(ctx context.Context, cfg eventlog.Config, st Store, pos map[int32]int64, limits domain.Limits) (Report, error) {
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
		cs.Channel = domain.Evolve(cs.Channel, ev, meta.Time)
		cs.Channel.Version = r.Offset + 1
	})
	if err != nil {
		return Report{}, err
	}
	rep := Report{Projection: "history", Events: n}
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
			return Report{}, err
		default:
			c.CreatedAt = c.CreatedAt.UTC().Truncate(time.Millisecond)
			got.Channel = c
		}
		for after := int64(-1); ; {
			ms, err := st.MessagesAfter(ctx, id, after, 500)
			if err != nil {
				return Report{}, err
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
			rep.FirstDifference = describe(string(id), w, got)
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	rep.Agree = rep.LogDigest == rep.StoreDigest
	return rep, nil
}

func describe(id string, want, got *channelState) string {
	if !slices.Equal(want.Channel.Members, got.Channel.Members) || want.Channel.Kind != got.Channel.Kind {
		return fmt.Sprintf("channel %s: members %v in the log, %v in the store", id, want.Channel.Members, got.Channel.Members)
	}
	for i := range max(len(want.Messages), len(got.Messages)) {
		switch {
		case i >= len(got.Messages):
			return fmt.Sprintf("channel %s: message %s (offset %d) missing from the store", id, want.Messages[i].MessageID, want.Messages[i].Offset)
		case i >= len(want.Messages):
			return fmt.Sprintf("channel %s: message %s (offset %d) in the store but not in the log", id, got.Messages[i].MessageID, got.Messages[i].Offset)
		case want.Messages[i] != got.Messages[i]:
			return fmt.Sprintf("channel %s: message at offset %d differs: log %+v, store %+v", id, want.Messages[i].Offset, want.Messages[i], got.Messages[i])
		}
	}
	return fmt.Sprintf("channel %s: state differs: log %+v, store %+v", id, want.Channel, got.Channel)
}

func digest(v any) string {
	b, _ := json.Marshal(v)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type inboxDigest struct {
	Offset    int64            `json:"offset"`
	MessageID domain.MessageID `json:"message_id"`
	ChannelID domain.ChannelID `json:"channel_id"`
	Text      string           `json:"text"`
}

func inbox(ctx context.Context, cfg eventlog.Config, st Store, pos map[int32]int64) (Report, error) {
	want := map[domain.UserID][]inboxDigest{}
	seen := map[string]bool{}
	n, err := readLog(ctx, cfg, cfg.Topics().Inbox, pos, func(r *kgo.Record) {
		_, ev, err := domain.Decode(r.Value)
		if err != nil {
			return
		}
		m, ok := ev.(domain.InboxMessage)
		if !ok {
			return
		}
		k := string(m.UserID) + "/" + m.MessageID.String()
		if seen[k] {
			return
		}
		seen[k] = true
		want[m.UserID] = append(want[m.UserID], inboxDigest{r.Offset, m.MessageID, m.ChannelID, m.Text})
	})
	if err != nil {
		return Report{}, err
	}
	rep := Report{Projection: "inbox", Events: n}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, string(u))
	}
	slices.Sort(users)
	logSum, storeSum := sha256.New(), sha256.New()
	epoch := cfg.Epoch()
	for _, s := range users {
		u := domain.UserID(s)
		var got []inboxDigest
		for after := int64(-1); ; {
			es, err := st.Inbox(ctx, u, epoch, after, 500)
			if err != nil {
				return Report{}, err
			}
			for _, e := range es {
				if p, ok := pos[e.Partition]; ok && e.Offset < p {
					got = append(got, inboxDigest{e.Offset, e.Message.MessageID, e.Message.ChannelID, e.Message.Text})
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
			rep.FirstDifference = fmt.Sprintf("user %s: %d inbox entries in the log, %d in the store", u, len(want[u]), len(got))
			if len(want[u]) == len(got) {
				for i := range got {
					if got[i] != want[u][i] {
						rep.FirstDifference = fmt.Sprintf("user %s: entry at offset %d differs: log %+v, store %+v", u, want[u][i].Offset, want[u][i], got[i])
						break
					}
				}
			}
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	rep.Agree = rep.LogDigest == rep.StoreDigest
	return rep, nil
}
