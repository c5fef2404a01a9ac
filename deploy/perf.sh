#!/usr/bin/env bash
# Reproduce the performance figures, one command each:
#
#   bash deploy/perf.sh idle  [embedded|real]   # ~20,000 idle WebSocket connections, memory per connection
#   bash deploy/perf.sh rate  [embedded|real]   # 2,000 messages/s into groups of 10 for 60 s, send→deliver latency
#   bash deploy/perf.sh bench                   # the testing.B benchmarks of the hot paths and the stores
#   bash deploy/perf.sh pairs BASE [embedded|real]  # rate runs of BASE and of this tree, alternated
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
#
# The pairs mode compares two builds on a machine whose speed drifts (the
# same build has measured four times slower an hour later here): it checks
# out BASE (any git revision) into a worktree and runs the rate mode of
# BASE and of this tree in turn, EVCHAT_PERF_PAIRS times (default 3), the
# order swapped every pair, each run under $EVCHAT_PERF_OUT/<build>-<pair>.
# Extra arguments go to every run's load generator, the environment
# (EVCHAT_PERF_PORT, EVCHAT_PERF_CHATD_ARGS, ...) to every run. It ends with
# a table of the runs (pairs.txt) and says in how many pairs the new build's
# deliver p99 was the lower. Compare pairs, not runs an hour apart.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-}"
out="${EVCHAT_PERF_OUT:-/tmp/evchat-perf}"
mkdir -p "$out"

if [[ "$mode" == pairs ]]; then
  base="${2:-}"; backend="${3:-embedded}"; skip=3
  [[ "$backend" == -* ]] && { backend=embedded; skip=2; } # flags straight after BASE
  if [[ -z "$base" || "$base" == -* || ( "$backend" != embedded && "$backend" != real ) ]]; then
    echo "usage: $0 pairs <base revision> [embedded|real] [loadgen flags]" >&2; exit 64
  fi
  shift $(( $# > skip ? skip : $# ))
  rev="$(git rev-parse --verify --quiet "$base^{commit}")" || { echo "perf: $base is not a revision of this repository" >&2; exit 64; }
  pairs="${EVCHAT_PERF_PAIRS:-3}"
  [[ "$pairs" =~ ^[1-9][0-9]*$ ]] || { echo "perf: EVCHAT_PERF_PAIRS=$pairs: want a positive count" >&2; exit 64; }
  command -v python3 >/dev/null || { echo "perf: the pairs mode needs python3 for its table" >&2; exit 69; }
  src="$(mktemp -d "$out/base-src.XXXX")"
  git worktree add --detach --quiet "$src" "$rev"
  trap 'git worktree remove --force "$src"' EXIT
  for i in $(seq "$pairs"); do
    builds=(base new); (( i % 2 == 0 )) && builds=(new base)
    for b in "${builds[@]}"; do
      tree=.; [[ "$b" == base ]] && tree="$src"
      echo "perf: pair $i of $pairs, the $b build ($out/$b-$i.log)" >&2
      rc=0
      EVCHAT_PERF_OUT="$out/$b-$i" EVCHAT_PERF_PROFILE= bash "$tree/deploy/perf.sh" rate "$backend" "$@" >"$out/$b-$i.log" 2>&1 || rc=$?
      (( rc == 0 )) || echo "perf: the $b run of pair $i exited $rc (a load generator that counts lost or duplicated messages exits non-zero): see its log" >&2
    done
  done
  python3 - "$out" "$pairs" "$backend" "$rev" <<'PY' | tee "$out/pairs.txt"
import json, os, sys
out, pairs, backend, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def run(b, i):
    d = os.path.join(out, f"{b}-{i}")
    try:
        load = json.load(open(os.path.join(d, f"rate-{backend}.json")))["load"]
    except (OSError, ValueError, KeyError):
        return None
    frames = drains = None
    try:
        for line in open(os.path.join(d, f"metrics-rate-{backend}.txt")):
            if line.startswith("evchat_ws_frames_written_total "): frames = float(line.split()[1])
            if line.startswith("evchat_ws_drains_total "): drains = float(line.split()[1])
    except OSError:
        pass
    load["frames_per_drain"] = frames / drains if frames and drains else None
    return load
ms = lambda us: f"{us / 1000:.1f}"
print(f"base {rev[:12]} against this tree, {backend}, {pairs} pairs (the order swapped every pair)")
print("| pair | build | deliver p50 / p99 ms | ack p50 / p99 ms | chatd cores | load generator cores | lost | duplicated | frames per drain |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
lower = compared = 0
for i in range(1, pairs + 1):
    got = {}
    for b in (("base", "new") if i % 2 else ("new", "base")):
        r = got[b] = run(b, i)
        if r is None:
            print(f"| {i} | {b} | no result | | | | | | |")
            continue
        d, a, f = r["send_to_deliver"], r["send_to_ack"], r["frames_per_drain"]
        print(f"| {i} | {b} | {ms(d['p50_us'])} / {ms(d['p99_us'])} | {ms(a['p50_us'])} / {ms(a['p99_us'])} | "
              f"{r['server_cpu_cores']:.2f} | {r['loadgen_cpu_cores']:.2f} | {r['lost_messages']} | {r['duplicates']} | "
              f"{'' if f is None else f'{f:.2f}'} |")
    if got["base"] and got["new"]:
        compared += 1
        lower += got["new"]["send_to_deliver"]["p99_us"] < got["base"]["send_to_deliver"]["p99_us"]
print(f"\nthe new build's deliver p99 was the lower in {lower} of {compared} pairs")
PY
  exit 0
fi

backend="${2:-embedded}"; shift $(( $# > 2 ? 2 : $# )) || true

if [[ "$mode" == bench ]]; then
  eval "$(bash deploy/servers.sh start)"
  export EVCHAT_KAFKA EVCHAT_CASSANDRA
  go test -run x -bench . -benchtime 2000x ./domain/ ./gateway/ws/ ./projections/fanout/ | tee "$out/bench-hot.txt"
  go test -run x -bench . -benchtime 500x ./projections/store/... | tee "$out/bench-store.txt"
  go test -run x -bench SendDeliver -benchtime 2000x ./cmd/chatd/ | tee "$out/bench-send.txt"
  exit 0
fi
case "$mode" in idle|rate) ;; *) echo "usage: $0 idle|rate [embedded|real] [loadgen flags] | bench | pairs <base revision> [embedded|real] [loadgen flags]" >&2; exit 64 ;; esac

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
