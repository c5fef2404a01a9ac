package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/store"
)

// verifySends compares the sends processor's decisions with the sends
// topic up to the processor's progress (its changelog): each key's decision
// in the store is its first request's (channel, candidate id, text digest,
// place), and the channel topic holds that message exactly once. It
// returns the positions compared up to.
//
// The progress is read first: what lies below it was committed with its
// messages and after its decisions were stored, so the channel topic, read
// after, holds every message it decided. Messages past it are not counted.
func verifySends(ctx context.Context, cfg eventlog.Config, st Store, rep *Report) (map[int32]int64, error) {
	pos, err := sends.Progress(ctx, cfg)
	if err != nil {
		return nil, err
	}
	want := map[store.SendKey]store.SendDecision{}
	rep.Events, err = readLog(ctx, cfg, rep.Topic, pos, func(r *kgo.Record) {
		_, ev, err := domain.Decode(r.Value)
		req, ok := ev.(domain.SendRequested)
		if err != nil || !ok {
			return
		}
		k := store.SendKey{SenderID: req.SenderID, ClientMsgID: req.ClientMsgID}
		if _, seen := want[k]; !seen {
			want[k] = store.SendDecision{
				SendKey: k, ChannelID: req.ChannelID, MessageID: req.MessageID, TextHash: sends.TextHash(req.Text),
				Partition: r.Partition, Offset: r.Offset,
			}
		}
	})
	if err != nil {
		return nil, err
	}
	keys := make([]store.SendKey, 0, len(want))
	ids := make(map[domain.MessageID]int, len(want))
	for k, d := range want {
		keys = append(keys, k)
		ids[d.MessageID] = 0
	}
	slices.SortFunc(keys, func(a, b store.SendKey) int {
		return cmp.Or(cmp.Compare(a.SenderID, b.SenderID), cmp.Compare(a.ClientMsgID, b.ClientMsgID))
	})
	got, err := st.SendDecisions(ctx, keys)
	if err != nil {
		return nil, err
	}
	if _, err := eventlog.ReadToEnd(ctx, cfg, cfg.Topics().Channels, eventlog.ReadRange{}, func(r *kgo.Record) {
		if _, ev, err := domain.Decode(r.Value); err == nil {
			if m, ok := ev.(domain.MessageSent); ok {
				if n, decided := ids[m.MessageID]; decided {
					ids[m.MessageID] = n + 1
				}
			}
		}
	}); err != nil {
		return nil, err
	}
	// The log's side: each key's first request, its message once; the
	// store's: its decision, and how often the channel topic holds it.
	type side struct {
		D      store.SendDecision
		Copies int
	}
	var ws, gs []side
	for _, k := range keys {
		w, g := want[k], got[k]
		ws = append(ws, side{w, 1})
		gs = append(gs, side{g, ids[g.MessageID]})
		if rep.FirstDifference == "" && (w != g || ids[w.MessageID] != 1) {
			rep.FirstDifference = fmt.Sprintf("sender %s, client_msg_id %q: decided %+v with %d copies of its message in %s, want %+v with one (its first request)",
				k.SenderID, k.ClientMsgID, g, ids[g.MessageID], cfg.Topics().Channels, w)
		}
	}
	rep.Entities = len(keys)
	rep.LogDigest, rep.StoreDigest = digest(ws), digest(gs)
	return pos, nil
}
