#!/usr/bin/env bash
# Consumer-throughput benchmark (issue 23): how many cold products per second one consumer, and
# then three, turn into stored and announced results, against the bound their in-flight limit
# sets (max_in_flight / source latency per consumer).
#
# For each IN_FLIGHT value it bursts PRODUCTS cold products at one consumer, then at CONSUMERS
# consumers. Every run has a topic of PARTITIONS partitions and a consumer group of its own.
# The consumers are started first and the burst is sent once the group has settled (every
# partition assigned), so the group's formation is not timed. The generator
# (examples/bench-consumer.rs) publishes the requests straight to the topic, with no HTTP and
# no producer process, in batches of 1,000, then times each product's result announcement on
# one PSUBSCRIBE connection. Every mock source answers after exactly SOURCE_MS (no jitter).
#
#   rate         products / (last announcement - first publish)
#   steady       the rate between the 10th and the 90th percentile of announcements
#   bound        consumers x IN_FLIGHT / SOURCE_MS: what waiting on the sources alone allows
#                (each source's max_concurrency is set to the largest IN_FLIGHT, so its
#                bulkhead is not the bound)
#   CPU          cores each process used during the burst (consumers summed)
#
#   scripts/bench-consumer.sh
#   IN_FLIGHT="32" PRODUCTS=4000 scripts/bench-consumer.sh
#
# Knobs (env): IN_FLIGHT ("32 256"), PRODUCTS (6000), CONSUMERS (3), PARTITIONS (3: at least
# CONSUMERS), SOURCES (8), SOURCE_MS (50), BROKER (127.0.0.1:19092: nothing answers there, so a
# tansu is started for the benchmark and stopped after; 127.0.0.1:9092 for the shared one),
# METRICS_FROM (9111: consumer i serves its metrics on METRICS_FROM + i - 1), MOCK
# (127.0.0.1:9190). Needs no Docker. Logs: .run/bench-consumer-*.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

IN_FLIGHT=${IN_FLIGHT:-32 256}
PRODUCTS=${PRODUCTS:-6000}
CONSUMERS=${CONSUMERS:-3}
PARTITIONS=${PARTITIONS:-3}
SOURCES=${SOURCES:-8}
SOURCE_MS=${SOURCE_MS:-50}
BROKER=${BROKER:-127.0.0.1:19092}
METRICS_FROM=${METRICS_FROM:-9111}
MOCK=${MOCK:-127.0.0.1:9190}
for knob in PRODUCTS CONSUMERS PARTITIONS SOURCES SOURCE_MS METRICS_FROM; do
  [[ ${!knob} =~ ^[0-9]+$ ]] && ((${!knob} > 0)) || { log "$knob must be a positive whole number"; exit 2; }
done
for n in $IN_FLIGHT; do
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0)) || { log "IN_FLIGHT must be positive whole numbers (got $n)"; exit 2; }
done
((PARTITIONS >= CONSUMERS)) || { log "PARTITIONS ($PARTITIONS) must be at least CONSUMERS ($CONSUMERS)"; exit 2; }

log "building (release)"
cargo build --release --quiet --bins --example bench-consumer
bin=$TARGET_DIR/release
gen=$TARGET_DIR/release/examples/bench-consumer

# Each source's bulkhead (providers[].max_concurrency, 64 by default) as wide as the largest
# in-flight bound, so the bound measured is max_in_flight's: at 64 calls at once and 50 ms a
# call, a source takes at most 1,280 calls/s from one consumer, whatever max_in_flight says.
max_concurrency=$(printf '%s\n' $IN_FLIGHT | sort -n | tail -n1)
run_id=$(date +%s)$$
prefix=pricefront-bench-consumer
config=$RUN_DIR/bench-consumer.toml
{
  echo "# Written by scripts/bench-consumer.sh for run $run_id; rewritten on each run."
  echo "[redis]"
  echo "key_prefix = \"$prefix\""
  echo "[kafka]"
  echo "brokers = \"$BROKER\""
  echo "partitions = $PARTITIONS"
  echo "[mock]"
  echo "listen = \"$MOCK\""
  fixed_sources "$SOURCES" "$SOURCE_MS" "$MOCK" "$max_concurrency"
} >"$config"
export PRICEFRONT_CONFIG=$config
unset RUST_LOG
export PRICEFRONT__LOG__FILTER=warn

redis_url=$("$bin/admin" get redis.url)
ports=("$MOCK")
for i in $(seq 1 "$CONSUMERS"); do ports+=("127.0.0.1:$((METRICS_FROM + i - 1))"); done
require_free "${ports[@]}"

