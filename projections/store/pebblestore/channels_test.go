package pebblestore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// TestChannelCacheAtCommit: once an Apply's commit is visible (its
// positions are what a caller waits for), a channel read returns the state
// it wrote, though the state before it was cached and the Apply has not
// returned yet. The gateway's AddMember waited for history's position and
// then read the old members from the cache, and answered conflict.
func TestChannelCacheAtCommit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	g := domain.Channel{ID: "g1", Kind: domain.KindGroup, Name: "g", CreatorID: "a", Members: []domain.UserID{"a", "b"}, CreatedAt: time.Unix(1, 0).UTC()}
	if err := s.Apply(ctx, store.Batch{Projection: "history", Channels: []domain.Channel{g}, Positions: map[int32]int64{0: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Channel(ctx, g.ID); err != nil { // cached now
		t.Fatal(err)
	}
	added := g
	added.Members = []domain.UserID{"a", "b", "c"}
	var seen []domain.UserID
	s.committed = func() {
		c, err := s.Channel(ctx, g.ID)
		if err != nil {
			t.Error(err)
		}
		seen = c.Members
	}
	if err := s.Apply(ctx, store.Batch{Projection: "history", Channels: []domain.Channel{added}, Positions: map[int32]int64{0: 2}}); err != nil {
		t.Fatal(err)
	}
	s.committed = nil
	if !slices.Equal(seen, added.Members) {
		t.Errorf("right after the commit the channel's members were %v, want %v", seen, added.Members)
	}
	if c, err := s.Channel(ctx, g.ID); err != nil || !slices.Equal(c.Members, added.Members) {
		t.Errorf("after the Apply: %v, %v; want %v", c.Members, err, added.Members)
	}
}
