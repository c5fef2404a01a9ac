// Command readlog prints the events of one evchat topic as JSON lines, one
// per event:
//
//	{"topic":"chat.channels","partition":5,"offset":1,"key":"d1-2","type":"message.sent","version":1,"time":"…","payload":{…}}
//
// It is the smallest correct consumer of evchat's log, meant to be copied:
// it reads with isolation level read_committed (the inbox and presence
// topics are written in transactions), decodes every record with
// domain.Decode, and skips the events whose type or version it does not
// know with a note on stderr instead of stopping (the evolution rule of
// schemas/README.md). A key is null only on clock.ticked.
//
//	go run ./cmd/readlog --brokers 127.0.0.1:9092 --topic chat.channels --from-start --max 10
//
// Without --group it reads every partition directly and commits nothing;
// with --group it joins that consumer group and commits after each batch it
// printed, so the next run with the same group goes on from there.
// It stops on Ctrl-C, or after --max records.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "readlog:", err)
		os.Exit(1)
	}
}

// line is what readlog prints for one event.
type line struct {
	Topic     string       `json:"topic"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Key       *string      `json:"key"`
	Type      string       `json:"type"`
	Version   int          `json:"version"`
	Time      time.Time    `json:"time"`
	Payload   domain.Event `json:"payload"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("readlog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
	topic := fs.String("topic", "chat.channels", "topic to read")
	fromStart := fs.Bool("from-start", false, "read from the start of each partition (default: only new records)")
	group := fs.String("group", "", "consumer group to join and commit in (default: none, read all partitions)")
	limit := fs.Int("max", 0, "stop after this many records (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	start := kgo.NewOffset().AtEnd()
	if *fromStart {
		start = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	if *group != "" {
		opts = append(opts, kgo.ConsumerGroup(*group), kgo.DisableAutoCommit())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	out := json.NewEncoder(stdout)
	out.SetEscapeHTML(false)
	seen, skipped := 0, 0
	defer func() { fmt.Fprintf(stderr, "readlog: %d records, %d skipped\n", seen, skipped) }()
	for *limit == 0 || seen < *limit {
		n := -1
		if *limit > 0 {
			n = *limit - seen // poll no more than we print, so a group commits no more
		}
		fetches := cl.PollRecords(ctx, n)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		fetches.EachError(func(t string, p int32, err error) {
			fmt.Fprintf(stderr, "readlog: fetch %s/%d: %v\n", t, p, err)
		})
		for _, r := range fetches.Records() {
			seen++
			// Decode accepts only the versions it knows; peek at the
			// envelope for the note and the version.
			var env struct {
				Type    string `json:"type"`
				Version int    `json:"version"`
			}
			_ = json.Unmarshal(r.Value, &env)
			meta, ev, err := domain.Decode(r.Value)
			if err != nil {
				skipped++
				why := "malformed"
				if domain.CodeOf(err) == domain.CodeUnknownType {
					why = "unknown type or version" // written by a newer writer: skip, never stop
				}
				fmt.Fprintf(stderr, "readlog: skip %s/%d@%d: %s (type %q version %d): %v\n",
					r.Topic, r.Partition, r.Offset, why, env.Type, env.Version, err)
				continue
			}
			l := line{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Type: ev.EventType(), Version: env.Version, Time: meta.Time, Payload: ev}
			if r.Key != nil {
				k := string(r.Key)
				l.Key = &k
			}
			if err := out.Encode(l); err != nil {
				return err
			}
		}
		if *group != "" { // commit what was printed: the next run goes on from there
			if err := cl.CommitUncommittedOffsets(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintln(stderr, "readlog: commit:", err)
			}
		}
	}
	return nil
}
