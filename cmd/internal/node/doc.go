// Package node runs one chatd process: the roles of its Config over the
// log and the store, started by Run and stopped when its context ends.
// cmd/chatd parses flags into a Config; tests start a node in-process with
// New and Run (see runNode in node_test.go, and cmd/chatd's end-to-end
// harness, which runs most of its nodes so), and as a child process only
// where they need kill -9, a process's own limits, memory or descriptors,
// or several processes. Run keeps no state outside the Node: each node has
// its own Prometheus registry, HTTP muxes, logger and secret, so several
// run in one process. What it does change for the whole process is the
// umask (0077, so that the data directory is its user's alone), the same
// for every node.
//
// Table names every role once: each projection (history, cursors, fanout,
// inbox, push, presence) and the gateway, with its input topic, the output
// whose epochs it belongs to, how it is replayed (rewound in place, or
// rebuilt into its output's next epoch) and how it is verified. Startup,
// the epoch switch, the admin endpoints (replay, verify), the projection
// lag metric's labels and the help texts read it; TestRoleNamesOnlyInTable
// fails when a role's name is written anywhere else. Config.Roles (chatd
// --roles) runs some roles only, so a deployment can run gateways and
// projection workers apart.
//
// The package sits under cmd/ because it wires gateway/ and projections/
// together (under either, one would depend on the other), and under
// internal/ so that it is no API of the module.
//
// Goroutines: every long-running part runs as a task started through
// tasks (tasks.go), which labels it, tracks it and waits for it; the first
// task to fail cancels the node. A task is a role of Table (per epoch,
// "fanout.e2"), or a part of the gateway (the HTTP server, tailer.eN, the
// presence tail, heartbeats, the logout tail), or the epochs watcher, the admin server and
// a replay's follower. A replay stops and starts one task; an epoch switch
// starts the new epoch's tasks and stops the old ones.
//
// Lock order: Node.mu (the current epochs; taken by the epoch switch,
// which then starts and stops tasks), then tasks.mu. The epoch switch does
// its network work (the new tailer's start positions) before it takes
// Node.mu.
package node
