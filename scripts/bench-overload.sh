#!/usr/bin/env bash
# Overload benchmark (issue 25): a release stack pushed past its capacity on purpose. Do hot
# products stay warm, is new work either done within pending_ttl or refused at once, and how
# much work is published twice?
#
# The stack (scripts/run.sh) has ONE consumer (one partition) with IN_FLIGHT messages at once
# and SOURCES mock sources each answering after exactly SOURCE_MS (no jitter), so it computes
# at most IN_FLIGHT * 1000 / SOURCE_MS products a second (40 with the defaults). The generator
# (examples/bench-overload.rs, open loop: request k goes at k / rate, whatever became of the
# others) warms HOT products, then for DURATION seconds asks them HOT_RATE times a second in
# all (results guaranteed TTL_SECS, so they need refreshing during the run) while NEW_RATE
# never-seen products a second arrive. A new product's client asks once; after a 202 it asks
# again every POLL_SECS (+-50 %, the same draws each run) until 200 or GIVE_UP_SECS after its
# first ask; after anything else it goes away. Every request is a client of its own
# (X-Forwarded-For), so the per-client miss limit refuses none. It reports, from outside the
# product:
#
#   HOT        share of the hot requests answered 200 after the first HOT_SKIP seconds (and the
#              other statuses), and that share per 10 s of the run;
#   NEW        first answers: accepted (202), refused at once (503, with or without
#              Retry-After), other; of the accepted, the share whose result was announced
#              ({prefix}:ready:<id>, PSUBSCRIBEd during the run) within cache.pending_ttl of
#              the first ask, and the share whose client saw 200 within it; pending markers and
#              results left in Redis when the last window closed;
#   COUNTERS   the producer's pricefront_publish_total, limited and refreshes counters, and
#              the consumer's messages and refreshes, over the load;
#   SOURCES    the mock's calls per new product (/_stats), as of the end of the measurement;
#   TOPICS     after the stack is stopped, every message on each topic whose name starts with
#              the run's topic (a refresh topic added later is counted too; the DLQ apart),
#              read from the start up to a marker (tansu's high watermarks are not trusted);
#   DUPLICATE  requests published for new products against distinct new products accepted;
#   CPU        each process's cores over the generator's run.
#
#   scripts/bench-overload.sh                  # the issue's run: about 3 minutes after the build
#   DURATION=30 HOT_SKIP=10 GIVE_UP_SECS=40 scripts/bench-overload.sh   # a quick check
#
# Knobs (env): DURATION (90 s), HOT (50 products), HOT_RATE (200 requests/s in all), HOT_SKIP
# (30 s left out of the hot share), TTL_SECS (20: cache.ttl_secs, the price guarantee),
# NEW_RATE (100 products/s), POLL_SECS (5), GIVE_UP_SECS (60), IN_FLIGHT (8:
# consumer.max_in_flight), SOURCES (4), SOURCE_MS (200), TOPICS (empty: every topic starting
# with the run's; else a comma-separated list), BROKER (127.0.0.1:19092: a tansu of its own,
# started here and stopped at the end; 127.0.0.1:9092 for the shared one), LISTEN
# (127.0.0.1:18080), OPS_LISTEN (127.0.0.1:18081) and MOCK (127.0.0.1:19100): the producer's
# and the mock's addresses, off the default ports so that nobody else's client (a smoke test
# aimed at :8080) adds work to the run; the consumer's metrics stay on run.sh's 9101. Its
# products, and any other product that reached the topic, are shown apart in TOPICS.
# cache.pending_ttl and everything else are config/default.toml's. The run has its own topic,
# group and Redis key prefix (bench-overload-<run>, pricefront-bench-overload).
#
# Polling every POLL_SECS rather than at the 202's Retry-After (1 s) keeps the generator's own
# load small; a claim that expires while its request is still queued is published again at
# the next poll either way. The intervals are drawn, not fixed: with fixed ones a poll lands
# exactly on a claim's expiry (pending_ttl 30 s, POLL_SECS 5) and a microsecond decides
# whether it publishes again (one such run counted 16,453 publishes, the next 21,694).
#
# Exits non-zero if the stack fails or a hot product cannot be warmed; the figures are only
# reported. Logs: .run/logs/, .run/bench-overload-stack.log; the report in
# .run/bench-overload-<run>.out, each new product's outcome in .run/bench-overload-<run>.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${DURATION:-90}
HOT=${HOT:-50}
HOT_RATE=${HOT_RATE:-200}
HOT_SKIP=${HOT_SKIP:-30}
TTL_SECS=${TTL_SECS:-20}
NEW_RATE=${NEW_RATE:-100}
POLL_SECS=${POLL_SECS:-5}
GIVE_UP_SECS=${GIVE_UP_SECS:-60}
IN_FLIGHT=${IN_FLIGHT:-8}
SOURCES=${SOURCES:-4}
SOURCE_MS=${SOURCE_MS:-200}
TOPICS=${TOPICS:-}
BROKER=${BROKER:-127.0.0.1:19092}
LISTEN=${LISTEN:-127.0.0.1:18080}
OPS_LISTEN=${OPS_LISTEN:-127.0.0.1:18081}
MOCK=${MOCK:-127.0.0.1:19100}
for knob in DURATION HOT HOT_RATE HOT_SKIP TTL_SECS NEW_RATE POLL_SECS GIVE_UP_SECS IN_FLIGHT SOURCES SOURCE_MS; do
  [[ ${!knob} =~ ^[0-9]+$ ]] || { log "$knob must be a whole number (got ${!knob:-nothing})"; exit 2; }
