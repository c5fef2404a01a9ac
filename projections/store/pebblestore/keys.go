package pebblestore

import (
	"encoding/binary"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Table prefixes. They are part of the on-disk format: add, never reuse.
// Retired, and so never to be used again: 'r' (send reservations) and 'a'
// (their appended marks), which a directory written before the sends
// processor may still hold and nothing reads.
const (
	tUser         byte = 'u'
	tUserName     byte = 'n'
	tPosition     byte = 'p'
	tChannel      byte = 'c'
	tMembership   byte = 'g'
	tMessage      byte = 'm'
	tMessageID    byte = 'i'
	tInbox        byte = 'x'
	tInboxMsg     byte = 'b'
	tCursor       byte = 'd'
	tRead         byte = 's'
	tPush         byte = 'o'
	tRevoked      byte = 'v'
	tSendDecision byte = 'e'
)

// key builds keys column by column.
type key []byte

func newKey(table byte, sizeHint int) key {
	k := make(key, 1, 1+sizeHint)
	k[0] = table
	return k
}

// str appends a string column that other columns follow.
func (k key) str(s string) key {
	k = binary.AppendUvarint(k, uint64(len(s)))
	return append(k, s...)
}

// last appends the final string column as is, so keys sort by it.
func (k key) last(s string) key { return append(k, s...) }

// i64 appends a signed 64-bit column in byte-sortable form.
func (k key) i64(n int64) key { return binary.BigEndian.AppendUint64(k, uint64(n)^(1<<63)) }

// i32 appends a signed 32-bit column in byte-sortable form.
func (k key) i32(n int32) key { return binary.BigEndian.AppendUint32(k, uint32(n)^(1<<31)) }

// u64 appends an unsigned 64-bit column.
func (k key) u64(n uint64) key { return binary.BigEndian.AppendUint64(k, n) }

func decodeI32(b []byte) int32 { return int32(binary.BigEndian.Uint32(b) ^ (1 << 31)) }

func decodeI64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// prefixEnd returns the least key greater than every key with prefix p, or
// nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func userKey(id domain.UserID) key { return newKey(tUser, len(id)).last(string(id)) }
func userNameKey(name string) key  { return newKey(tUserName, len(name)).last(name) }
func revokedKey(u domain.UserID, sid string) key {
	return newKey(tRevoked, len(u)+len(sid)+2).str(string(u)).last(sid)
}

func sendDecisionKey(k store.SendKey) key {
	return newKey(tSendDecision, len(k.SenderID)+len(k.ClientMsgID)+2).str(string(k.SenderID)).last(k.ClientMsgID)
}

func positionPrefix(projection string) key {
	return newKey(tPosition, len(projection)+6).str(projection)
}

func positionKey(projection string, partition int32) key {
	return positionPrefix(projection).i32(partition)
}

func channelKey(id domain.ChannelID) key { return newKey(tChannel, len(id)).last(string(id)) }

func membershipPrefix(u domain.UserID) key { return newKey(tMembership, len(u)+2+24).str(string(u)) }

func membershipKey(u domain.UserID, ch domain.ChannelID) key {
	return membershipPrefix(u).last(string(ch))
}

func messagePrefix(ch domain.ChannelID) key { return newKey(tMessage, len(ch)+2+8).str(string(ch)) }

func messageKey(ch domain.ChannelID, offset int64) key { return messagePrefix(ch).i64(offset) }

func messageIDKey(ch domain.ChannelID, id domain.MessageID) key {
	return newKey(tMessageID, len(ch)+2+8).str(string(ch)).u64(uint64(id))
}

func inboxPrefix(u domain.UserID, epoch int32) key {
	return newKey(tInbox, len(u)+2+4+8).str(string(u)).i32(epoch)
}

func inboxKey(u domain.UserID, epoch int32, offset int64) key {
	return inboxPrefix(u, epoch).i64(offset)
}

// inboxMsgPrefix is the prefix of a message's keys in the inbox's message
// id index: u's entries of the epoch that copy message id. Each entry
// has a key of its own below it, inboxMsgKey, written blind: the lowest
// offset is the first key. A directory written before that holds the
// prefix itself as a key, its value the lowest offset (see inboxIndex).
func inboxMsgPrefix(u domain.UserID, epoch int32, id domain.MessageID) key {
	return newKey(tInboxMsg, len(u)+2+4+8+8).str(string(u)).i32(epoch).u64(uint64(id))
}

// inboxMsgKey is the inbox message id index's key of u's entry of the
// epoch at offset, which copies message id. Its value is empty.
func inboxMsgKey(u domain.UserID, epoch int32, id domain.MessageID, offset int64) key {
	return inboxMsgPrefix(u, epoch, id).i64(offset)
}

// splitInboxMsgKey splits an inbox message index key (either form) into
// its (user, epoch) prefix, its message id and the rest: the entry's
// offset (8 bytes), or nothing in a key written before offsets were.
func splitInboxMsgKey(k []byte) (prefix []byte, id uint64, rest []byte) {
	n, w := binary.Uvarint(k[1:])
	end := 1 + w + int(n) + 4
	return k[:end], binary.BigEndian.Uint64(k[end : end+8]), k[end+8:]
}

func cursorPrefix(u domain.UserID) key { return newKey(tCursor, len(u)+2+24).str(string(u)) }

func cursorKey(u domain.UserID, device domain.DeviceID) key {
	return cursorPrefix(u).last(string(device))
}

func readPrefix(ch domain.ChannelID) key { return newKey(tRead, len(ch)+2+24).str(string(ch)) }

func readKey(ch domain.ChannelID, u domain.UserID) key { return readPrefix(ch).last(string(u)) }

func pushKey(u domain.UserID, id domain.MessageID) key {
	return newKey(tPush, len(u)+2+8).str(string(u)).u64(uint64(id))
}
