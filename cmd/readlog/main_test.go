package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

func TestReadlog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cfg := eventlog.Config{Brokers: broker.Addrs(), Partitions: 2}
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := cfg.Topics().Channels
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	event := func(ev domain.Event, id string) *kgo.Record {
		t.Helper()
		r, err := eventlog.Record(topic, "g1", ev, domain.Meta{EventID: id, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Two events and, between them, one from a newer writer (version 2),
	// which readlog must skip without stopping.
	produce(
		event(domain.ChannelCreated{ChannelID: "g1", Kind: domain.KindGroup, Name: "team", CreatorID: "7", Members: []domain.UserID{"7"}}, "1"),
		&kgo.Record{Topic: topic, Key: []byte("g1"), Value: []byte(`{"type":"message.sent","version":2,"event_id":"2","time":"2025-01-02T03:04:05Z","payload":{}}`)},
		event(domain.MessageSent{ChannelID: "g1", MessageID: 42, SenderID: "7", DeviceID: "phone", ClientMsgID: "c1", Text: "hi"}, "3"),
	)

	read := func(args ...string) (lines []map[string]any, stderr string) {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"--brokers", strings.Join(broker.Addrs(), ","), "--topic", topic, "--from-start"}, args...)
		if err := run(ctx, args, &out, &errb); err != nil {
			t.Fatalf("run: %v (stderr %s)", err, errb.String())
		}
		for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var l map[string]any
			if err := json.Unmarshal([]byte(s), &l); err != nil {
				t.Fatalf("line %q: %v", s, err)
			}
			lines = append(lines, l)
		}
		return lines, errb.String()
	}

	lines, stderr := read("--max", "3")
	t.Logf("stderr:\n%s", stderr)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %v", len(lines), lines)
	}
	want := []map[string]any{
		{"topic": topic, "offset": 0.0, "key": "g1", "type": "channel.created", "version": 1.0, "time": "2025-01-02T03:04:05Z"},
		{"topic": topic, "offset": 2.0, "key": "g1", "type": "message.sent", "version": 1.0, "time": "2025-01-02T03:04:05Z"},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
		if lines[i]["partition"] != lines[0]["partition"] {
			t.Errorf("line %d: partition %v, want that of its key, %v", i, lines[i]["partition"], lines[0]["partition"])
		}
	}
	if p := lines[1]["payload"].(map[string]any); p["text"] != "hi" || p["message_id"] != "42" || p["sender_id"] != "7" {
		t.Errorf("message.sent payload = %v", p)
	}
	if p := lines[0]["payload"].(map[string]any); p["name"] != "team" || p["kind"] != "group" {
		t.Errorf("channel.created payload = %v", p)
	}
	if !strings.Contains(stderr, "skip") || !strings.Contains(stderr, `version 2`) || !strings.Contains(stderr, "3 records, 1 skipped") {
		t.Errorf("stderr does not note the skipped v2 event:\n%s", stderr)
	}

	// In a group, a second run goes on after what the first printed.
	if lines, _ := read("--group", "readlog-test", "--max", "3"); len(lines) != 2 {
		t.Fatalf("group run 1: %d lines, want 2", len(lines))
	}
	produce(event(domain.MemberAdded{ChannelID: "g1", UserID: "8", ByID: "7"}, "4"))
	lines, _ = read("--group", "readlog-test", "--max", "1")
	if len(lines) != 1 || lines[0]["type"] != "member.added" || lines[0]["offset"] != 3.0 {
		t.Fatalf("group run 2: %v, want only the member.added at offset 3", lines)
	}
}

func TestBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--nope"}, &out, &errb); err == nil {
		t.Fatal("run accepted an unknown flag")
	}
	if err := run(context.Background(), []string{"extra"}, &out, &errb); err == nil {
		t.Fatal("run accepted an argument")
	}
}
