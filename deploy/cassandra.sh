#!/usr/bin/env bash
# Real Apache Cassandra 5.0.x (single node) on 127.0.0.1, run from the
# cassandra-all jar and its dependencies as fetched from Maven Central.
#
#   deploy/cassandra.sh fetch    download jars from Maven Central (cached), compile the CQL probe
#   deploy/cassandra.sh start    generate cassandra.yaml + logback.xml, start, wait for a CQL answer
#   deploy/cassandra.sh restart  start again on the data left by a kill (no wipe)
#   deploy/cassandra.sh kill     kill -9 by pidfile, keep the data (a crash, for chaos tests)
#   deploy/cassandra.sh status   exit 0 and print the release version if a CQL query succeeds
#   deploy/cassandra.sh stop     stop by pidfile, remove the data directory
#   deploy/cassandra.sh smoke    create keyspace+table, write+read at QUORUM, drop (needs a running node)
#   deploy/cassandra.sh nodetool ARGS...   e.g. `nodetool status` over JMX on 127.0.0.1:7199
#
# Env: EVCHAT_CASSANDRA_VERSION (default 5.0.9), EVCHAT_CASSANDRA_PORT (CQL, 9042),
#      EVCHAT_CASSANDRA_STORAGE_PORT (7000), EVCHAT_CASSANDRA_JMX_PORT (7199),
#      EVCHAT_CASSANDRA_HEAP_MIN/MAX (1g/2g), EVCHAT_CASSANDRA_START_TIMEOUT (s, 180),
#      EVCHAT_CACHE, EVCHAT_RUN.
#
# Durability: commitlog_sync is periodic with commitlog_sync_period 10000ms (the
# Cassandra default): a write is acknowledged once it is in the commit log
# buffer/mmap segment and fsynced at most 10s later. Replay after a crash reads
# a segment only up to its last sync marker, which the syncer writes every
# 100 ms (uncompressed commit log) between fsyncs: a kill -9 of the process
# loses the acknowledged writes after the last marker (~100 ms, more when the
# syncer lags on a loaded machine), a machine power loss up to ~10s. The
# projector copes (it checks the store's positions before every batch, see
# projections/projector); use commitlog_sync: batch (or group) for
# fsync-before-ack. Group commit (10 ms) was tried: on this loaded 2-core
# machine the parallel tests' schema migrations then timed out in CI, so the
# test server keeps the default.
# With one node every keyspace must use replication factor 1 (SimpleStrategy
# rf 1, or NetworkTopologyStrategy {'datacenter1': 1}); QUORUM/LOCAL_QUORUM/ONE
# all mean "this node". Data lives under $EVCHAT_RUN and is deleted on stop.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EVCHAT_COMPONENT=cassandra
# shellcheck source=lib.sh
source "$HERE/lib.sh"

CASSANDRA_VERSION="${EVCHAT_CASSANDRA_VERSION:-5.0.9}"
PORT="${EVCHAT_CASSANDRA_PORT:-9042}"
SPORT="${EVCHAT_CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${EVCHAT_CASSANDRA_JMX_PORT:-7199}"
HEAP_MIN="${EVCHAT_CASSANDRA_HEAP_MIN:-1g}"
HEAP_MAX="${EVCHAT_CASSANDRA_HEAP_MAX:-2g}"
TIMEOUT="${EVCHAT_CASSANDRA_START_TIMEOUT:-180}"

CACHE_DIR="$EVCHAT_CACHE/cassandra-$CASSANDRA_VERSION"
PROBE_DIR="$CACHE_DIR/probe"
RUN_DIR="$EVCHAT_RUN/cassandra"
PIDFILE="$RUN_DIR/cassandra.pid"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
CONF="$RUN_DIR/cassandra.yaml"

fetch() {
  need_java
  mvn_fetch "$CACHE_DIR" "
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>$CASSANDRA_VERSION</version></dependency>"
  if [[ ! -f "$PROBE_DIR/CqlProbe.class" || "$HERE/CqlProbe.java" -nt "$PROBE_DIR/CqlProbe.class" ]]; then
    if command -v javac >/dev/null 2>&1; then
      mkdir -p "$PROBE_DIR"
      javac -nowarn -d "$PROBE_DIR" -cp "$(classpath)" "$HERE/CqlProbe.java" \
        || die "javac CqlProbe.java failed"
      log "compiled CQL probe into $PROBE_DIR"
    else
      log "javac not found: health checks will use nodetool statusbinary instead of a CQL query"
    fi
  fi
  cat >"$CACHE_DIR/probe-logback.xml" <<'XML'
<configuration>
  <appender name="ERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="ERROR"><appender-ref ref="ERR"/></root>
</configuration>
XML
}

