package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
)

// TestChaos kills chatd with SIGKILL again and again, 0.7 to 2.5 s apart,
// while a burst of messages goes into a group of ten and other members
// talk in small groups and direct channels. The clients are black boxes
// over WebSocket, as a real app is: each device reconnects within a second
// of a restart with its (epoch, position) and resends every send it has no
// acknowledgement for with the same client message id. At the end a
// checker counts, per device, messages lost, received twice, received out
// of their channel's order and phantoms (never acknowledged), compares
// every channel's history with what was acknowledged, and reads the log:
// no message id twice in the channel topic, no (user, message) twice in
// the inbox topic, and every partition readable to its end by a
// read-committed consumer.
func TestChaos(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		cfg := chaosConfig{users: 12, burst: 2000, steady: 60, kills: 6, window: 20}
		if s := os.Getenv("EVCHAT_CHAOS_ROUNDS"); s != "" { // a longer run by hand
			cfg.kills, _ = strconv.Atoi(s)
			cfg.burst *= max(1, cfg.kills/6)
		}
		runChaos(t, b, cfg)
	})
}

type chaosConfig struct {
	users  int           // with two devices each
	burst  int           // messages into the group of ten, from one device
	steady int           // messages per other sending device, 5 a second
	kills  int           // kill -9 rounds
	window int           // sends a device keeps in flight
	every  time.Duration // between new sends of the burst; 0 = as fast as the window allows
}

func runChaos(t *testing.T, b backend, cfg chaosConfig) {
	n := startChild(t, b, unlimitedSends...) // killed with SIGKILL
	r := newChaosRun(t, n, []*node{n}, cfg)
	r.start()
	defer r.stop()
	// Kill in the middle of the burst, in rounds of three kills, each 0.7
	// to 2.5 s after the restart before it (while the devices reconnect
	// and resend); each round once the burst has moved on by a few hundred
	// messages since the last.
	for i := range cfg.kills {
		if i%3 == 0 {
			r.waitProgress(min(300, cfg.burst/(cfg.kills+1)))
		}
		chaosPause()
		a, s := r.acked()
		t.Logf("kill %d of %d with %d of %d sends acknowledged", i+1, cfg.kills, a, s)
		n.kill()
		n.start()
	}
	r.check(fmt.Sprintf("%d kills", cfg.kills))
}

// chaosPause waits 0.7 to 2.5 s: between a restart and the next kill, while
// the devices reconnect and resend.
func chaosPause() { time.Sleep(700*time.Millisecond + rand.N(1800*time.Millisecond)) }

type chaosChannel struct {
	id      string
	members []*user
}