done
((DURATION > 0 && HOT > 0 && HOT_RATE > 0 && NEW_RATE > 0 && POLL_SECS > 0 && IN_FLIGHT > 0 && SOURCES > 0 && TTL_SECS > 0)) ||
  { log "DURATION, HOT, HOT_RATE, NEW_RATE, POLL_SECS, IN_FLIGHT, SOURCES and TTL_SECS must be positive"; exit 2; }
((HOT_SKIP < DURATION)) || { log "HOT_SKIP must be below DURATION"; exit 2; }

log "building (release)"
cargo build --release --quiet --bins --example bench-overload
bin=$TARGET_DIR/release
gen=$TARGET_DIR/release/examples/bench-overload

run_id=$(date +%s)$$
topic=bench-overload-$run_id
config=$RUN_DIR/bench-overload.toml
{
  echo "# Written by scripts/bench-overload.sh for run $run_id; rewritten on each run."
  echo "[redis]"
  echo "key_prefix = \"pricefront-bench-overload\""
  echo "[kafka]"
  echo "brokers = \"$BROKER\""
  echo "partitions = 1"
  echo "topic = \"$topic\""
  echo "dlq_topic = \"$topic.dlq\""
  echo "group_id = \"$topic\""
  echo "[producer]"
  echo "listen = \"$LISTEN\""
  echo "ops_listen = \"$OPS_LISTEN\""
  echo "[mock]"
  echo "listen = \"$MOCK\""
  echo "[cache]"
  echo "ttl_secs = $TTL_SECS"
  echo "[consumer]"
  echo "max_in_flight = $IN_FLIGHT"
  fixed_sources "$SOURCES" "$SOURCE_MS" "$MOCK"
} >"$config"
export PRICEFRONT_CONFIG=$config
unset RUST_LOG
export PRICEFRONT__LOG__FILTER=warn

redis_url=$("$bin/admin" get redis.url)
brokers=$("$bin/admin" get kafka.brokers)
pending_ttl=$("$bin/admin" get cache.pending_ttl_secs)
refresh_ahead=$("$bin/admin" get cache.refresh_ahead)
mapfile -t ports < <(stack_ports "$bin")
require_free "${ports[@]}"

gen_pid=
cleanup() {
  trap '' INT TERM
  if [[ -n $gen_pid ]]; then
    kill -TERM "$gen_pid" 2>/dev/null && wait "$gen_pid" 2>/dev/null || true
  fi
  stop_release_stack
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Redis and the broker are started here (when absent), not by run.sh: the topics are read after
# the stack has stopped, so nothing publishes or consumes meanwhile.
ensure_redis "$redis_url"
ensure_broker "$brokers"
log "starting the stack (scripts/run.sh with $config; log in $RUN_DIR/bench-overload-stack.log)"
start_release_stack "$bin" "$RUN_DIR/bench-overload-stack.log"

# CPU time of each process of the stack (run.sh's children), the broker and Redis.
pid_on_port() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -n1 | cut -d= -f2; }
cpu_names=()
cpu_pids=()
for pid in $(pgrep -P "$STACK_PID"); do
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) != sleep ]] || continue
  cpu_names+=("$(cat "/proc/$pid/comm" 2>/dev/null || echo "?")")
  cpu_pids+=("$pid")
