#!/usr/bin/env bash
# The test command: everything the tests need, from scratch, then every test.
#
#   bash deploy/test.sh
#
# 1. gofmt, go vet and staticcheck (fetched from the Go module proxy on
#    first use);
# 2. starts a real Kafka (KRaft) and a real Cassandra 5.0 on 127.0.0.1 with
#    deploy/servers.sh (jars fetched from Maven Central and cached), and
#    stops them again on exit, whatever happens;
# 3. go test -race over the whole module: unit tests, fuzz seed corpora, the
#    store contract suite on Pebble and on Cassandra, and the end-to-end
#    suite on the embedded default and on real Kafka plus Cassandra.
#
# 4. TestChaosServers (build tag chaosservers): a Kafka and a Cassandra of
#    its own (ports 19092, 19093, 19042, 17000, 17199), killed -9 with chatd
#    nodes during a burst; see deploy/README.md. It runs after the rest, on
#    a full run only (no arguments): about 10 minutes here.
#
# If a server cannot start, the run fails with the server's own log; the
# tests that need it never skip here (CI=true makes them fail instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CI="${CI:-true}"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)" >&2; }

step "gofmt"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
  echo "test.sh: gofmt would change these files (run gofmt -w):" >&2
  echo "$unformatted" >&2
  exit 1
fi

step "go vet"
go vet ./...
go vet -tags chaosservers ./cmd/chatd

step "staticcheck"
go run "honnef.co/go/tools/cmd/staticcheck@v0.8.2" -tags chaosservers ./...

step "real servers"
trap 'step "stopping servers"; bash deploy/servers.sh stop >&2 || true' EXIT
env_lines="$(bash deploy/servers.sh start)" || { echo "test.sh: the real servers did not start (their logs are above)" >&2; exit 1; }
eval "$env_lines"
echo "$env_lines" >&2

step "go test -race"
go test -race -count=1 -timeout 40m "$@" ./...

if [[ $# -eq 0 ]]; then
  step "TestChaosServers"
  go test -race -count=1 -tags chaosservers -timeout 40m -run '^TestChaosServers$' ./cmd/chatd
fi
