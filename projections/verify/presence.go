package verify

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/presence"
)

// verifyPresence compares the presence topic of cfg's presence epoch with
// the changes the presence projection must have written, folding the
// session topic by the projection's own rules (presence.Partition), and
// returns the positions it compared up to.
//
// The projection commits its output together with its consumer offsets,
// so the output holds exactly the changes of the session records below
// the offsets committed at the time it is read. Those move while verify
// reads (the projection ticks every second), so verify reads them before
// (o1) and after (o2) it reads the output: each user's latest change in
// the output must be one the log gives the user between the two, their
// latest change below o1 or one made in [o1, o2). A user the output names
// and the log does not, or the other way round, differs.
func verifyPresence(ctx context.Context, cfg eventlog.Config, window time.Duration, rep *Report) (map[int32]int64, error) {
	got := map[domain.UserID]domain.PresenceChange{}
	o1, o2, err := bracketed(ctx, cfg, rep, cfg.Topics().Presence, func(r *kgo.Record) {
		if r.Value == nil { // a tombstone: the key's value is gone
			delete(got, domain.UserID(r.Key))
			return
		}
		if _, ev, err := domain.Decode(r.Value); err == nil {
			if ch, ok := ev.(domain.PresenceChanged); ok {
				got[ch.UserID] = normalPresence(domain.PresenceChange(ch))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	// allowed[u][0] is u's latest change below o1 (the zero change: none);
	// the rest are u's changes in [o1, o2), in order.
	allowed := map[domain.UserID][]domain.PresenceChange{}
	parts := map[int32]*presence.Partition{}
	n, err := readLog(ctx, cfg, rep.Topic, o2, func(r *kgo.Record) {
		meta, ev, err := domain.Decode(r.Value)
		if err != nil {
			return
		}
		ps := parts[r.Partition]
		if ps == nil {
			ps = presence.NewPartition()
			parts[r.Partition] = ps
		}
		ps.Apply(ev, meta.Time, window, presence.Effects{Change: func(ch domain.PresenceChange) {
			ch = normalPresence(ch)
			a := allowed[ch.UserID]
			if a == nil {
				a = []domain.PresenceChange{{}}
			}
			if r.Offset < o1[r.Partition] {
				a[0] = ch
			} else {
				a = append(a, ch)
			}
			allowed[ch.UserID] = a
		}})
	})
	if err != nil {
		return nil, err
	}
	rep.Events = n
	users := unionKeys(allowed, got)
	rep.NoneKept = len(users) == 0
	logSum, storeSum := sha256.New(), sha256.New()
	for _, u := range users {
		g := got[u]
		a := allowed[u]
		if a == nil {
			a = []domain.PresenceChange{{}}
		}
		want := a[len(a)-1]
		if slices.Contains(a, g) {
			want = g
		}
		wd, gd := digest(want), digest(g)
		logSum.Write([]byte(wd))
		storeSum.Write([]byte(gd))
		rep.Entities++
		if wd != gd && rep.FirstDifference == "" {
			rep.FirstDifference = describePresence(rep.Epoch, u, want, g)
		}
	}
	rep.LogDigest, rep.StoreDigest = hex.EncodeToString(logSum.Sum(nil)), hex.EncodeToString(storeSum.Sum(nil))
	return o2, nil
}

// bracketed reads output, which a projection commits together with its
// consumer offsets (rep.Positions is its group, rep.Topic its input), to
// its end, and returns the offsets committed before (o1) and after (o2)
// it read: what it read is the output of the input below offsets
// somewhere between the two.
func bracketed(ctx context.Context, cfg eventlog.Config, rep *Report, output string, fn func(*kgo.Record)) (o1, o2 map[int32]int64, err error) {
	if o1, err = committed(ctx, cfg, rep.Positions, rep.Topic); err != nil {
		return nil, nil, err
	}
	if _, err := eventlog.ReadToEnd(ctx, cfg, output, eventlog.ReadRange{}, fn); err != nil {
		return nil, nil, err
	}
	if o2, err = committed(ctx, cfg, rep.Positions, rep.Topic); err != nil {
		return nil, nil, err
	}
	return o1, o2, nil
}

// committed returns group's committed offsets on topic.
func committed(ctx context.Context, cfg eventlog.Config, group, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil // nothing committed yet
	}
	if err != nil {
		return nil, fmt.Errorf("verify: offsets of %s: %w", group, err)
	}
	pos := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			pos[o.Partition] = o.At
		}
	})
	return pos, nil
}

// unionKeys returns the keys of a and b, sorted, each once: the entities
// the log names and those the output names.
func unionKeys[K cmp.Ordered, A, B any](a map[K]A, b map[K]B) []K {
	ks := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// normalPresence is a change as compared: times in UTC.
func normalPresence(ch domain.PresenceChange) domain.PresenceChange {
	ch.LastActiveAt, ch.At = ch.LastActiveAt.UTC(), ch.At.UTC()
	return ch
}

// describePresence names how a user's presence differs.
func describePresence(epoch int32, u domain.UserID, want, got domain.PresenceChange) string {
	show := func(ch domain.PresenceChange) string {
		if ch == (domain.PresenceChange{}) {
			return "no change"
		}
		state := "offline"
		if ch.Online {
			state = "online"
		}
		return fmt.Sprintf("%s at %s (last active %s)", state, ch.At.Format(time.RFC3339Nano), ch.LastActiveAt.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("presence epoch %d, user %s: the log says %s, the presence topic %s", epoch, u, show(want), show(got))
}