classpath() { printf '%s/lib/*' "$CACHE_DIR"; }

jamm_jar() {
  local j
  j="$(find "$CACHE_DIR/lib" -maxdepth 1 -name 'jamm-*.jar' | head -n1)"
  [[ -n "$j" ]] || die "jamm jar missing from $CACHE_DIR/lib"
  printf '%s' "$j"
}

# JPMS flags of conf/jvm17-clients.options (nodetool and the other tools need them on Java 17).
jvm17_client_opts=(
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
  --add-exports java.base/sun.nio.ch=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.math=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens java.base/java.net=ALL-UNNAMED
)

# JVM flags: conf/jvm-server.options + conf/jvm17-server.options of Cassandra 5.0
# (the JPMS --add-exports/--add-opens list is mandatory on Java 17). The few
# extra opens of jvm17-clients.options (java.util.concurrent*, java.math,
# java.net: used by jamm) are added too; they are harmless.
jvm17_opts=(
  -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
  -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
  --add-exports java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens java.base/java.math=ALL-UNNAMED
  --add-opens java.base/java.net=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
  -Dio.netty.allocator.useCacheForAllThreads=true
  -Dio.netty.allocator.maxOrder=11
  -ea -da:net.openhft...
  -XX:+UseThreadPriorities -XX:+ExitOnOutOfMemoryError -Xss256k
  -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem -Djava.net.preferIPv4Stack=true
)

write_config() {
  mkdir -p "$DATA_DIR"/{data,commitlog,saved_caches,hints,cdc_raw,triggers} "$LOG_DIR"
  cat >"$CONF" <<YAML
# generated by deploy/cassandra.sh - single node, 127.0.0.1 only, Cassandra 5.0 names
cluster_name: evchat
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
storage_compatibility_mode: NONE
auto_bootstrap: false
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $SPORT
start_native_transport: true
native_transport_port: $PORT
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$SPORT"
endpoint_snitch: SimpleSnitch
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - $DATA_DIR/data
commitlog_directory: $DATA_DIR/commitlog
saved_caches_directory: $DATA_DIR/saved_caches
hints_directory: $DATA_DIR/hints
cdc_raw_directory: $DATA_DIR/cdc_raw
# Durability (see header): periodic fsync of the commit log every 10s.
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
disk_failure_policy: stop
commit_failure_policy: stop
# Small machine (2 cores): keep thread pools and memory small.
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_materialized_view_writes: 8
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
compaction_throughput: 64MiB/s
hinted_handoff_enabled: false
dynamic_snitch: false
read_request_timeout: 10000ms
write_request_timeout: 5000ms
request_timeout: 20000ms
materialized_views_enabled: false
sasi_indexes_enabled: false
YAML
  cat >"$RUN_DIR/logback.xml" <<XML
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$LOG_DIR/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <appender name="ASYNC" class="ch.qos.logback.classic.AsyncAppender">
    <queueSize>1024</queueSize>
    <appender-ref ref="FILE"/>
  </appender>
  <root level="INFO"><appender-ref ref="ASYNC"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
XML
}

# One real round-trip: SELECT from system.local over the native protocol
# (falls back to nodetool statusbinary if the probe could not be compiled).
probe() {
  if [[ -f "$PROBE_DIR/CqlProbe.class" ]]; then
    timeout 40 java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
      -Dlogback.configurationFile="$CACHE_DIR/probe-logback.xml" \
      -cp "$(classpath):$PROBE_DIR" CqlProbe 127.0.0.1 "$PORT" "$@" 2>>"$LOG_DIR/probe.log"
  else
    local out
    out="$(nodetool statusbinary 2>>"$LOG_DIR/probe.log")" || return 1
    [[ "$out" == *running* ]] && echo "statusbinary: $out"
  fi
}

