package node

import (
	"context"
	"strconv"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/cursors"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/fanout"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/presence"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/push"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/verify"
)

// Replay says how a role's state is rebuilt by `chatd replay`.
type Replay int

const (
	// NotReplayed: the role keeps no state of its own to rebuild.
	NotReplayed Replay = iota
	// Rewind: positions and state in the store; the role is stopped, its
	// state deleted (or its positions rewound) and started again in place.
	Rewind
	// Rebuild: it writes a topic others read, so it is rebuilt from the
	// start of the log into its output's next epoch, beside the current
	// one, which the node switches to once it has caught up.
	Rebuild
	// WithWriter: its state is the store's copy of another role's output
	// (Role.RebuiltBy): rebuilding that role into a new epoch rebuilds it.
	WithWriter
)

func (r Replay) String() string {
	return [...]string{"not replayed", "rewound in place", "rebuilt into a new epoch", "rebuilt with its writer"}[r]
}

// Role is one row of Table: a projection or a process role, all that the
// node, replay, verify, the epoch switch, the admin endpoints, metrics
// labels and the help text know of it.
type Role struct {
	// Name is how operators (--roles, --projection), positions, consumer
	// groups and the projection-lag metric's label name it; a role of an
	// epoch adds it (eventlog.Epoched: "inbox.e2").
	Name string
	// Doc says what it does, for help texts.
	Doc string
	// Input is the topic it reads; nil for the gateway, which reads
	// several.
	Input func(eventlog.Topics) string
	// Output, when not empty, is the output (domain.OutputInbox or
	// domain.OutputPresence) whose epochs the role belongs to: it runs
	// once per epoch, named eventlog.Epoched(Name, epoch).
	Output string
	// Replay says how it is replayed; RebuiltBy names the role whose
	// rebuild rebuilds it (Replay WithWriter).
	Replay    Replay
	RebuiltBy string
	// Verify checks its state in the store against the log (lc carries
	// the epochs the node reads); nil: not verified.
	Verify func(ctx context.Context, lc eventlog.Config, st verify.Store, rules verify.Rules) (verify.Report, error)
	// OldEpochsRun: its instances of older epochs keep running after a
	// switch (the inbox projection, so that the store holds every entry
	// of an old epoch a device may come back with).
	OldEpochsRun bool
	// restartWhenCurrent: run with current false while its epoch is
	// rebuilt, it is started again with current true at the switch.
	restartWhenCurrent bool
	// run returns the role's body in lc's epochs; current is false while
	// its epoch is being rebuilt and not yet switched to. Nil for the
	// gateway, whose parts the node runs itself.
	run func(n *Node, lc eventlog.Config, current bool) func(context.Context) error
}

