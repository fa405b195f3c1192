#!/usr/bin/env bash
# Sizing figures (issue 14), on the release stack: what one cached product costs Redis and what
# one cold product costs the price sources and the queue.
#
# It builds release, reuses the stack running at producer.listen or starts one (scripts/run.sh),
# then asks for PRODUCTS never-seen products (ids bench-size-<run>-00000 …) with
# `Prefer: wait=10`, CONCURRENCY at a time, each as a client of its own (X-Forwarded-For, which
# run.sh trusts from this host), until every one answers 200. Before and after, it reads:
#   - Redis: INFO memory (used_memory) and the number of this stack's keys; then MEMORY USAGE and
#     STRLEN of SAMPLE of the new results: the bytes one cached product costs, all overheads in;
#   - the mock's /_stats: calls per source, so calls per cold product;
#   - each consumer's pricefront_messages_total: messages computed per cold product.
#
#   scripts/bench-sizing.sh
#   PRODUCTS=5000 scripts/bench-sizing.sh
#
# Knobs (env): PRODUCTS (2000), CONCURRENCY (64), SAMPLE (200). Needs no Docker. Other traffic on
# the same Redis during the run skews the memory figure: run it on a quiet stack. Logs:
# .run/bench-sizing-*.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

PRODUCTS=${PRODUCTS:-2000}
CONCURRENCY=${CONCURRENCY:-64}
SAMPLE=${SAMPLE:-200}
for knob in PRODUCTS CONCURRENCY SAMPLE; do
  [[ ${!knob} =~ ^[0-9]+$ ]] && ((${!knob} > 0)) || { log "$knob must be a positive whole number"; exit 2; }
done
((PRODUCTS <= 99999)) || { log "PRODUCTS must be at most 99999"; exit 2; }

log "building (release)"
cargo build --release --quiet --bins
bin=$TARGET_DIR/release
base="http://$("$bin/admin" get producer.listen)"
mock="http://$("$bin/admin" get mock.listen)"
prefix=$("$bin/admin" get redis.key_prefix)
redis_url=$("$bin/admin" get redis.url)
[[ $redis_url != *"<redacted>"* ]] || { log "this script reads Redis with redis-cli: it needs a URL without a password"; exit 2; }
partitions=$("$bin/admin" get kafka.partitions)
sources=$("$bin/admin" get providers | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

trap 'stop_release_stack; stop_started' EXIT
trap 'exit 130' INT TERM
up() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
if up "$base/readyz"; then
  log "reusing the stack already running at $base"
else
  mapfile -t ports < <(stack_ports "$bin")
  require_free "${ports[@]}"
  log "starting the stack (scripts/run.sh; log in $RUN_DIR/bench-sizing-stack.log)"
  start_release_stack "$bin" "$RUN_DIR/bench-sizing-stack.log"
fi

rcli() { redis-cli -u "$redis_url" "$@"; }
used_memory() { rcli INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
our_keys() { rcli --scan --pattern "$prefix:*" | wc -l; }
calls() { curl -fsS "$mock/_stats" | python3 -c 'import json,sys; print(sum(p["calls"] for p in json.load(sys.stdin)["providers"].values()))'; }
computed() {
  local i total=0 n
  for i in $(seq 1 "$partitions"); do
    n=$(curl -fsS --max-time 2 "http://127.0.0.1:$((9100 + i))/metrics" |
      awk '/^pricefront_messages_total\{[^}]*outcome="computed"/ { s += $NF } END { print s + 0 }')
    total=$((total + ${n%.*}))
  done
  echo "$total"
}

run=$(date +%s)
memory_before=$(used_memory)
keys_before=$(our_keys)
calls_before=$(calls)
computed_before=$(computed)

log "asking for $PRODUCTS cold products ($sources sources each), $CONCURRENCY at a time"
ids=()
for ((i = 0; i < PRODUCTS; i++)); do ids+=("$(printf 'bench-size-%s-%05d' "$run" "$i")"); done
started=$(date +%s.%N)
ask_until_cached "$base" "$CONCURRENCY" "${ids[@]}"
took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
sleep 2 # the last results' progress logs are deleted with their store; let the counters settle

memory_after=$(used_memory)
keys_after=$(our_keys)
calls_after=$(calls)
computed_after=$(computed)
sample=$RUN_DIR/bench-sizing-sample.txt
for ((i = 0; i < PRODUCTS && i < SAMPLE; i++)); do
  key="$prefix:result:{$(printf 'bench-size-%s-%05d' "$run" "$i")}"
  echo "$(rcli MEMORY USAGE "$key" SAMPLES 0) $(rcli STRLEN "$key")"
done >"$sample"

python3 - "$sample" <<PY
import statistics, sys
rows = [tuple(map(int, line.split())) for line in open(sys.argv[1]) if line.strip()]
usage = [u for u, _ in rows]
strlen = [s for _, s in rows]
products, sources = $PRODUCTS, $sources
memory = ($memory_after - $memory_before) / products
keys = ($keys_after - $keys_before) / products
calls = ($calls_after - $calls_before) / products
computed = ($computed_after - $computed_before) / products
print(f"bench-sizing: {products} cold products, {sources} sources each, {$CONCURRENCY} at a time, in {$took} s "
      f"({products / $took:.0f} products/s, {products * calls / $took:.0f} source calls/s, on this machine)")
print(f"  Redis, per cached product: {memory:.0f} B of used_memory (all overheads); "
      f"MEMORY USAGE of a result key p50 {statistics.median(usage):.0f} B (min {min(usage)}, max {max(usage)}); "
      f"its value (STRLEN) p50 {statistics.median(strlen):.0f} B; keys left per product: {keys:.2f}")
print(f"  per cold product: {calls:.2f} source calls, {computed:.2f} messages computed")
PY