nodetool() {
  timeout 60 java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${jvm17_client_opts[@]}" \
    -Dlogback.configurationFile="$CACHE_DIR/probe-logback.xml" \
    -Dcassandra.storagedir="$DATA_DIR" \
    -cp "$(classpath)" org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$JMX_PORT" "$@"
}

start() {
  need_java
  if pid_alive "$PIDFILE"; then
    log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    echo "export EVCHAT_CASSANDRA=127.0.0.1:$PORT"
    return 0
  fi
  check_ports
  fetch
  local t0=$SECONDS
  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  write_config
  launch "$t0"
}

# restart: start again on the data a previous start left (after `kill`, a
# crash or a kill -9): no wipe, the same config; the commit log is replayed.
restart() {
  need_java
  if pid_alive "$PIDFILE"; then
    log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    echo "export EVCHAT_CASSANDRA=127.0.0.1:$PORT"
    return 0
  fi
  [[ -f "$CONF" && -d "$DATA_DIR" ]] || die "nothing to restart: no $CONF (run start first)"
  check_ports
  launch "$SECONDS"
}

check_ports() {
  local p
  for p in "$PORT" "$SPORT" "$JMX_PORT"; do
    port_open "$p" && die "127.0.0.1:$p is already in use by another process"
  done
  return 0
}

# launch T0: start the JVM in the background and wait for a CQL answer.
launch() {
  local t0="$1"
  log "starting Cassandra $CASSANDRA_VERSION on 127.0.0.1:$PORT (storage :$SPORT, jmx :$JMX_PORT), logs in $LOG_DIR"
  setsid java -Xms"$HEAP_MIN" -Xmx"$HEAP_MAX" "${jvm17_opts[@]}" \
    -javaagent:"$(jamm_jar)" \
    -Dcassandra.config="file://$CONF" \
    -Dcassandra.storagedir="$DATA_DIR" \
    -Dcassandra.logdir="$LOG_DIR" \
    -Dcassandra.triggers_dir="$DATA_DIR/triggers" \
    -Dlogback.configurationFile="$RUN_DIR/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.jmx.local.port="$JMX_PORT" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=1000 \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra.migration_task_wait_in_seconds=1 \
    -cp "$(classpath)" org.apache.cassandra.service.CassandraDaemon \
    >>"$LOG_DIR/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PIDFILE"
  local deadline=$((SECONDS + TIMEOUT)) out=""
  while ((SECONDS < deadline)); do
    # plain kill -0: right after the fork /proc/PID/cmdline may not show java yet
    kill -0 "$pid" 2>/dev/null || fail_start cassandra "$LOG_DIR/stdout.log" "$LOG_DIR/system.log"
    if port_open "$PORT" && out="$(probe)" && [[ -n "$out" ]]; then
      log "ready after $((SECONDS - t0))s (CQL: $out, pid $(cat "$PIDFILE"))"
      echo "export EVCHAT_CASSANDRA=127.0.0.1:$PORT"
      return 0
    fi
    sleep 1
  done
  log "timed out after ${TIMEOUT}s waiting for a CQL answer on 127.0.0.1:$PORT"
  stop_pid "$PIDFILE" cassandra 20
  fail_start cassandra "$LOG_DIR/stdout.log" "$LOG_DIR/system.log" "$LOG_DIR/probe.log"
}

status() {
  if ! pid_alive "$PIDFILE"; then
    log "not running"
    return 1
  fi
  local out
  if out="$(probe)" && [[ -n "$out" ]]; then
    log "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT, CQL: $out"
    return 0
  fi
  log "process $(cat "$PIDFILE") is alive but does not answer CQL on 127.0.0.1:$PORT"
  return 2
}

stop() {
  stop_pid "$PIDFILE" cassandra 90
  rm -rf "$RUN_DIR"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  restart) restart ;;
  kill) kill_pid "$PIDFILE" cassandra ;;
  stop) stop ;;
  status) status ;;
  nodetool) shift; nodetool "$@" ;;
  smoke) fetch >/dev/null; mkdir -p "$LOG_DIR"; probe smoke ;;
  drop-keyspace) fetch >/dev/null; mkdir -p "$LOG_DIR"; probe drop "${2:?keyspace}" ;;
  *) echo "usage: $0 {fetch|start|restart|kill|stop|status|smoke|drop-keyspace NAME|nodetool ARGS...}" >&2; exit 64 ;;
esac