// chaosRun is the traffic of a chaos test and its checker: twelve users
// with two devices each, a burst into a group of ten from one device,
// steady talk in two small groups and two direct channels. Devices are
// spread over nodes; one whose node is down connects to the next.
type chaosRun struct {
	t      *testing.T
	n      *node // for REST and the log reads
	cfg    chaosConfig
	chans  []chaosChannel
	devs   []*chaosDevice
	byUser map[string][]*chaosDevice
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newChaosRun(t *testing.T, n *node, nodes []*node, cfg chaosConfig) *chaosRun {
	r := &chaosRun{t: t, n: n, cfg: cfg, byUser: map[string][]*chaosDevice{}}
	users := make([]*user, cfg.users)
	for i := range users {
		users[i] = n.signUp(fmt.Sprintf("chaos%02d", i))
		n.login(users[i], "phone")
		n.login(users[i], "laptop")
	}
	ids := func(us ...*user) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	mk := func(kind string, owner *user, others ...*user) string {
		c := n.createChannel(owner.Token["phone"], kind, ids(others...)...)
		r.chans = append(r.chans, chaosChannel{c.ChannelID, append([]*user{owner}, others...)})
		return c.ChannelID
	}
	group10 := mk("group", users[0], users[1:10]...)
	small1 := mk("group", users[2], users[3:7]...)
	small2 := mk("group", users[7], users[8], users[9], users[10], users[11])
	direct1 := mk("direct", users[10], users[11])
	direct2 := mk("direct", users[1], users[11])

	for _, u := range users {
		for _, d := range []string{"phone", "laptop"} {
			k := len(r.devs) % len(nodes)
			dev := &chaosDevice{nodes: append(slices.Clone(nodes[k:]), nodes[:k]...), user: u, device: d, token: u.Token[d],
				window: cfg.window, epoch: 1, position: -1,
				acked: map[string]string{}, onConn: map[string]bool{}, retryAt: map[string]time.Time{}}
			r.devs = append(r.devs, dev)
			r.byUser[u.ID] = append(r.byUser[u.ID], dev)
		}
	}
	plan := func(dev *chaosDevice, channel string, count int, every time.Duration) {
		for i := range count {
			cmid := fmt.Sprintf("%s-%s-%d", dev.user.Name, dev.device, i)
			dev.sends = append(dev.sends, chaosSend{cmid: cmid, channel: channel, text: "chaos " + cmid})
		}
		dev.every = every
	}
	plan(r.byUser[users[0].ID][0], group10, cfg.burst, cfg.every)
	plan(r.byUser[users[2].ID][1], small1, cfg.steady, 200*time.Millisecond)
	plan(r.byUser[users[7].ID][0], small2, cfg.steady, 200*time.Millisecond)
	plan(r.byUser[users[10].ID][1], direct1, cfg.steady, 200*time.Millisecond)
	plan(r.byUser[users[11].ID][0], direct2, cfg.steady, 200*time.Millisecond)
	return r
}

// start connects every device and starts its sends.
func (r *chaosRun) start() {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for _, d := range r.devs {
		r.wg.Go(func() { d.run(r.ctx) })
	}
}

// stop disconnects every device and waits for them.
func (r *chaosRun) stop() {
	r.cancel()
	r.wg.Wait()
}

// acked returns how many sends were acknowledged, of all planned.
func (r *chaosRun) acked() (done, total int) {
	for _, d := range r.devs {
		a, s := d.progress()
		done, total = done+a, total+s
	}
	return done, total
}

// pending names, per device with unacknowledged sends, how many, the
// first of them, how many are on the current connection with no answer,
// how many sends were ever answered "unavailable", how many of its planned
// sends it has sent, and where it connects: where a burst stopped.
func (r *chaosRun) pending() string {
	var out []string
	for _, d := range r.devs {
		d.mu.Lock()
		first, left := "", 0
		for _, s := range d.sends {
			if _, ok := d.acked[s.cmid]; !ok {
				if left == 0 {
					first = s.cmid
				}
				left++
			}
		}
		if left > 0 {
			out = append(out, fmt.Sprintf("%s/%s: %d unacknowledged from %s, %d sent on connection %d with no answer, %d answered unavailable at least once, %d of %d planned sent, at %s",
				d.user.Name, d.device, left, first, len(d.onConn), d.conns, len(d.retryAt), d.next, len(d.sends), d.nodes[d.at].http))
		}
		d.mu.Unlock()
	}
	return strings.Join(out, "; ")
}

// waitProgress waits until more sends than now, by count, are
// acknowledged (or all are).
func (r *chaosRun) waitProgress(count int) {
	r.t.Helper()
	a0, _ := r.acked()
	waitForTB(r.t, 3*time.Minute, func() bool { a, s := r.acked(); return a >= min(a0+count, s) })
}

// check waits until every send is acknowledged and every device has every
// message of its channels, then counts per device what was lost,
// duplicated, reordered or phantom, compares each channel's history with
// what was acknowledged, and reads the log. what says what was done to
// the servers, for the summary line.
func (r *chaosRun) check(what string) {
	t, n, devs := r.t, r.n, r.devs
	t.Helper()
	// Bounded by progress, not by total time: a loaded machine may take
	// long, but a run with nothing acknowledged for 3 minutes is stuck.
	if !waitProgress(3*time.Minute, func() int { a, _ := r.acked(); return a }, func() bool { a, s := r.acked(); return a == s }) {
		a, s := r.acked()
		t.Fatalf("no send acknowledged for 3 min: %d of %d sends acknowledged; %s", a, s, r.pending())
	}

	// What every device must end with: each acknowledged message of each
	// channel its user belongs to.
	ackedIDs := map[string]string{} // message id → channel
	for _, d := range devs {
		for cmid, id := range d.ackedCopy() {
			ackedIDs[id] = d.channelOf(cmid)
		}
	}
	want := map[*chaosDevice]map[string]bool{}
	for _, d := range devs {
		want[d] = map[string]bool{}
	}
	for id, ch := range ackedIDs {
		for _, c := range r.chans {
			if c.id != ch {
				continue
			}
			for _, u := range c.members {
				for _, d := range r.byUser[u.ID] {
					want[d][id] = true
				}
			}
		}
	}
	complete := func() bool {
		for _, d := range devs {
			if !d.has(want[d]) {
				return false
			}
		}
		return true
	}
	received := func() int {
		n := 0
		for _, d := range devs {
			d.mu.Lock()
			n += len(d.got)
			d.mu.Unlock()
		}
		return n
	}
	waitProgress(time.Minute, received, complete)
	// A last sync from each device's position, as an app does when it
	// comes to the foreground: whatever live delivery missed comes now.
	for _, d := range devs {
		d.reconnect()
	}
	waitProgress(time.Minute, received, complete)
	r.stop()

	// The checker.
	history := map[string][]string{} // channel → message ids, oldest first
	for _, c := range r.chans {
		h := n.allHistory(c.members[0].Token["phone"], c.id, 200)
		var ids []string
		for i := len(h) - 1; i >= 0; i-- {
			ids = append(ids, h[i].MessageID)
		}
		history[c.id] = ids
	}
	var lost, dup, reordered, phantom, deliveries, conns int
	for _, d := range devs {
		l, du, re, p, got := d.check(want[d], ackedIDs, history)
		lost, dup, reordered, phantom, deliveries = lost+l, dup+du, reordered+re, phantom+p, deliveries+got
		conns += d.conns
		for _, e := range d.errs {
			t.Errorf("%s/%s: %s", d.user.Name, d.device, e)
		}
	}
	var histLost, histDup, histPhantom int
	for _, c := range r.chans {
		seen := map[string]bool{}
		for _, id := range history[c.id] {
			if seen[id] {
				histDup++
			}
			seen[id] = true
			if ackedIDs[id] != c.id {
				histPhantom++
			}
		}
		for id, ch := range ackedIDs {
			if ch == c.id && !seen[id] {
				histLost++
				if histLost <= 5 {
					t.Errorf("history of channel %s: acknowledged message %s (sonyflake time %s, machine %d) missing",
						c.id, id, sonyflakeTime(id), sonyflakeMachine(id))
				}
			}
		}
	}
	a, s := r.acked()
	t.Logf("chaos on %s: %s, %d sends (%d acknowledged), %d deliveries to %d devices over %d connections; "+
		"devices: %d lost, %d duplicated, %d reordered, %d phantom; history: %d lost, %d duplicated, %d phantom",
		n.b.name, what, s, a, deliveries, len(devs), conns, lost, dup, reordered, phantom, histLost, histDup, histPhantom)
	if lost+dup+reordered+phantom+histLost+histDup+histPhantom > 0 {
		t.Errorf("not exactly once (counts above; details logged per device)")
	}
	for _, d := range devs {
		for _, l := range d.report {
			t.Log(l)
		}
	}

	// The log: one message.sent per message id, one inbox entry per
	// (user, message), and every partition readable to its end.
	sent := map[string]int{}
	recs, err := n.readTopic(n.prefix+".channels", 2*time.Minute)
	if err != nil {
		t.Error(err)
	}
	for _, r := range recs {
		if _, ev, err := domain.Decode(r.Value); err == nil {
			if m, ok := ev.(domain.MessageSent); ok {
				sent[m.MessageID.String()]++
			}
		}
	}
	twice := 0
	for id, c := range sent {
		if c > 1 {
			twice++
			t.Errorf("channel topic: message %s appended %d times", id, c)
		}
	}
	inbox := map[string]int{}
	recs, err = n.readTopic(n.prefix+".inbox.e1", 2*time.Minute)
	if err != nil {
		t.Error(err)
	}
	for _, r := range recs {
		if _, ev, err := domain.Decode(r.Value); err == nil {
			if m, ok := ev.(domain.InboxMessage); ok {
				inbox[string(m.UserID)+"/"+m.MessageID.String()]++
			}
		}
	}
	// An inbox entry twice fails on both backends. The embedded broker
	// writes a committing transaction's markers partition by partition and
	// applies its input offsets after them: a kill -9 in between once left
	// a fan-out transaction committed in part, and its input came again.
	// The start now rolls such a transaction forward (eventlog.endOpenTxns)
	// and the fan-out skips what its changelog says it has fanned out.
	report := t.Errorf
	inboxTwice := 0
	for k, c := range inbox {
		if c > 1 {
			inboxTwice++
			if inboxTwice <= 20 {
				report("inbox topic: %s %d times", k, c)
			}
		}
	}
	t.Logf("log: %d message ids in the channel topic (%d twice), %d inbox entries (%d (user, message) twice)", len(sent), twice, len(recs), inboxTwice)
	if len(sent) < len(ackedIDs) {
		t.Errorf("the channel topic holds %d message ids, fewer than the %d acknowledged", len(sent), len(ackedIDs))
	}
	// The operator's check says the same: the fan-out's output, history,
	// the inbox and the sends processor's decisions agree with the log
	// after every kill.
	for _, p := range []string{"fanout", "history", "inbox", "sends"} {
		var out string
		if !waitUntil(2*time.Minute, func() bool {
			var ok bool
			out, ok = n.ops("verify", "--projection", p)
			return ok
		}) {
			t.Errorf("verify %s after the kills:\n%s", p, out)
		} else {
			t.Log(strings.TrimSpace(out))
		}
	}
}

// waitProgress waits for done as long as count grows: it returns false
// once count has not grown for stall (a quarter second between tries).
func waitProgress(stall time.Duration, count func() int, done func() bool) bool {
	last, at := count(), time.Now()
	for !done() {
		if c := count(); c != last {
			last, at = c, time.Now()
		} else if time.Since(at) > stall {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// waitUntil waits up to d for cond, a quarter second between tries, and
// returns whether it held; the checker reports what is missing.
func waitUntil(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// readTopic reads every partition of a topic from its start to its end, as
// a read-committed consumer: it returns the data records, and an error
// naming any partition it could not read to its end (a transaction left
// open, or records that never became readable) within d.
func (n *node) readTopic(topic string, d time.Duration) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	next := map[int32]int64{}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	var out []*kgo.Record
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
	if len(remaining) > 0 {
		var parts []string
		for p, end := range remaining {
			parts = append(parts, fmt.Sprintf("partition %d at %d of %d", p, next[p], end))
		}
		slices.Sort(parts)
		return out, fmt.Errorf("%s: a read-committed reader did not reach the end: %s", topic, strings.Join(parts, ", "))
	}
	return out, nil
}

type chaosSend struct{ cmid, channel, text string }

type delivery struct {
	channel, id string
	epoch       int32
	position    int64
	conn        int
}

// chaosDevice is one app on one device: it keeps a connection open,
// reconnecting with its position whenever it drops, records what it
// receives, and sends its planned messages with a window in flight,
// resending the unacknowledged ones on every new connection.
type chaosDevice struct {
	nodes  []*node // its own first, then the others: where to connect when one is down
	user   *user
	device string
	token  string
	window int
	every  time.Duration // between new sends; 0 = as fast as the window allows
	sends  []chaosSend

	mu       sync.Mutex
	epoch    int32
	position int64
	got      []delivery
	acked    map[string]string    // client msg id → message id
	onConn   map[string]bool      // sent on this connection, no answer yet
	retryAt  map[string]time.Time // answered "unavailable": resend after
	next     int                  // sends[:next] were sent at least once
	conns    int
	at       int           // nodes[at] is where it connects
	drop     chan struct{} // closed to make the device reconnect
	errs     []string
	report   []string
	lastSent time.Time
}

func (d *chaosDevice) progress() (acked, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.acked), len(d.sends)
}

func (d *chaosDevice) ackedCopy() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]string{}
	for k, v := range d.acked {
		out[k] = v
	}
	return out
}

func (d *chaosDevice) channelOf(cmid string) string {
	for _, s := range d.sends {
		if s.cmid == cmid {
			return s.channel
		}
	}
	return ""
}

func (d *chaosDevice) has(want map[string]bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := 0
	got := map[string]bool{}
	for _, g := range d.got {
		if want[g.id] && !got[g.id] {
			got[g.id] = true
			seen++
		}
	}
	return seen == len(want)
}

func (d *chaosDevice) reconnect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drop != nil {
		select {
		case <-d.drop:
		default:
			close(d.drop)
		}
	}
}

