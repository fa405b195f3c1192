#!/usr/bin/env bash
# Rolling-restart benchmark (issue 23): what restarting one of three consumers costs the cold
# products asked for meanwhile.
#
# Three consumers hold a topic's partitions. The generator (examples/bench-consumer.rs, paced
# mode) publishes RATE cold products per second for DURATION seconds straight to the topic and
# times each product's result announcement. RESTART_AT seconds in, consumer 2 gets SIGTERM (it
# drains its work, commits and leaves the group) and is started again as soon as it has exited,
# as a rolling deploy does. It prints time-to-result (announcement - publish - SOURCE_MS: what
# the queue, the group and the consumer add to the sources' own time) for the products
# published before the restart (steady state), during it (from the SIGTERM until the restarted
# consumer holds partitions again, plus 10 s), and after; and how many were never announced.
#
#   scripts/bench-restart.sh
#   STATIC=1 scripts/bench-restart.sh                    # static membership (group.instance.id)
#   ASSIGNOR=cooperative-sticky scripts/bench-restart.sh  # incremental rebalancing
#
# Knobs (env): RATE (200), DURATION (60), RESTART_AT (20), IN_FLIGHT (32: each consumer's
# max_in_flight), SOURCES (8), SOURCE_MS (50), STATIC (0; 1 gives consumer i
# group.instance.id=bench-restart-<run>-i, kept across its restart), ASSIGNOR (empty:
# librdkafka's default; else partition.assignment.strategy), BROKER (127.0.0.1:19092: a tansu
# of its own, stopped after), METRICS_FROM (9121), MOCK (127.0.0.1:9191). Three consumers on
# three partitions. Needs no Docker. Logs: .run/bench-restart-*.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RATE=${RATE:-200}
DURATION=${DURATION:-60}
RESTART_AT=${RESTART_AT:-20}
IN_FLIGHT=${IN_FLIGHT:-32}
SOURCES=${SOURCES:-8}
SOURCE_MS=${SOURCE_MS:-50}
STATIC=${STATIC:-0}
ASSIGNOR=${ASSIGNOR:-}
BROKER=${BROKER:-127.0.0.1:19092}
METRICS_FROM=${METRICS_FROM:-9121}
MOCK=${MOCK:-127.0.0.1:9191}
CONSUMERS=3
PARTITIONS=3
for knob in RATE DURATION RESTART_AT IN_FLIGHT SOURCES SOURCE_MS METRICS_FROM; do
  [[ ${!knob} =~ ^[0-9]+$ ]] && ((${!knob} > 0)) || { log "$knob must be a positive whole number"; exit 2; }
done
[[ $STATIC == 0 || $STATIC == 1 ]] || { log "STATIC must be 0 or 1"; exit 2; }
[[ -z $ASSIGNOR || $ASSIGNOR =~ ^[a-z,-]+$ ]] || { log "ASSIGNOR must be a librdkafka strategy name"; exit 2; }
((RESTART_AT + 10 < DURATION)) || { log "RESTART_AT must leave at least 10 s of the run after it"; exit 2; }

log "building (release)"
cargo build --release --quiet --bins --example bench-consumer
bin=$TARGET_DIR/release
gen=$TARGET_DIR/release/examples/bench-consumer

run_id=$(date +%s)$$
topic=bench-restart-$run_id
# config_for I: consumer I's settings file (the base, and its group options).
config_for() {
  local file=$RUN_DIR/bench-restart-$1.toml
  {
    echo "# Written by scripts/bench-restart.sh for run $run_id; rewritten on each run."
    echo "[redis]"
    echo "key_prefix = \"pricefront-bench-restart\""
    echo "[kafka]"
    echo "brokers = \"$BROKER\""
    echo "partitions = $PARTITIONS"
    echo "topic = \"$topic\""
    echo "dlq_topic = \"$topic.dlq\""
    echo "group_id = \"$topic\""
    echo "[kafka.consumer_options]"
    ((STATIC == 0)) || echo "\"group.instance.id\" = \"$topic-$1\""
    [[ -z $ASSIGNOR ]] || echo "\"partition.assignment.strategy\" = \"$ASSIGNOR\""
    echo "[consumer]"
    echo "max_in_flight = $IN_FLIGHT"
    echo "metrics_listen = \"127.0.0.1:$((METRICS_FROM + $1 - 1))\""
    echo "[mock]"
    echo "listen = \"$MOCK\""
    fixed_sources "$SOURCES" "$SOURCE_MS" "$MOCK" "$IN_FLIGHT"
  } >"$file"
  echo "$file"
}
for i in 0 1 2 3; do config_for "$i" >/dev/null; done
export PRICEFRONT_CONFIG=$RUN_DIR/bench-restart-0.toml
unset RUST_LOG
export PRICEFRONT__LOG__FILTER=warn

redis_url=$("$bin/admin" get redis.url)
ports=("$MOCK")
for i in 1 2 3; do ports+=("127.0.0.1:$((METRICS_FROM + i - 1))"); done
require_free "${ports[@]}"

