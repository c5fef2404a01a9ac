#!/usr/bin/env bash
# Start/stop both evchat test servers: Kafka (KRaft) and Cassandra, on 127.0.0.1.
#
#   deploy/servers.sh start    fetch (cached) + start both; prints on stdout:
#                                export EVCHAT_KAFKA=127.0.0.1:9092
#                                export EVCHAT_CASSANDRA=127.0.0.1:9042
#                              so `eval "$(deploy/servers.sh start)"` sets them.
#                              If one fails, the other is stopped again; exit non-zero.
#   deploy/servers.sh status   exit 0 only if both answer
#   deploy/servers.sh stop     stop both (by pidfile) and remove their data
#
# Progress and logs go to stderr. See deploy/README.md.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

start() {
  local k c
  k="$("$HERE/kafka.sh" start)" || { "$HERE/kafka.sh" stop >&2 || true; exit 1; }
  c="$("$HERE/cassandra.sh" start)" || {
    "$HERE/cassandra.sh" stop >&2 || true
    "$HERE/kafka.sh" stop >&2 || true
    exit 1
  }
  printf '%s\n%s\n' "$k" "$c"
}

status() {
  local rc=0
  "$HERE/kafka.sh" status || rc=1
  "$HERE/cassandra.sh" status || rc=1
  return $rc
}

stop() {
  local rc=0
  "$HERE/cassandra.sh" stop || rc=1
  "$HERE/kafka.sh" stop || rc=1
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 64 ;;
esac
