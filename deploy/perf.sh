#!/usr/bin/env bash
# Reproduce the performance figures, one command each:
#
#   bash deploy/perf.sh idle  [embedded|real]   # ~20,000 idle WebSocket connections, memory per connection
#   bash deploy/perf.sh rate  [embedded|real]   # 2,000 messages/s into groups of 10 for 60 s, send→deliver latency
#   bash deploy/perf.sh bench                   # the testing.B benchmarks of the hot paths and the stores
#
# With EVCHAT_PERF_PROFILE=1, the rate mode also saves a 15 s CPU profile and
# an allocation profile of chatd (cpu-rate-<backend>.pprof, allocs-...).
#
# It builds chatd and the load generator, starts chatd on 127.0.0.1 with a
# fresh data directory (embedded default, or against the Kafka and
# Cassandra of deploy/servers.sh, which it starts if needed), runs
# cmd/loadgen against it, writes the JSON result next to the human summary
# under $EVCHAT_PERF_OUT (default /tmp/evchat-perf), and stops chatd by its
# pid. Extra arguments after the mode and backend go to the load generator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-}"; backend="${2:-embedded}"; shift $(( $# > 2 ? 2 : $# )) || true
out="${EVCHAT_PERF_OUT:-/tmp/evchat-perf}"
mkdir -p "$out"

if [[ "$mode" == bench ]]; then
  eval "$(bash deploy/servers.sh start)"
  export EVCHAT_KAFKA EVCHAT_CASSANDRA
  go test -run x -bench . -benchtime 2000x ./domain/ ./gateway/ws/ ./projections/fanout/ | tee "$out/bench-hot.txt"
  go test -run x -bench . -benchtime 500x ./projections/store/... | tee "$out/bench-store.txt"
  go test -run x -bench SendDeliver -benchtime 2000x ./cmd/chatd/ | tee "$out/bench-send.txt"
  exit 0
fi
case "$mode" in idle|rate) ;; *) echo "usage: $0 idle|rate [embedded|real] [loadgen flags] | bench" >&2; exit 64 ;; esac

go build -o "$out/chatd" ./cmd/chatd
go build -o "$out/loadgen" ./cmd/loadgen
# EVCHAT_PERF_PORT: chatd's HTTP port (default 18471); its admin port is two above.
port="${EVCHAT_PERF_PORT:-18471}"; admin=$((port + 2)); data="$(mktemp -d "$out/data.XXXX")"
# Capacity, not abuse: the per-user send rate limits are lifted.
args=(--http "127.0.0.1:$port" --data "$data" --log-level warn --admin "127.0.0.1:$admin" --send-rate 1e9 --send-burst 1000000000)
# The idle mode opens 20 connections per device token (80 per user).
[[ "$mode" == idle ]] && args+=(--ws-max-per-user 100 --ws-max-per-device 25)
if [[ "$backend" == real ]]; then
  eval "$(bash deploy/servers.sh start)"
  args+=(--kafka "$EVCHAT_KAFKA" --cassandra "$EVCHAT_CASSANDRA" --keyspace "perf_$$" --topic-prefix "perf$$")
fi
# EVCHAT_PERF_CHATD_ARGS: more flags for chatd (e.g. "--embedded-fsync=true").
read -r -a more <<<"${EVCHAT_PERF_CHATD_ARGS:-}"
args+=("${more[@]}")
# EVCHAT_PERF_CHATD_ENV: environment for chatd alone (e.g. "GOGC=400").
read -r -a chatd_env <<<"${EVCHAT_PERF_CHATD_ENV:-}"
env "${chatd_env[@]}" "$out/chatd" "${args[@]}" 2>"$out/chatd-$mode-$backend.log" &
pid=$!
# The real run's keyspace goes with it (topics stay: Kafka has no cheap
# delete here, and their prefix is the run's own).
cleanup() {
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"
  if [[ "$backend" == real ]]; then bash deploy/cassandra.sh drop-keyspace "perf_$$" >/dev/null || echo "perf: could not drop keyspace perf_$$" >&2; fi
}
trap cleanup EXIT
for _ in $(seq 300); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done

if [[ "$mode" == idle ]]; then
  # 250 users x 4 devices x 20 connections per device token = 20,000.
  "$out/loadgen" --server "127.0.0.1:$port" --idle --users 250 --devices 4 --conns-per-device 20 \
    --sources 4 --duration 30s --json "$out/idle-$backend.json" "$@"
else
  if [[ -n "${EVCHAT_PERF_PROFILE:-}" ]]; then
    # CPU and allocation profiles of 15 s in the middle of the run, from the
    # admin address (its token is in the data directory).
    ( tok="$(cat "$data/admin.token")"
      # 10 s into the load: once the first deliveries are counted.
      until curl -fs "127.0.0.1:$port/metrics" | grep -q '^evchat_ws_deliveries_total [1-9]'; do sleep 1; done
      sleep 10
      curl -fs -H "Authorization: Bearer $tok" -o "$out/cpu-$mode-$backend.pprof" "127.0.0.1:$admin/debug/pprof/profile?seconds=15"
      curl -fs -H "Authorization: Bearer $tok" -o "$out/allocs-$mode-$backend.pprof" "127.0.0.1:$admin/debug/pprof/allocs"
      curl -fs -H "Authorization: Bearer $tok" -o "$out/goroutines-$mode-$backend.txt" "127.0.0.1:$admin/debug/pprof/goroutine?debug=1"
    ) &
  fi
  rc=0
  "$out/loadgen" --server "127.0.0.1:$port" --users 500 --group-size 10 --rate 2000 --duration 60s \
    --warmup 5s --grace 10s --senders 32 --json "$out/rate-$backend.json" "$@" || rc=$?
  # How long the projections take, once the load generator is done, to
  # reach the end of their topics (evchat_projection_lag summed to 0 in
  # three polls a second apart; at most 180 s): a store that falls behind
  # the log shows here, not in the load generator's figures, which live
  # delivery carries.
  waited=0; zeros=0; lag=unknown
  while (( waited < 180 && zeros < 3 )); do
    if m="$(curl -fs "127.0.0.1:$port/metrics")"; then
      lag="$(awk '/^evchat_projection_lag\{/ {s += $2} END {print s + 0}' <<<"$m")"
    else
      lag=unknown
    fi
    if [[ "$lag" == 0 ]]; then zeros=$((zeros + 1)); else zeros=0; fi
    (( zeros < 3 )) && { sleep 1; waited=$((waited + 1)); }
  done
  if (( zeros == 3 )); then
    echo "perf: every projection at the end of its topic $((waited - 2)) s after the load generator's end" | tee "$out/caught-up-$backend.txt"
  else
    echo "perf: projections still $lag records behind the log 180 s after the load generator's end" | tee "$out/caught-up-$backend.txt"
  fi
  # chatd's metrics after the run, whatever its outcome: the store's and
  # the log's operation latencies, where the CPU profile does not see the
  # servers' time.
  curl -fs -o "$out/metrics-$mode-$backend.txt" "127.0.0.1:$port/metrics" || echo "perf: no metrics" >&2
  exit "$rc"
fi