func (d *chaosDevice) fail(format string, args ...any) {
	d.errs = append(d.errs, fmt.Sprintf(format, args...))
}

// run keeps the device connected until ctx ends.
func (d *chaosDevice) run(ctx context.Context) {
	for ctx.Err() == nil {
		d.session(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(100*time.Millisecond + rand.N(200*time.Millisecond)):
		}
	}
}

// session is one connection, from dial to its end.
func (d *chaosDevice) session(ctx context.Context) {
	d.mu.Lock()
	q := fmt.Sprintf("token=%s&epoch=%d&position=%d", url.QueryEscape(d.token), d.epoch, d.position)
	host := d.nodes[d.at].http
	d.mu.Unlock()
	u := url.URL{Scheme: "ws", Host: host, Path: "/v1/ws", RawQuery: q}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, _, err := websocket.DefaultDialer.DialContext(dctx, u.String(), nil)
	cancel()
	if err != nil {
		// That node is down: try the next, as an app asks discovery
		// again after a failed connect.
		d.mu.Lock()
		d.at = (d.at + 1) % len(d.nodes)
		d.mu.Unlock()
		return
	}
	defer c.Close()
	d.mu.Lock()
	d.conns++
	conn := d.conns
	clear(d.onConn)
	d.drop = make(chan struct{})
	drop := d.drop
	d.mu.Unlock()

	frames := make(chan []byte, 1024)
	readErr := make(chan error, 1)
	go func() {
		defer close(frames)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			frames <- b
		}
	}()
	defer func() {
		c.Close()
		for range frames { // the reader ends with the connection
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := d.pump(c); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-drop:
			return
		case <-tick.C:
		case b, ok := <-frames:
			if !ok {
				return
			}
			d.frame(b, conn)
		}
	}
}