consumer_pids=()
mock_pid=
gen_pid=
cleanup() {
  trap '' INT TERM
  for pid in $gen_pid "${consumer_pids[@]}" $mock_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $gen_pid "${consumer_pids[@]}" $mock_pid; do wait "$pid" 2>/dev/null || true; done
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_redis "$redis_url"
ensure_broker "$BROKER"
"$bin/admin" create-topics >/dev/null
"$bin/mock-providers" >"$RUN_DIR/bench-restart-mock.log" 2>&1 &
mock_pid=$!
wait_until 30 "the mock sources at $MOCK" tcp_open "${MOCK%:*}" "${MOCK##*:}"

# start_consumer I [LOG_SUFFIX]: consumer I with its own settings file.
start_consumer() {
  PRICEFRONT_CONFIG=$RUN_DIR/bench-restart-$1.toml "$bin/consumer" >>"$RUN_DIR/bench-restart-consumer-$1.log" 2>&1 &
  consumer_pids[$1 - 1]=$!
}
: >"$RUN_DIR/bench-restart-consumer-1.log" >"$RUN_DIR/bench-restart-consumer-2.log" >"$RUN_DIR/bench-restart-consumer-3.log"
for i in 1 2 3; do start_consumer "$i"; done
settled() { (($(partitions_held "$METRICS_FROM" 3) == PARTITIONS)); }
wait_until 120 "3 consumers holding all $PARTITIONS partitions" settled ||
  { tail -n 5 "$RUN_DIR"/bench-restart-consumer-*.log >&2; exit 1; }
holds() { (($(partitions_held "$((METRICS_FROM + 1))" 1) > 0)); }

csv=$RUN_DIR/bench-restart-$run_id.csv
products=$((RATE * DURATION))
log "run $run_id: $RATE cold products/s for ${DURATION}s; consumer 2 restarted ${RESTART_AT}s in (static membership: $STATIC, assignor: ${ASSIGNOR:-librdkafka default})"
t0=$EPOCHREALTIME
BC_CSV=$csv BC_TIMEOUT_SECS=60 PRICEFRONT__KAFKA__PUBLISH_TIMEOUT_MS=30000 "$gen" "$run_id" "$products" "$RATE" >"$RUN_DIR/bench-restart-gen.log" 2>&1 &
gen_pid=$!
since() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
sleep "$RESTART_AT"
t_term=$(since)
kill -TERM "${consumer_pids[1]}"
wait "${consumer_pids[1]}" 2>/dev/null || true
t_exited=$(since)
start_consumer 2
if wait_until 120 "the restarted consumer to hold a partition" holds; then t_back=$(since); else t_back=never; fi
rc=0
wait "$gen_pid" || rc=$?
gen_pid=
[[ -s $csv ]] || { log "the generator wrote no timings: $(tail -n 3 "$RUN_DIR/bench-restart-gen.log")"; exit 1; }

echo
echo "bench-restart run $run_id: $RATE cold products/s for ${DURATION}s, 3 consumers x $IN_FLIGHT in flight, $SOURCES sources at $SOURCE_MS ms; broker $BROKER"
echo "static membership: $([[ $STATIC == 1 ]] && echo "on (group.instance.id)" || echo off); assignor: ${ASSIGNOR:-librdkafka default (range,roundrobin)}"
echo "consumer 2: SIGTERM at ${t_term}s, exited at ${t_exited}s, restarted and holding partitions again at ${t_back}s"
python3 - "$csv" "$SOURCE_MS" "$t_term" "$t_back" <<'PY'
import csv, math, sys
path, source_ms, term, back = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
back = float(back) if back != "never" else math.inf
rows = list(csv.DictReader(open(path)))
windows = {"steady (5 s in, until the SIGTERM)": [], "restart (SIGTERM until back + 10 s)": [], "after": []}
lost = {k: 0 for k in windows}
for r in rows:
    sent, ann = float(r["published_s"]), float(r["announced_s"])
    if sent < 5:
        continue
    k = list(windows)[0 if sent < term else 1 if sent < back + 10 else 2]
    if math.isnan(ann):
        lost[k] += 1
    else:
        windows[k].append((ann - sent) * 1000 - source_ms)
def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))]
print(f"\n  {'time to result - source time (ms), by publish time':<52} {'count':>6} {'p50':>7} {'p95':>7} {'p99':>8} {'max':>8} {'lost':>6}")
for k, xs in windows.items():
    if xs:
        print(f"  {k:<52} {len(xs):6d} {pct(xs, 50):7.0f} {pct(xs, 95):7.0f} {pct(xs, 99):8.0f} {max(xs):8.0f} {lost[k]:6d}")
    else:
        print(f"  {k:<52} {0:6d} {'':>7} {'':>7} {'':>8} {'':>8} {lost[k]:6d}")
PY
((rc == 0)) || log "the generator exited $rc: $(tail -n 1 "$RUN_DIR/bench-restart-gen.log")"
exit "$rc"
