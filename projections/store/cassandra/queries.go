package cassandra

import "strings"

// queries are the CQL statements of the store, with the keyspace filled in.
// gocql prepares each once per connection and caches it by its text.
type queries struct {
	insertUserByName, insertUser, releaseUserName, selectUserByName, selectUser string
	insertRevoked, selectRevoked                                                string

	deleteUser string

	insertSendDecision, selectSendDecision string

	insertPosition, selectPositions, deletePositions string

	insertChannel, insertMembership, deleteMembership, selectChannel, selectUserChannels string

	insertMessage, insertChannelBucket, insertMessageID             string
	selectBucketsDown, selectBucketsUp                              string
	selectMessagesBefore, selectMessagesAfter                       string
	selectMessageOffset, selectMessage                              string
	insertInbox, insertInboxBucket, selectInboxBuckets, selectInbox string
	insertInboxByMessage, selectInboxByMessage, selectInboxEntry    string
	selectInboxByMessageOld                                         string

	insertCursor, selectCursors, insertRead, selectReads, insertPush string
}

// newQueries returns the statements for keyspace ks.
func newQueries(ks string) queries {
	r := strings.NewReplacer("${keyspace}", ks)
	q := func(s string) string { return r.Replace(s) }
	const msgCols = "log_offset, message_id, sender_id, device_id, client_msg_id, text, sent_at"
	const decisionCols = "channel_id, message_id, text_hash, request_partition, request_offset"
	return queries{
		insertUserByName: q(`INSERT INTO ${keyspace}.users_by_name (name, user_id, password_hash, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS`),
		insertUser:       q(`INSERT INTO ${keyspace}.users (user_id, name, password_hash, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS`),
		releaseUserName:  q(`DELETE FROM ${keyspace}.users_by_name WHERE name = ? IF user_id = ?`),
		deleteUser:       q(`DELETE FROM ${keyspace}.users WHERE user_id = ?`),
		selectUserByName: q(`SELECT user_id, password_hash, created_at FROM ${keyspace}.users_by_name WHERE name = ?`),
		selectUser:       q(`SELECT name, password_hash, created_at FROM ${keyspace}.users WHERE user_id = ?`),
		insertRevoked:    q(`INSERT INTO ${keyspace}.revoked_sessions (user_id, session_id, expires_at) VALUES (?, ?, ?) USING TTL ?`),
		selectRevoked:    q(`SELECT expires_at FROM ${keyspace}.revoked_sessions WHERE user_id = ? AND session_id = ?`),

		insertSendDecision: q(`INSERT INTO ${keyspace}.send_decisions (sender_id, client_msg_id, ` + decisionCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		selectSendDecision: q(`SELECT ` + decisionCols + ` FROM ${keyspace}.send_decisions WHERE sender_id = ? AND client_msg_id = ?`),

		insertPosition:  q(`INSERT INTO ${keyspace}.positions (projection, partition, next_offset) VALUES (?, ?, ?)`),
		selectPositions: q(`SELECT partition, next_offset FROM ${keyspace}.positions WHERE projection = ?`),
		deletePositions: q(`DELETE FROM ${keyspace}.positions WHERE projection = ?`),

		insertChannel:      q(`INSERT INTO ${keyspace}.channels (channel_id, kind, name, creator_id, members, created_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		insertMembership:   q(`INSERT INTO ${keyspace}.user_channels (user_id, channel_id) VALUES (?, ?)`),
		deleteMembership:   q(`DELETE FROM ${keyspace}.user_channels WHERE user_id = ? AND channel_id = ?`),
		selectChannel:      q(`SELECT kind, name, creator_id, members, created_at, version FROM ${keyspace}.channels WHERE channel_id = ?`),
		selectUserChannels: q(`SELECT channel_id FROM ${keyspace}.user_channels WHERE user_id = ?`),

		insertMessage:        q(`INSERT INTO ${keyspace}.messages (channel_id, bucket, ` + msgCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		insertChannelBucket:  q(`INSERT INTO ${keyspace}.channel_buckets (channel_id, bucket) VALUES (?, ?)`),
		insertMessageID:      q(`INSERT INTO ${keyspace}.messages_by_id (channel_id, message_id, log_offset) VALUES (?, ?, ?)`),
		selectBucketsDown:    q(`SELECT bucket FROM ${keyspace}.channel_buckets WHERE channel_id = ? AND bucket <= ? ORDER BY bucket DESC`),
		selectBucketsUp:      q(`SELECT bucket FROM ${keyspace}.channel_buckets WHERE channel_id = ? AND bucket >= ? ORDER BY bucket ASC`),
		selectMessagesBefore: q(`SELECT ` + msgCols + ` FROM ${keyspace}.messages WHERE channel_id = ? AND bucket = ? AND log_offset < ? ORDER BY log_offset DESC LIMIT ?`),
		selectMessagesAfter:  q(`SELECT ` + msgCols + ` FROM ${keyspace}.messages WHERE channel_id = ? AND bucket = ? AND log_offset > ? ORDER BY log_offset ASC LIMIT ?`),
		selectMessageOffset:  q(`SELECT log_offset FROM ${keyspace}.messages_by_id WHERE channel_id = ? AND message_id = ?`),
		selectMessage:        q(`SELECT message_id, sender_id, device_id, client_msg_id, text, sent_at FROM ${keyspace}.messages WHERE channel_id = ? AND bucket = ? AND log_offset = ?`),

		insertInbox:        q(`INSERT INTO ${keyspace}.inbox (user_id, epoch, bucket, log_offset, partition, msg_user_id, channel_id, message_id, sender_id, text, sent_at, channel_partition, channel_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		insertInboxBucket:  q(`INSERT INTO ${keyspace}.inbox_buckets (user_id, epoch, bucket) VALUES (?, ?, ?)`),
		selectInboxBuckets: q(`SELECT bucket FROM ${keyspace}.inbox_buckets WHERE user_id = ? AND epoch = ? AND bucket >= ? ORDER BY bucket ASC`),
		selectInbox:        q(`SELECT log_offset, partition, msg_user_id, channel_id, message_id, sender_id, text, sent_at, channel_partition, channel_offset FROM ${keyspace}.inbox WHERE user_id = ? AND epoch = ? AND bucket = ? AND log_offset > ? ORDER BY log_offset ASC LIMIT ?`),

		insertInboxByMessage:    q(`INSERT INTO ${keyspace}.inbox_by_message_span (user_id, epoch, span, message_id, log_offset) VALUES (?, ?, ?, ?, ?)`),
		selectInboxByMessage:    q(`SELECT log_offset FROM ${keyspace}.inbox_by_message_span WHERE user_id = ? AND epoch = ? AND span = ? AND message_id = ? LIMIT ?`),
		selectInboxByMessageOld: q(`SELECT log_offset FROM ${keyspace}.inbox_by_message WHERE user_id = ? AND epoch = ? AND message_id = ? ORDER BY log_offset ASC LIMIT ?`),
		selectInboxEntry:        q(`SELECT partition, msg_user_id, channel_id, message_id, sender_id, text, sent_at, channel_partition, channel_offset FROM ${keyspace}.inbox WHERE user_id = ? AND epoch = ? AND bucket = ? AND log_offset = ?`),

		insertCursor:  q(`INSERT INTO ${keyspace}.device_cursors (user_id, device_id, epoch, position, updated_at) VALUES (?, ?, ?, ?, ?)`),
		selectCursors: q(`SELECT device_id, epoch, position, updated_at FROM ${keyspace}.device_cursors WHERE user_id = ?`),
		insertRead:    q(`INSERT INTO ${keyspace}.channel_reads (channel_id, user_id, seq, message_id, updated_at) VALUES (?, ?, ?, ?, ?)`),
		selectReads:   q(`SELECT user_id, seq, message_id, updated_at FROM ${keyspace}.channel_reads WHERE channel_id = ?`),
		insertPush:    q(`INSERT INTO ${keyspace}.push_reservations (user_id, message_id, reserved_at) VALUES (?, ?, ?) IF NOT EXISTS`),
	}
}
