// Package cql embeds the Cassandra schema of the store: the versioned CQL
// files NNN_name.cql in this directory. The migrate step of
// projections/store/cassandra applies them in order of their version; it
// lives there because a Go embed pattern cannot reach a parent directory.
package cql

import "embed"

// FS holds the CQL files, NNN_name.cql, where NNN is the version.
//
//go:embed *.cql
var FS embed.FS
