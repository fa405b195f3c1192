#!/usr/bin/env bash
# Soak benchmark: mixed load (loadtest/mixed.js: Zipf hits plus new products) for DURATION
# with nobody scraping /metrics, sampling the resident memory (RSS) of every process, first
# against the release stack (scripts/run.sh: producer, 3 consumers, mock price APIs), then
# against the standalone binary. Prints one row per sample and, per process, the RSS at the
# start and the end of the load and how much it grew over its second half: a process whose
# memory is bounded levels off, so that last figure stays near zero.
#
#   scripts/bench-soak.sh                              # both phases, 5 min each
#   MODE=stack DURATION=10m RATE=5000 scripts/bench-soak.sh
#
# Knobs (env): MODE (both | stack | standalone), DURATION (5m, k6 syntax), RATE (3000
# iterations/s), CATALOGUE (2000), NEW_SHARE (0.02), SAMPLE_SECS (30), TTL_SECS (60: the
# price guarantee, short so that caches holding results reach their steady size early in the
# run; 300 in production). Needs the ports of config/default.toml free. Logs: .run/logs/ and
# .run/soak-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

MODE=${MODE:-both}
DURATION=${DURATION:-5m}
RATE=${RATE:-3000}
CATALOGUE=${CATALOGUE:-2000}
NEW_SHARE=${NEW_SHARE:-0.02}
SAMPLE_SECS=${SAMPLE_SECS:-30}
export PRICEFRONT__CACHE__TTL_SECS=${TTL_SECS:-60}
[[ $MODE =~ ^(both|stack|standalone)$ ]] || { log "MODE must be both, stack or standalone"; exit 2; }

K6=$(k6_binary)
log "building (release)"
cargo build --release --quiet --bins
bin=$TARGET_DIR/release
listen=$("$bin/admin" get producer.listen)
base="http://$listen"

stack_pid=
solo_pid=
cleanup() {
  trap '' INT TERM
  for pid in $stack_pid $solo_pid; do
    kill -TERM "$pid" 2>/dev/null || continue
    wait "$pid" 2>/dev/null || true
  done
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"; }
ready() { curl -fsS -o /dev/null --max-time 2 "$base/readyz" 2>/dev/null; }

# soak PHASE NAME=PID...: runs the load and samples the RSS of the named processes.
soak() {
  local phase=$1
  shift
  local names=() pids=() np
  for np in "$@"; do
    names+=("${np%%=*}")
    pids+=("${np#*=}")
  done
  log "$phase: mixed.js at $RATE iterations/s for $DURATION (catalogue $CATALOGUE, new share $NEW_SHARE); k6 output in $RUN_DIR/soak-$phase-k6.log"
  "$K6" run --quiet --no-color --no-usage-report --include-system-env-vars=false \
    -e BASE_URL="$base" -e RATE="$RATE" -e TIME_UNIT=1s -e DURATION="$DURATION" \
    -e CATALOGUE="$CATALOGUE" -e WARM="$CATALOGUE" -e CATALOGUE_PREFIX="soak-$phase" \
    -e NEW_SHARE="$NEW_SHARE" -e P95_MS=1000 -e P99_MS=2000 -e TTR_P95_MS=5000 \
    loadtest/mixed.js >"$RUN_DIR/soak-$phase-k6.log" 2>&1 &
  local k6_pid=$! started=$SECONDS
  local header row i
  header=$(printf '%8s' "t (s)")
  for i in "${!names[@]}"; do header+=$(printf ' %14s' "${names[i]}"); done
  printf '\n%s: RSS in MB\n%s\n' "$phase" "$header"
  local -a first=() half=() last=()
  local halfway=$(( $(k6_secs "$DURATION") / 2 ))
  while :; do
    row=$(printf '%8d' $((SECONDS - started)))
    for i in "${!pids[@]}"; do
      last[i]=$(rss_mb "${pids[i]}")
      [[ -n ${first[i]:-} ]] || first[i]=${last[i]}
      if [[ -z ${half[i]:-} ]] && ((SECONDS - started >= halfway)); then half[i]=${last[i]}; fi
      row+=$(printf ' %14s' "${last[i]}")
    done
    echo "$row"
    kill -0 "$k6_pid" 2>/dev/null || break
    sleep "$SAMPLE_SECS"
  done
  local rc=0
  wait "$k6_pid" || rc=$?
  printf '%s summary (MB):\n' "$phase"
  for i in "${!names[@]}"; do
    awk -v n="${names[i]}" -v a="${first[i]}" -v h="${half[i]:-${first[i]}}" -v z="${last[i]}" \
      'BEGIN { printf "  %-16s start %7.1f  end %7.1f  growth over the second half %+6.1f\n", n, a, z, z - h }'
  done
  grep -E 'http_reqs|iterations\.|dropped_iterations|cache_hit|http_req_failed' "$RUN_DIR/soak-$phase-k6.log" | sed 's/^/  k6: /' || true
  ((rc == 0)) || log "$phase: k6 exited $rc (thresholds; see $RUN_DIR/soak-$phase-k6.log)"
}

# Seconds in a k6 duration such as 5m, 90s or 1h30m.
k6_secs() {
  local d=$1 total=0 n unit
  while [[ $d =~ ^([0-9]+)(h|m|s)(.*)$ ]]; do
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
    case $unit in h) total=$((total + n * 3600)) ;; m) total=$((total + n * 60)) ;; s) total=$((total + n)) ;; esac
  done
  echo "$total"
}

if [[ $MODE != standalone ]]; then
  log "starting the stack (scripts/run.sh; logs in $RUN_DIR/soak-stack.log)"
  bash scripts/run.sh >"$RUN_DIR/soak-stack.log" 2>&1 &
  stack_pid=$!
  wait_until 300 "the stack at $base" ready
  procs=("producer=$(pgrep -nf "^$bin/producer")" "mock=$(pgrep -nf "^$bin/mock-providers")")
  i=1
  for pid in $(pgrep -f "^$bin/consumer"); do
    procs+=("consumer-$i=$pid")
    i=$((i + 1))
  done
  soak stack "${procs[@]}"
  kill -TERM "$stack_pid"
  wait "$stack_pid" || true
  stack_pid=
fi

if [[ $MODE != stack ]]; then
  log "starting standalone (logs in $RUN_DIR/logs/standalone.log)"
  PRICEFRONT__LOG__FILTER=warn PRICEFRONT__PRODUCER__TRUSTED_PROXIES=127.0.0.1,::1 "$bin/standalone" >"$RUN_DIR/logs/standalone.log" 2>&1 &
  solo_pid=$!
  wait_until 60 "standalone at $base" ready
  soak standalone "standalone=$solo_pid"
fi
