# shellcheck shell=bash
# Shared helpers for deploy/kafka.sh and deploy/cassandra.sh. Sourced, not run.
#
# Everything is fetched from Maven Central with the machine's `mvn` into a
# cache directory; servers run from a scratch directory and bind 127.0.0.1 only.

EVCHAT_CACHE="${EVCHAT_CACHE:-$HOME/.cache/evchat}"
EVCHAT_RUN="${EVCHAT_RUN:-/tmp/evchat-servers}"
# maven-dependency-plugin pinned: the default bound to Maven 3.8 is ancient.
EVCHAT_MVN_DEP_PLUGIN="${EVCHAT_MVN_DEP_PLUGIN:-org.apache.maven.plugins:maven-dependency-plugin:3.8.1}"
# EVCHAT_M2_REPO: optional Maven local repository (default: mvn's own, ~/.m2/repository).

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${EVCHAT_COMPONENT:-deploy}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_java() {
  command -v java >/dev/null 2>&1 || die "java not found (Java 17+ required)"
}

# mvn_fetch DIR POM_DEPENDENCIES_XML
# Writes DIR/pom.xml, copies the runtime closure into DIR/lib and writes the
# DIR/.complete marker. Does nothing when the marker matches the pom already.
mvn_fetch() {
  local dir="$1" deps="$2"
  local pom
  pom="<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<project xmlns=\"http://maven.apache.org/POM/4.0.0\">
  <modelVersion>4.0.0</modelVersion>
  <groupId>evchat.deploy</groupId>
  <artifactId>$(basename "$dir")-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
${deps}
  </dependencies>
</project>"
  local sum
  sum="$(printf '%s' "$pom" | sha256sum | cut -c1-16)"
  if [[ -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$sum" && -d "$dir/lib" ]]; then
    log "cached: $dir/lib ($(find "$dir/lib" -name '*.jar' | wc -l) jars), not downloading"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found"
  mkdir -p "$dir"
  rm -rf "$dir/lib" "$dir/.complete"
  printf '%s\n' "$pom" > "$dir/pom.xml"
  log "fetching from Maven Central into $dir/lib ..."
  local t0=$SECONDS
  local repo_opt=()
  [[ -n "${EVCHAT_M2_REPO:-}" ]] && repo_opt=("-Dmaven.repo.local=$EVCHAT_M2_REPO")
  if ! mvn -B -q "${repo_opt[@]}" -f "$dir/pom.xml" "${EVCHAT_MVN_DEP_PLUGIN}:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$dir/lib" >"$dir/mvn.log" 2>&1; then
    tail -n 40 "$dir/mvn.log" >&2
    die "mvn dependency:copy-dependencies failed (full log: $dir/mvn.log)"
  fi
  printf '%s\n' "$sum" > "$dir/.complete"
  log "fetched $(find "$dir/lib" -name '*.jar' | wc -l) jars in $((SECONDS - t0))s"
}

# pid_alive PIDFILE -> 0 if the pid in PIDFILE is a running process whose
# command line still mentions the pidfile's directory (guards against a
# recycled pid: we never signal a process we did not start).
pid_alive() {
  local pf="$1" pid
  [[ -f "$pf" ]] || return 1
  pid="$(cat "$pf" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(dirname "$pf")" || return 1
  fi
  return 0
}

# port_open PORT -> 0 if something accepts TCP on 127.0.0.1:PORT
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_pid PIDFILE NAME [TIMEOUT_S]: SIGTERM the pid in PIDFILE, wait, SIGKILL if needed.
stop_pid() {
  local pf="$1" name="$2" timeout="${3:-60}" pid i
  if ! pid_alive "$pf"; then
    log "$name not running"
    rm -f "$pf"
    return 0
  fi
  pid="$(cat "$pf")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not exit after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$pf"
  log "$name stopped"
}

# kill_pid PIDFILE NAME: SIGKILL the pid in PIDFILE (a crash: nothing is
# flushed or closed), wait until it is gone, keep the data for `restart`.
kill_pid() {
  local pf="$1" name="$2" pid i
  if ! pid_alive "$pf"; then
    log "$name not running"
    rm -f "$pf"
    return 0
  fi
  pid="$(cat "$pf")"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    die "$name (pid $pid) still alive 15s after SIGKILL"
  fi
  rm -f "$pf"
  log "$name killed (pid $pid, SIGKILL); its data is kept"
}

# fail_start NAME LOGFILE...: print the tails of the logs and exit non-zero
fail_start() {
  local name="$1"; shift
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    echo "----- last 60 lines of $f -----" >&2
    tail -n 60 "$f" >&2
  done
  die "$name failed to start"
}
