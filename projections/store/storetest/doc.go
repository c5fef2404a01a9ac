// Package storetest is the contract test suite of store.Store: every
// implementation runs Run in its own tests (and Bench in its benchmarks), so
// the embedded store and Cassandra are held to one behaviour.
//
// The suite may run against a database that its subtests, and other runs,
// share (a Cassandra keyspace): every subtest uses ids (users, names,
// channels, projections) with a random suffix of its own, and never expects
// the store to be empty.
package storetest
