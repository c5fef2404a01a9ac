package verify

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// verifyFanout compares the inbox topic of cfg's inbox epoch with the
// channel topic: every message the fan-out's rules (domain.Admit,
// EvolveAt) admit gets exactly one entry in the inbox of each member of
// its channel at that point of the log, pointing at it, and nothing else
// is there. An entry twice (one (user, message) at two positions) is a
// difference, whatever the channel topic holds: a device would receive
// the message twice. It returns the positions compared up to.
//
// Like presence, the fan-out commits its output with its consumer
// offsets, which move while verify reads: messages below the offsets read
// before the inbox topic (o1) must have all their entries, those between
// them and the offsets read after it (o2) may have them or not.
func verifyFanout(ctx context.Context, cfg eventlog.Config, limits domain.Limits, rep *Report) (map[int32]int64, error) {
	type copies struct {
		entry     inboxDigest
		positions []int64
	}
	got := map[domain.UserID]map[domain.MessageID]*copies{}
	o1, o2, err := bracketed(ctx, cfg, rep, cfg.Topics().Inbox, func(r *kgo.Record) {
		m, ok, err := domain.DecodeInbox(r.Value)
		if err != nil || !ok {
			return
		}
		if got[m.UserID] == nil {
			got[m.UserID] = map[domain.MessageID]*copies{}
		}
		c := got[m.UserID][m.MessageID]
		if c == nil {
			c = &copies{entry: newInboxDigest(0, 0, m)}
			got[m.UserID][m.MessageID] = c
		}
		c.positions = append(c.positions, r.Offset)
	})
	if err != nil {
		return nil, err
	}
	type wanted struct {
		entry    inboxDigest
		optional bool // fanned out between o1 and o2
	}
	want := map[domain.UserID]map[domain.MessageID]wanted{}
	chans := map[domain.ChannelID]domain.Channel{}
	seen := map[domain.MessageID]bool{}
	n, err := readLog(ctx, cfg, rep.Topic, o2, func(r *kgo.Record) {
		meta, ev, err := domain.Decode(r.Value)
		if err != nil {
			return
		}
		id := domain.ChannelOf(ev)
		if id == "" {
			return
		}
		c, ok := chans[id]
		if !ok {
			c = domain.Channel{ID: id}
		}
		if !domain.Admit(c, ev, limits) {
			return
		}
		m, isMsg := ev.(domain.MessageSent)
		if !isMsg {
			chans[id] = domain.EvolveAt(c, ev, meta.Time, r.Offset)
			return
		}
		if seen[m.MessageID] {
			return // its entries are the first copy's; a second is a difference
		}
		seen[m.MessageID] = true
		for _, u := range c.Members {
			if want[u] == nil {
				want[u] = map[domain.MessageID]wanted{}
			}
			want[u][m.MessageID] = wanted{newInboxDigest(0, 0, domain.InboxMessage{
				UserID: u, ChannelID: id, MessageID: m.MessageID, SenderID: m.SenderID,
				SentAt: meta.Time, ChannelPartition: r.Partition, ChannelOffset: r.Offset,
			}), r.Offset >= o1[r.Partition]}
		}
	})
	if err != nil {
		return nil, err
	}
	rep.Events = n
	users := unionKeys(want, got)
	logSum, storeSum := sha256.New(), sha256.New()
	for _, u := range users {
		var ws, gs []inboxDigest
		diff := ""
		ids := slices.Collect(maps.Keys(want[u]))
		for id := range got[u] {
			if _, ok := want[u][id]; !ok {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		for _, id := range ids {
			w, inLog := want[u][id]
			g := got[u][id]
			if g != nil {
				for range g.positions {
					gs = append(gs, g.entry)
				}
			}
			if inLog && (g != nil || !w.optional) {
				ws = append(ws, w.entry)
			}
			if diff != "" {
				continue
			}
			at := fmt.Sprintf("inbox epoch %d, user %s, message %s", rep.Epoch, u, id)
			switch {
			case g != nil && len(g.positions) > 1:
				diff = fmt.Sprintf("%s: %d entries (positions %v), want one", at, len(g.positions), g.positions)
			case g == nil && inLog && !w.optional:
				diff = fmt.Sprintf("%s (channel %s, offset %d): missing from the inbox topic", at, w.entry.Message.ChannelID, w.entry.Message.ChannelOffset)
			case g != nil && !inLog:
				diff = fmt.Sprintf("%s (position %d): in the inbox topic, but the log sends the user no such message", at, g.positions[0])
			case g != nil && digest(g.entry) != digest(w.entry):
				diff = fmt.Sprintf("%s (position %d): the entry differs: log %+v, inbox topic %+v", at, g.positions[0], w.entry.Message, g.entry.Message)
			}
		}
		wd, gd := digest(ws), digest(gs)
		logSum.Write([]byte(wd))
		storeSum.Write([]byte(gd))
		rep.Entities++
		if wd != gd && rep.FirstDifference == "" {
			rep.FirstDifference = cmp.Or(diff, fmt.Sprintf("inbox epoch %d, user %s: entries differ", rep.Epoch, u))
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	return o2, nil
}