// pump sends what the window allows: first the unacknowledged sends not
// yet sent on this connection, in order, then new ones.
func (d *chaosDevice) pump(c *websocket.Conn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	write := func(s chaosSend) error {
		d.onConn[s.cmid] = true
		_ = c.SetWriteDeadline(now.Add(5 * time.Second))
		return c.WriteJSON(map[string]string{"type": "send", "channel_id": s.channel, "client_msg_id": s.cmid, "text": s.text})
	}
	for _, s := range d.sends[:d.next] {
		if len(d.onConn) >= d.window {
			return nil
		}
		if _, ok := d.acked[s.cmid]; ok || d.onConn[s.cmid] || now.Before(d.retryAt[s.cmid]) {
			continue
		}
		if err := write(s); err != nil {
			return err
		}
	}
	for d.next < len(d.sends) && len(d.onConn) < d.window && now.Sub(d.lastSent) >= d.every {
		if err := write(d.sends[d.next]); err != nil {
			return err
		}
		d.next++
		d.lastSent = now
	}
	return nil
}

func (d *chaosDevice) frame(b []byte, conn int) {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		d.mu.Lock()
		d.fail("frame %s: %v", b, err)
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch f.Type {
	case "message":
		d.got = append(d.got, delivery{channel: f.ChannelID, id: f.MessageID, epoch: *f.Epoch, position: *f.Position, conn: conn})
		d.epoch, d.position = *f.Epoch, *f.Position
	case "synced":
		d.epoch, d.position = *f.Epoch, *f.Position
	case "ack":
		if prev, ok := d.acked[f.ClientMsgID]; ok && prev != f.MessageID {
			d.fail("client message %s acknowledged as %s, then as %s", f.ClientMsgID, prev, f.MessageID)
		}
		d.acked[f.ClientMsgID] = f.MessageID
		delete(d.onConn, f.ClientMsgID)
	case "error":
		if f.ClientMsgID != "" && f.Code == "unavailable" {
			delete(d.onConn, f.ClientMsgID)
			d.retryAt[f.ClientMsgID] = time.Now().Add(500 * time.Millisecond)
			return
		}
		d.fail("error frame %s", b)
	case "resync":
		d.fail("told to resync: %s", b)
	}
}