// Table is every role a node can run, in the order a node starts them.
// It is the only place a role's name is bound to what the role does; the
// names themselves are the projection packages' Name constants (their
// positions and groups are named by them) and, for the gateway,
// GatewayRole. TestRoleNamesOnlyInTable holds the rest of the module to it.
var Table = []*Role{
	{
		Name: history.Name, Doc: "channels, members and messages in the store",
		Input:  func(t eventlog.Topics) string { return t.Channels },
		Replay: Rewind, Verify: verifyWith(history.Name),
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			return n.projector(history.Name, lc.Topics().Channels, lc, func() projector.Handler { return history.New(n.st, n.cfg.Limits, n.log) })
		},
	},
	{
		Name: cursors.Name, Doc: "device positions and read marks in the store",
		Input:  func(t eventlog.Topics) string { return t.Sessions },
		Replay: Rewind, Verify: verifyWith(cursors.Name),
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			// Nobody waits on the cursors: fetches gather acks.
			return n.projectorGathering(cursors.Name, lc.Topics().Sessions, lc, eventlog.GatherWait, func() projector.Handler { return cursors.New(n.st, n.log) })
		},
	},
	{
		Name: sends.Name, Doc: "decides each send once: its message.sent and the gateway's answer, exactly once",
		Input:  func(t eventlog.Topics) string { return t.Sends },
		Replay: NotReplayed, Verify: verifyWith(sends.Name),
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			return func(ctx context.Context) error {
				return runWorkers(ctx, min(n.cfg.SendsWorkers, n.cfg.Partitions), func(ctx context.Context, i int) error {
					p, err := sends.New(sends.Config{Log: lc, InstanceID: workerInstance(n.instance, i), Mended: n.sendsMended, Logger: n.log}, n.st)
					if err != nil {
						return err
					}
					return p.Run(ctx)
				})
			}
		},
	},
	{
		Name: fanout.Name, Doc: "one inbox entry per recipient, exactly once, to the inbox topic of its epoch",
		Input:  func(t eventlog.Topics) string { return t.Channels },
		Output: domain.OutputInbox, Replay: Rebuild, Verify: verifyWith(fanout.Name),
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			return func(ctx context.Context) error {
				fan, err := fanout.New(fanout.Config{Log: lc, Limits: n.cfg.Limits, InstanceID: n.instance, Logger: n.log})
				if err != nil {
					return err
				}
				return fan.Run(ctx)
			}
		},
	},
	{
		Name: inbox.Name, Doc: "each user's inbox of an epoch in the store",
		Input:  func(t eventlog.Topics) string { return t.Inbox },
		Output: domain.OutputInbox, Replay: WithWriter, RebuiltBy: fanout.Name, OldEpochsRun: true,
		Verify: verifyWith(inbox.Name),
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			return n.projector(eventlog.Epoched(inbox.Name, lc.Epoch()), lc.Topics().Inbox, lc, func() projector.Handler { return inbox.New(n.st, lc.Epoch(), n.decoded, n.log) })
		},
	},
	{
		Name: push.Name, Doc: "push notifications for recipients with no online device",
		Input:  func(t eventlog.Topics) string { return t.Inbox },
		Output: domain.OutputInbox, Replay: Rewind,
		run: func(n *Node, lc eventlog.Config, _ bool) func(context.Context) error {
			// Push keeps each entry until it is due (a projector.Holder)
			// and reads the inbox as it comes, its fetches gathering
			// (nobody waits on push's position: its batches need not be
			// small, only steady).
			return n.projectorGathering(eventlog.Epoched(push.Name, lc.Epoch()), lc.Topics().Inbox, lc, eventlog.GatherWait, func() projector.Handler {
				return push.New(push.Config{Epoch: lc.Epoch(), Delay: n.cfg.PushDelay, MaxAge: n.cfg.PushMaxAge, Decoded: n.decoded, Outcomes: n.pushOutcomes, Logger: n.log},
					n.st, n.texts, n.presenceTail, n.sender)
			})
		},
	},
	{
		Name: presence.Name, Doc: "online/offline from heartbeats, exactly once, to the presence topic of its epoch",
		Input:  func(t eventlog.Topics) string { return t.Sessions },
		Output: domain.OutputPresence, Replay: Rebuild, restartWhenCurrent: true,
		Verify: verifyWith(presence.Name),
		// Only the current epoch's projection puts time on the log
		// (clock ticks); a rebuild reads them.
		run: func(n *Node, lc eventlog.Config, current bool) func(context.Context) error {
			return func(ctx context.Context) error {
				tick := min(time.Second, n.cfg.PresenceWindow/4)
				if !current {
					tick = -1
				}
				pres, err := presence.New(presence.Config{Log: lc, Window: n.cfg.PresenceWindow, Tick: tick, Instance: n.instance, Logger: n.log})
				if err != nil {
					return err
				}
				return pres.Run(ctx)
			}
		},
	},
	{
		Name: GatewayRole, Doc: "the REST API and the WebSocket gateway: sends, the inbox tailer, the presence tail, heartbeats",
	},
}

// GatewayRole is the gateway's name in Table.
const GatewayRole = "gateway"

// RoleNamed returns the role of Table named name, or nil.
func RoleNamed(name string) *Role {
	for _, r := range Table {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// RoleNames returns the names of Table's roles, in its order; with a
// filter, those it keeps.
func RoleNames(keep ...func(*Role) bool) []string {
	var out []string
	for _, r := range Table {
		if len(keep) == 0 || keep[0](r) {
			out = append(out, r.Name)
		}
	}
	return out
}

// Replayable and Verifiable are filters for RoleNames.
func Replayable(r *Role) bool { return r.Replay == Rewind || r.Replay == Rebuild }
func Verifiable(r *Role) bool { return r.Verify != nil }

// task is the name of the goroutine that runs r in lc's epochs (its
// positions' and consumer group's name too).
func (r *Role) task(lc eventlog.Config) string {
	if r.Output == "" {
		return r.Name
	}
	return eventlog.Epoched(r.Name, eventlog.EpochOf(lc, r.Output))
}

func verifyWith(name string) func(context.Context, eventlog.Config, verify.Store, verify.Rules) (verify.Report, error) {
	return func(ctx context.Context, lc eventlog.Config, st verify.Store, rules verify.Rules) (verify.Report, error) {
		return verify.Run(ctx, lc, st, name, rules)
	}
}

// projector runs a store-positioned projection, positions under name.
func (n *Node) projector(name, topic string, lc eventlog.Config, handler func() projector.Handler) func(context.Context) error {
	return n.projectorGathering(name, topic, lc, 0, handler)
}

// projectorGathering is projector for a projection whose fetches gather
// records for up to gather (projector.Config.Gather).
func (n *Node) projectorGathering(name, topic string, lc eventlog.Config, gather time.Duration, handler func() projector.Handler) func(context.Context) error {
	return func(ctx context.Context) error {
		return projector.Run(ctx, projector.Config{Name: name, Topic: topic, Log: lc, Instance: n.instance, Gather: gather, Logger: n.log}, n.st, handler())
	}
}

// runWorkers runs n copies of run, each with its number (0 to n-1), and
// returns when all have returned: the first error, after it cancelled the
// others.
func runWorkers(ctx context.Context, n int, run func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- run(ctx, i) }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// workerInstance names worker i of a process for its group membership and
// transactional id: worker 0 keeps the process's instance, so a process
// that ran one worker before fences its own old transactions.
func workerInstance(instance string, i int) string {
	if i == 0 {
		return instance
	}
	return instance + "-w" + strconv.Itoa(i)
}