consumer_pids=()
mock_pid=
cleanup() {
  trap '' INT TERM
  for pid in "${consumer_pids[@]}" $mock_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${consumer_pids[@]}" $mock_pid; do wait "$pid" 2>/dev/null || true; done
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_redis "$redis_url"
ensure_broker "$BROKER"
"$bin/mock-providers" >"$RUN_DIR/bench-consumer-mock.log" 2>&1 &
mock_pid=$!
wait_until 30 "the mock sources at $MOCK" tcp_open "${MOCK%:*}" "${MOCK##*:}"

pid_on_port() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -n1 | cut -d= -f2; }
ticks() { local t=0 pid; for pid; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo $t; }
redis_pid=$(pid_on_port "$(port_of "$redis_url" 6379)")
broker_pid=$(pid_on_port "$(port_of "$BROKER" 9092)")

# Every partition held by the first N consumers.
settled() { (($(partitions_held "$METRICS_FROM" "$1") == PARTITIONS)); }

results=()
# burst TAG CONSUMERS IN_FLIGHT
burst() {
  local tag=$1 k=$2 inflight=$3 i topic line before after secs hz
  topic="bench-consumer-$run_id-$tag"
  export PRICEFRONT__KAFKA__TOPIC=$topic PRICEFRONT__KAFKA__DLQ_TOPIC=$topic.dlq PRICEFRONT__KAFKA__GROUP_ID=$topic
  "$bin/admin" create-topics >/dev/null
  consumer_pids=()
  for i in $(seq 1 "$k"); do
    PRICEFRONT__CONSUMER__MAX_IN_FLIGHT=$inflight PRICEFRONT__CONSUMER__METRICS_LISTEN="127.0.0.1:$((METRICS_FROM + i - 1))" \
      "$bin/consumer" >"$RUN_DIR/bench-consumer-$tag-$i.log" 2>&1 &
    consumer_pids+=($!)
  done
  wait_until 120 "$k consumer(s) holding all $PARTITIONS partitions" settled "$k" ||
    { tail -n 5 "$RUN_DIR"/bench-consumer-"$tag"-*.log >&2; exit 1; }
  hz=$(getconf CLK_TCK)
  local c0 m0 r0 b0 c1 m1 r1 b1 t0 t1
  c0=$(ticks "${consumer_pids[@]}"); m0=$(ticks "$mock_pid"); r0=$(ticks "$redis_pid"); b0=$(ticks "$broker_pid"); t0=$EPOCHREALTIME
  line=$(BC_TIMEOUT_SECS=600 PRICEFRONT__KAFKA__PUBLISH_TIMEOUT_MS=60000 PRICEFRONT__KAFKA__PRODUCER_QUEUE_MAX_MESSAGES=1000000 "$gen" "$run_id-$tag" "$PRODUCTS") || { log "the burst failed: $line"; exit 1; }
  c1=$(ticks "${consumer_pids[@]}"); m1=$(ticks "$mock_pid"); r1=$(ticks "$redis_pid"); b1=$(ticks "$broker_pid"); t1=$EPOCHREALTIME
  for pid in "${consumer_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${consumer_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  consumer_pids=()
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  local rate steady bound cpu
  rate=$(grep -oE ' rate=[0-9.]+' <<<"$line" | cut -d= -f2)
  steady=$(grep -oE 'steady_rate=[0-9.]+' <<<"$line" | cut -d= -f2)
  bound=$((k * inflight * 1000 / SOURCE_MS))
  cpu=$(awk -v s="$secs" -v hz="$hz" -v c=$((c1 - c0)) -v m=$((m1 - m0)) -v r=$((r1 - r0)) -v b=$((b1 - b0)) \
    'BEGIN { printf "consumers %.2f, mock %.2f, redis %.2f, broker %.2f", c/hz/s, m/hz/s, r/hz/s, b/hz/s }')
  results+=("$(printf '%-10s %9s %8s %8s %8s %9s   %s' "$k" "$inflight" "$bound" "$rate" "$steady" \
    "$(awk -v r="$rate" -v b="$bound" 'BEGIN { printf "%.0f%%", 100 * r / b }')" "$cpu")")
  log "$tag: $line"
}

for inflight in $IN_FLIGHT; do
  burst "one-$inflight" 1 "$inflight"
  ((CONSUMERS > 1)) && burst "many-$inflight" "$CONSUMERS" "$inflight"
done

echo
echo "$PRODUCTS cold products per burst; $SOURCES sources at $SOURCE_MS ms; $PARTITIONS partitions; broker $BROKER"
printf '%-10s %9s %8s %8s %8s %9s   %s\n' consumers in_flight bound rate/s steady/s rate/bound "CPU during the burst (cores)"
printf '%s\n' "${results[@]}"