// check counts what this device got wrong: acknowledged messages it never
// received, messages received twice, messages received before one that
// comes earlier in their channel's history (or at a position not past the
// previous one), and messages nobody's send was acknowledged for.
func (d *chaosDevice) check(want map[string]bool, acked map[string]string, history map[string][]string) (lost, dup, reordered, phantom, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	index := map[string]int{}
	for _, ids := range history {
		for i, id := range ids {
			index[id] = i
		}
	}
	name := d.user.Name + "/" + d.device
	seen := map[string]delivery{}
	last := map[string]int{} // channel → history index of the last message received
	var prev delivery
	for i, g := range d.got {
		total++
		if first, ok := seen[g.id]; ok {
			dup++
			if dup <= 5 {
				d.report = append(d.report, fmt.Sprintf("%s: message %s twice: epoch %d position %d on connection %d, then epoch %d position %d on connection %d",
					name, g.id, first.epoch, first.position, first.conn, g.epoch, g.position, g.conn))
			}
			continue
		}
		seen[g.id] = g
		if _, ok := acked[g.id]; !ok {
			phantom++
			d.report = append(d.report, fmt.Sprintf("%s: message %s was never acknowledged", name, g.id))
		}
		if i > 0 && g.epoch == prev.epoch && g.position <= prev.position {
			reordered++
			d.report = append(d.report, fmt.Sprintf("%s: position %d after %d", name, g.position, prev.position))
		} else if l, ok := last[g.channel]; ok && inHistory(index, g.id) && index[g.id] < l {
			reordered++
			d.report = append(d.report, fmt.Sprintf("%s: message %s out of its channel's order", name, g.id))
		}
		if inHistory(index, g.id) { // a message missing from history counts there, not here
			last[g.channel] = index[g.id]
		}
		prev = g
	}
	for id := range want {
		if _, ok := seen[id]; !ok {
			lost++
			if lost <= 5 {
				d.report = append(d.report, fmt.Sprintf("%s: message %s of channel %s never received", name, id, acked[id]))
			}
		}
	}
	return lost, dup, reordered, phantom, total
}

func inHistory(index map[string]int, id string) bool { _, ok := index[id]; return ok }

// sonyflakeTime and sonyflakeMachine decode a message id (gateway/chat:
// 10 ms units since 2026-01-01 UTC above 8 bits of sequence and 16 of
// machine id), to place a message among the kills of a chaos test.
func sonyflakeTime(id string) string {
	v, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return "?"
	}
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(v>>24) * 10 * time.Millisecond).Format("15:04:05.00")
}

func sonyflakeMachine(id string) uint64 {
	v, _ := strconv.ParseUint(id, 10, 64)
	return v & 0xffff
}