done
for np in "broker=$(pid_on_port "$(port_of "$brokers" 9092)")" "redis=$(pid_on_port "$(port_of "$redis_url" 6379)")"; do
  [[ -n ${np#*=} ]] || continue
  cpu_names+=("${np%%=*}")
  cpu_pids+=("${np#*=}")
done
cpu_ticks() {
  local pid
  awk '/^cpu / { printf "%d ", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
  for pid in "${cpu_pids[@]}"; do awk '{ printf "%d ", $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || printf '0 '; done
}

out=$RUN_DIR/bench-overload-$run_id.out
csv=$RUN_DIR/bench-overload-$run_id.csv
log "run $run_id: 1 consumer x $IN_FLIGHT in flight, $SOURCES sources at $SOURCE_MS ms; $HOT hot products at $HOT_RATE/s (ttl ${TTL_SECS}s), $NEW_RATE new products/s for ${DURATION}s"
export BO_HOT=$HOT BO_HOT_RATE=$HOT_RATE BO_NEW_RATE=$NEW_RATE BO_DURATION=$DURATION BO_HOT_SKIP=$HOT_SKIP \
  BO_POLL_SECS=$POLL_SECS BO_GIVE_UP_SECS=$GIVE_UP_SECS BO_TOPICS=$TOPICS BO_CSV=$csv
started=$EPOCHREALTIME
"$gen" load "$run_id" >"$out" 2>&1 &
gen_pid=$!
read -ra ticks_before <<<"$(cpu_ticks)"
while kill -0 "$gen_pid" 2>/dev/null && stack_alive; do sleep 0.5; done
read -ra ticks_after <<<"$(cpu_ticks)"
cpu_secs=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
stack_alive || stack_failed "it stopped during the run"
rc=0
wait "$gen_pid" || rc=$?
gen_pid=
((rc == 0)) || { cat "$out" >&2; log "the generator exited $rc"; exit "$rc"; }

log "stopping the stack, then reading the topics"
stop_release_stack
"$gen" count "$run_id" >>"$out" 2>&1 || { cat "$out" >&2; log "counting the topics failed"; exit 1; }

printf '\nbench-overload run %s (%s cores): 1 consumer x %d in flight, %d sources at %d ms (at best %d products/s); ' \
  "$run_id" "$(nproc)" "$IN_FLIGHT" "$SOURCES" "$SOURCE_MS" $((IN_FLIGHT * 1000 / SOURCE_MS))
printf 'cache ttl %ss, pending_ttl %ss, refresh_ahead %s; broker %s\n' "$TTL_SECS" "$pending_ttl" "$refresh_ahead" "$BROKER"
grep -v '^generator CPU' "$out"
gen_cpu=$(grep -oE '^generator CPU: [0-9.]+' "$out" | grep -oE '[0-9.]+$' || echo 0)
awk -v names="$(IFS=,; echo "${cpu_names[*]}")" -v secs="$cpu_secs" -v before="${ticks_before[*]}" \
  -v after="${ticks_after[*]}" -v hz="$(getconf CLK_TCK)" -v gen="$gen_cpu" '
  BEGIN {
    n = split(names, name, ","); split(before, b, " "); split(after, a, " ")
    line = sprintf("\nCPU over the generator'"'"'s %.0f s (cores):", secs); ours = 0
    for (i = 1; i <= n; i++) { c = (a[i + 1] - b[i + 1]) / hz / secs; ours += c; line = line sprintf(" %s %.2f,", name[i], c) }
    g = gen / secs; ours += g; whole = (a[1] - b[1]) / hz / secs
    printf "%s generator %.2f; whole machine %.2f (anything else %.2f)\n", line, g, whole, (whole > ours ? whole - ours : 0)
  }'
