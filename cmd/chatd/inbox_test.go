package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestInboxPointsAtMessage: a message's text is written once, not once per
// member. A 100,000-character message into a group of 100 gives 100 inbox
// entries that point at it, each far smaller than the text, and grows the
// embedded default's data (log and store) by a few times the text, not a
// hundred; every member still gets the whole text, live and by a sync from
// the store. Then 1 KB messages into the same group: the bytes written per
// message are logged (deploy/README.md has the figures).
func TestInboxPointsAtMessage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		t.Parallel()
		// 200 sends in a burst from one device: past the default
		// per-user burst (100), which a run fast enough (no -race)
		// met, and the 101st send was refused.
		n := startNode(t, b, unlimitedSends...)
		owner := n.signUp("owner")
		ownerTok := n.login(owner, "laptop")
		reader := n.signUp("reader")
		readerTok := n.login(reader, "phone")
		late := n.signUp("late")
		lateTok := n.login(late, "phone")
		ids := []string{reader.ID, late.ID}
		for i := range 97 {
			ids = append(ids, n.signUpQuick(fmt.Sprint("m", i)))
		}
		g := n.createChannel(ownerTok, "group", ids...)
		if len(g.Members) != 100 {
			t.Fatalf("group of %d", len(g.Members))
		}
		live := n.connect(readerTok)
		sender := n.connect(ownerTok)
		live.patience = burstPatience // 200 messages into a group of 100 on a loaded machine

		// Every character of the text differs from its neighbours, so no
		// compression hides a copy.
		var sb strings.Builder
		for i := 0; sb.Len() < 100_000; i++ {
			fmt.Fprintf(&sb, "%07x ", i*2654435761%(1<<28))
		}
		text := sb.String()[:100_000]
		before := dirBytes(t, n.dir)
		ack := sender.send(g.ChannelID, "big", text)
		if ack.Type != "ack" {
			t.Fatalf("send: %+v", ack)
		}
		if f := live.messages(1)[0]; f.MessageID != ack.MessageID || f.Text != text {
			t.Fatalf("live delivery: message %s with %d characters; want %s with the whole text", f.MessageID, len(f.Text), ack.MessageID)
		}
		// A device that syncs from the store gets it whole too (its sync
		// delivers only what the inbox projection has stored).
		sync := n.resume(lateTok, -1)
		sync.patience = burstPatience // the inbox projection stores 100 entries a message
		if f := sync.messages(1)[0]; f.MessageID != ack.MessageID || f.Text != text {
			t.Fatalf("sync: message %s with %d characters; want %s with the whole text", f.MessageID, len(f.Text), ack.MessageID)
		}

		entries, entryBytes := inboxEntriesOf(t, n, ack.MessageID)
		t.Logf("%s: a %d-byte message into a group of 100: %d inbox entries, %d bytes in all", b.name, len(text), entries, entryBytes)
		if entries != 100 {
			t.Errorf("%d inbox entries of the message; want 100", entries)
		}
		// An entry names the message (ids, offsets, times: ~400 bytes);
		// a copy of the text would be 100,000.
		if per := entryBytes / max(entries, 1); per > 1000 {
			t.Errorf("inbox entries of %d bytes each for a %d-byte message: the text is copied per member", per, len(text))
		}
		if b.kafka == "" && b.cassandra == "" {
			// The log keeps the text in chat.channels, the store in
			// history: twice, and a little for 100 entries and indexes.
			grew := dirBytes(t, n.dir) - before
			t.Logf("embedded: the data directory grew %d bytes", grew)
			if grew > 10*int64(len(text)) {
				t.Errorf("the data directory grew %d bytes for a %d-byte message into a group of 100: the text is copied per member", grew, len(text))
			}
		}

		// 1 KB messages: what one costs, for deploy/README.md.
		const count = 200
		kb := text[:1000]
		before = dirBytes(t, n.dir)
		logBefore, storeBefore := dirBytes(t, filepath.Join(n.dir, "log")), dirBytes(t, filepath.Join(n.dir, "store"))
		// Sent as a client that does not wait for each ack would: the
		// figure is then less a matter of how long the run took (clock
		// ticks and heartbeats are written meanwhile).
		for i := range count {
			sender.write(map[string]string{"type": "send", "channel_id": g.ChannelID, "client_msg_id": fmt.Sprint("kb-", i), "text": fmt.Sprintf("%04d%s", i, kb[4:])})
		}
		got := live.messages(count)
		last := got[count-1].MessageID
		for i, f := range got {
			if want := fmt.Sprintf("%04d%s", i, kb[4:]); f.Text != want {
				t.Fatalf("1 KB message %d: %q..., want %q...", i, f.Text[:min(len(f.Text), 8)], want[:8])
			}
		}
		sync = n.resume(lateTok, -1)
		sync.patience = burstPatience
		if f := sync.messages(count + 1)[count]; f.MessageID != last {
			t.Fatalf("sync: last message %s, want %s", f.MessageID, last)
		}
		entries, entryBytes = inboxEntriesOf(t, n, last)
		t.Logf("%s: a 1,000-byte message into a group of 100: %d inbox entries, %d bytes in all (%d each)", b.name, entries, entryBytes, entryBytes/max(entries, 1))
		if b.kafka == "" && b.cassandra == "" {
			grew := dirBytes(t, n.dir) - before
			logGrew := dirBytes(t, filepath.Join(n.dir, "log")) - logBefore
			storeGrew := dirBytes(t, filepath.Join(n.dir, "store")) - storeBefore
			t.Logf("embedded: %d 1,000-byte messages into a group of 100 grew the data directory %d bytes: %d per message (log %d, store %d)",
				count, grew, grew/count, logGrew/count, storeGrew/count)
		}
	})
}

