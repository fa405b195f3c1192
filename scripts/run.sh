#!/usr/bin/env bash
# Runs the whole system on this machine: Redis and a broker (started if absent), the topics,
# the mock price APIs, the producer and one consumer per partition. Ctrl-C stops everything
# this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
trap 'log "stopping"; stop_started' EXIT
trap 'exit 130' INT TERM

log "building (release)"
cargo build --release --quiet --bins
bin=$TARGET_DIR/release
redis_url=$($bin/admin get redis.url)
brokers=$($bin/admin get kafka.brokers)
partitions=$($bin/admin get kafka.partitions)
listen=$($bin/admin get producer.listen)
ops_listen=$($bin/admin get producer.ops_listen)

ensure_redis "$redis_url"
ensure_broker "$brokers"
$bin/admin create-topics

start() {
  local name=$1
  shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  STARTED_PIDS+=($!)
}
start mock-providers $bin/mock-providers
# A load generator on this host stands for many clients through X-Forwarded-For (the k6
# scripts send one address per virtual user); set the variable to override.
PRICEFRONT__PRODUCER__TRUSTED_PROXIES=${PRICEFRONT__PRODUCER__TRUSTED_PROXIES-127.0.0.1,::1} start producer $bin/producer
for i in $(seq 1 "$partitions"); do
  PRICEFRONT__CONSUMER__METRICS_LISTEN="127.0.0.1:$((9100 + i))" start "consumer-$i" "$bin/consumer"
done

ready() { curl -fsS "http://$listen/readyz" >/dev/null 2>&1; }
wait_until 60 "the producer at $listen" ready || { tail -n 20 "$RUN_DIR"/logs/*.log; exit 1; }
# A consumer is ready while it holds a partition: until then, a cold product waits in the topic.
consumers_ready() {
  local i
  for i in $(seq 1 "$partitions"); do
    curl -fsS "http://127.0.0.1:$((9100 + i))/readyz" >/dev/null 2>&1 || return 1
  done
}
# A fresh group forms in seconds on tansu; one whose members just left can take 30 s or more.
wait_until 120 "every consumer to hold a partition" consumers_ready ||
  log "not every consumer holds a partition yet (http://127.0.0.1:9101/readyz …); cold products wait until one does"

cat <<TXT

pricefront is running: producer on http://$listen, $partitions consumers, mock price APIs.
Logs: $RUN_DIR/logs/  (tail -f $RUN_DIR/logs/*.log)
Metrics: http://$ops_listen/metrics (producer's ops port), http://127.0.0.1:9101/metrics … :$((9100 + partitions)) (consumers)

Ask for a price (202 at first, then 200 with the comparison):

  curl -i http://$listen/v1/prices/sku-123

Press Ctrl-C to stop everything this script started.
TXT
wait -n "${STARTED_PIDS[@]}" || true
log "a process exited (logs: $RUN_DIR/logs); stopping the rest"
