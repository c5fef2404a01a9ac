// Package domain holds the chat's rules as pure functions: identifiers,
// commands, events, the event envelope and its codec, and the decisions that
// turn a command and a channel's state into events.
//
// Nothing here does I/O or reads a clock or an ID generator: time and new ids
// are passed in as values, so every rule is a table test. The gateway calls
// Decide before it appends to the log; projections call Admit and Evolve as
// they read the log, so the log's order, not any process's view, settles
// races such as two members added to an almost full group at once.
package domain