// inboxEntriesOf returns how many records of the node's inbox topic are
// entries of message id, and their bytes (key and value).
func inboxEntriesOf(t *testing.T, n *node, id string) (count, bytes int) {
	t.Helper()
	recs, err := n.readTopic(n.prefix+".inbox.e1", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var e struct {
			Payload struct {
				MessageID string `json:"message_id"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("inbox record %d/%d: %v", r.Partition, r.Offset, err)
		}
		if e.Payload.MessageID == id {
			count++
			bytes += len(r.Key) + len(r.Value)
		}
	}
	return count, bytes
}

// dirBytes returns the bytes of the files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed while walking (a compaction)
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestInboxVersionOne: an inbox topic written before entries pointed at
// their message holds entries of version 1, which carry the text. Such an
// entry (history has no message for it: only the entry has the text) is
// delivered live and by a sync from the store, with its own text.
func TestInboxVersionOne(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		t.Parallel()
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		bobTok := n.login(bob, "phone")
		ch := n.createChannel(n.login(ann, "phone"), "direct", bob.ID)
		live := n.connect(bobTok)
		const text = "copied into the entry by the fan-out of before"
		id := uint64(time.Now().UnixNano())
		value := fmt.Sprintf(`{"type":"inbox.message","version":1,"event_id":"%d.%s","time":"2026-01-02T03:04:05Z","payload":`+
			`{"user_id":%q,"channel_id":%q,"message_id":"%d","sender_id":%q,"text":%q,"sent_at":"2026-01-02T03:04:05Z","channel_partition":0,"channel_offset":0}}`,
			id, bob.ID, bob.ID, ch.ChannelID, id, ann.ID, text)
		cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers()...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: n.prefix + ".inbox.e1", Key: []byte(bob.ID), Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if f := live.messages(1)[0]; f.MessageID != fmt.Sprint(id) || f.Text != text {
			t.Fatalf("live: %+v; want message %d with its text", f, id)
		}
		if f := n.resume(bobTok, -1).messages(1)[0]; f.MessageID != fmt.Sprint(id) || f.Text != text {
			t.Fatalf("sync: %+v; want message %d with its text", f, id)
		}
	})
}
