package cassandra

import "context"

// ownedTables are the tables each projection alone writes: ResetProjection
// truncates them. Every table is in at most one list. positions, which all
// projections write, is not: a reset deletes only the projection's
// partition of it. users, users_by_name, send_decisions,
// push_reservations and revoked_sessions are no projection's and are
// never deleted (nor are send_reservations and send_marks, which nothing
// uses any more).
var ownedTables = map[string][]string{
	"history": {"channel_buckets", "messages", "messages_by_id"}, // channels and user_channels are kept
	"inbox":   {"inbox_buckets", "inbox", "inbox_by_message", "inbox_by_message_span"},
	"cursors": {"device_cursors", "channel_reads"},
}

// ResetProjection deletes the projection's positions and the state only it
// writes (see store.Store). It deletes the positions first, with the
// projection's partition of positions, then truncates each table the
// projection owns: should it fail half way, the projection starts over from
// the beginning of the log on what is left, never from its old positions
// on missing state, and ResetProjection may simply be called again.
//
// TRUNCATE needs every node of the cluster up, and Cassandra by default
// snapshots a table before truncating it (auto_snapshot), which keeps the
// old data on disk until the snapshot is cleared (nodetool clearsnapshot).
// A TRUNCATE that outlasts Config.Timeout fails with domain.ErrUnavailable
// while it may still complete on the cluster; calling again is safe.
func (s *Store) ResetProjection(ctx context.Context, projection string) error {
	if err := s.query(ctx, s.q.deletePositions, projection).Exec(); err != nil {
		return fail("reset "+projection+": positions", err)
	}
	for _, table := range ownedTables[projection] {
		if err := s.query(ctx, "TRUNCATE "+s.cfg.Keyspace+"."+table).Exec(); err != nil {
			return fail("reset "+projection+": truncate "+table, err)
		}
	}
	return nil
}
