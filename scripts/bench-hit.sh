#!/usr/bin/env bash
# Hit-path benchmark (issue 11): pricefront's cache hits against bare axum on the same machine,
# in one run, as ratios.
#
# It builds release, reuses the stack running at producer.listen or starts one (scripts/run.sh,
# with a one-hour guarantee so no refresh ahead runs during the bench), starts two more
# producers (L1 effectively off, cache.l1_ttl_ms = 1: every hit reads Redis; and L1 held 60 s,
# to show the hit path without the default 1-s L1 life's re-reads) and the two baselines of
# examples/hit-baseline.rs: a bare axum handler answering the bytes of a real comparison, and an
# axum handler doing one plain Redis GET per request. It warms PRODUCTS products, then, for
# ROUNDS rounds, measures throughput with wrk (closed loop, THREADS threads, CONNS
# connections, SECS seconds each) in pairs, a baseline and what is compared with it, run back
# to back in alternating order (this machine's speed drifts by 10-20% within minutes, so only
# a pair's ratio is trusted, and the median of the rounds' ratios is reported):
#
#   l1-hot       / bare          pricefront, one hot product (an L1 hit) / bare axum, the same bytes
#   l1-N         / bare-N        over the N products' paths (L1 hits, default 1-s L1 life)
#   l1-60s-N     / bare-N        the same with L1 held 60 s (no background re-reads)
#   redis-N      / redis-get-N   pricefront with L1 off / axum + one Redis GET
#   multi-100    / single        GET /v1/prices?ids=<100 cached ids> (L1 hits) / one L1 hit: the
#                                goal is a 100-id page costing at most 2x a single hit (single:
#                                l1-hot again, back to back with it)
#   page-100     / bare-page-100 the 100-id page again / bare axum answering the same page's bytes:
#                                what the page costs beyond moving its bytes
#   multi-48                     a page of 48 (L1 hits), a catalogue page's usual size
#   multi-redis-100              a page of 100 on the L1-off producer: one Redis pipeline per page
#
# Then latency with oha at fixed, open-loop rates, corrected for coordinated omission: each of
# LATENCY_SHARES % of the bare maximum as oha itself reaches it (oha costs more CPU per request
# than wrk, and shares the cores), against bare-N and l1-N: the p99 goal is <= 2 ms at 70%.
#
#   scripts/bench-hit.sh
#   ROUNDS=5 SECS=10 scripts/bench-hit.sh
#
# Knobs (env): ROUNDS (3), SECS (6), CONNS (64), THREADS (2), PRODUCTS (2000, a multiple of
# 1000), LATENCY_SECS (10), LATENCY_SHARES ("30 70"), PORTS_FROM (18090: the bytes baseline, +1 the
# Redis baseline, +2 the L1-off producer, +3 the L1-60-s producer, +4 the page's bytes). Needs no Docker; installs
# wrk (Debian) and oha (cargo install) when missing. wrk and the servers share the machine's
# cores: compare ratios, not absolute figures. A reused stack keeps its own guarantee: if it is
# short, refreshes ahead run during the bench and cost it. Logs: .run/bench-hit-*.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
PRODUCTS=${PRODUCTS:-2000}
LATENCY_SECS=${LATENCY_SECS:-10}
LATENCY_SHARES=${LATENCY_SHARES:-30 70}
PORTS_FROM=${PORTS_FROM:-18090}
for share in $LATENCY_SHARES; do
  [[ $share =~ ^[0-9]+$ ]] && ((share > 0 && share <= 100)) || { log "LATENCY_SHARES must be percentages (got $share)"; exit 2; }
done
for knob in ROUNDS SECS CONNS THREADS PRODUCTS LATENCY_SECS PORTS_FROM; do
  [[ ${!knob} =~ ^[0-9]+$ ]] && ((${!knob} > 0)) || { log "$knob must be a positive whole number"; exit 2; }
done
((PRODUCTS <= 10000 && PRODUCTS % 1000 == 0)) ||
  { log "PRODUCTS must be a multiple of 1000, at most 10000 (ids bench-hit-0000 …; oha draws them from a regex)"; exit 2; }

command -v wrk >/dev/null || apt_install wrk
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [[ ! -x $OHA ]]; then
  log "installing oha (cargo install --locked oha; a few minutes, once)"
  cargo install --locked --quiet oha >&2
fi

log "building (release)"
cargo build --release --quiet --bins --example hit-baseline
bin=$TARGET_DIR/release
listen=$("$bin/admin" get producer.listen)
base="http://$listen"
prefix=$("$bin/admin" get redis.key_prefix)
redis_url=$("$bin/admin" get redis.url)
[[ $redis_url != *"<redacted>"* ]] || { log "the Redis baseline needs a URL without a password"; exit 2; }
bytes_addr="127.0.0.1:$PORTS_FROM"
redis_addr="127.0.0.1:$((PORTS_FROM + 1))"
l1off_addr="127.0.0.1:$((PORTS_FROM + 2))"
l1long_addr="127.0.0.1:$((PORTS_FROM + 3))"
page_addr="127.0.0.1:$((PORTS_FROM + 4))"
require_free "$bytes_addr" "$redis_addr" "$l1off_addr" "$l1long_addr" "$page_addr"

pids=()
cleanup() {
  trap '' INT TERM
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  stop_release_stack
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

up() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
if up "$base/readyz"; then
  log "reusing the stack already running at $base"
else
  mapfile -t ports < <(stack_ports "$bin")
  require_free "${ports[@]}"
  log "starting the stack (scripts/run.sh, a one-hour guarantee; log in $RUN_DIR/bench-hit-stack.log)"
  PRICEFRONT__CACHE__TTL_SECS=3600 start_release_stack "$bin" "$RUN_DIR/bench-hit-stack.log"
fi

# Each with an ops port of its own (the stack's producer has the default one); port 0: any.
PRICEFRONT__PRODUCER__LISTEN=$l1off_addr PRICEFRONT__PRODUCER__OPS_LISTEN=127.0.0.1:0 PRICEFRONT__CACHE__L1_TTL_MS=1 \
  "$bin/producer" >"$RUN_DIR/bench-hit-producer-l1-off.log" 2>&1 &
pids+=($!)
PRICEFRONT__PRODUCER__LISTEN=$l1long_addr PRICEFRONT__PRODUCER__OPS_LISTEN=127.0.0.1:0 PRICEFRONT__CACHE__L1_TTL_MS=60000 \
  "$bin/producer" >"$RUN_DIR/bench-hit-producer-l1-60s.log" 2>&1 &
pids+=($!)
wait_until 60 "the L1-off producer" up "http://$l1off_addr/readyz" || { tail "$RUN_DIR/bench-hit-producer-l1-off.log"; exit 1; }
wait_until 60 "the L1-60-s producer" up "http://$l1long_addr/readyz" || { tail "$RUN_DIR/bench-hit-producer-l1-60s.log"; exit 1; }

# Warm the products (each as a client of its own, so the miss limit refuses none).
ids=()
for ((i = 0; i < PRODUCTS; i++)); do ids+=("$(printf 'bench-hit-%04d' "$i")"); done
log "warming $PRODUCTS products (bench-hit-0000 …)"
warm_started=$SECONDS
ask_until_cached "$base" 64 "${ids[@]}"
log "warm in $((SECONDS - warm_started)) s"

body=$RUN_DIR/bench-hit-body.json
curl -fsS "$base/v1/prices/${ids[0]}" -o "$body"
"$bin/examples/hit-baseline" bytes "$bytes_addr" "$body" >"$RUN_DIR/bench-hit-bytes.log" 2>&1 &
pids+=($!)
"$bin/examples/hit-baseline" redis "$redis_addr" "$redis_url" "$prefix" >"$RUN_DIR/bench-hit-redis.log" 2>&1 &
pids+=($!)
wait_until 10 "the bytes baseline" up "http://$bytes_addr/v1/prices/${ids[0]}"
wait_until 10 "the Redis baseline" up "http://$redis_addr/v1/prices/${ids[0]}"
up "http://$l1off_addr/v1/prices/${ids[0]}" || { log "the L1-off producer does not serve ${ids[0]}"; exit 1; }

# Multi-get pages of cached ids (issue 12): 48, a catalogue page's usual size, and 100, the most.
page48=$(IFS=,; echo "${ids[*]:0:48}")
page100=$(IFS=,; echo "${ids[*]:0:100}")
curl -fsS -o "$RUN_DIR/bench-hit-page.json" "$base/v1/prices?ids=$page100" ||
  { log "the 100-id page does not answer 200"; exit 1; }
python3 - "$RUN_DIR/bench-hit-page.json" <<'PY' || exit 1
import json, sys
results = json.load(open(sys.argv[1]))["results"]
assert len(results) == 100 and all(e.get("status") == "complete" for e in results.values()), "a page entry is not a cached result"
PY
"$bin/examples/hit-baseline" bytes "$page_addr" "$RUN_DIR/bench-hit-page.json" >"$RUN_DIR/bench-hit-page.log" 2>&1 &
pids+=($!)
wait_until 10 "the page's bytes baseline" up "http://$page_addr/v1/prices/page"

# wrk over the N products' paths: a Lua script picking one at random per request.
lua=$RUN_DIR/bench-hit.lua
cat >"$lua" <<LUA
local paths = {}
for i = 0, $PRODUCTS - 1 do paths[i + 1] = string.format("/v1/prices/bench-hit-%04d", i) end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA

# run_wrk NAME URL [lua]: prints "NAME req/s p50_ms p99_ms non2xx".
run_wrk() {
  local name=$1 url=$2 script=${3:-} out
  local args=(-t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency)
  [[ -z $script ]] || args+=(-s "$script")
  out=$(wrk "${args[@]}" "$url" 2>&1) || { log "wrk failed on $name: $out"; exit 1; }
  echo "$out" >>"$RUN_DIR/bench-hit-wrk.log"
  awk -v name="$name" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 } /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.0f %.3f %.3f %d\n", name, rps, p50, p99, bad }' <<<"$out"
}

# run_oha NAME URL_REGEX RATE: prints "NAME p50_ms p99_ms".
run_oha() {
  local name=$1 url=$2 rate=$3 out
  out=$("$OHA" --no-tui --output-format json -z "${LATENCY_SECS}s" -c "$CONNS" -q "$rate" --latency-correction \
    --rand-regex-url "$url" 2>&1) || { log "oha failed on $name: $out"; exit 1; }
  echo "$out" >>"$RUN_DIR/bench-hit-oha.log"
  python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
bad = sum(n for c, n in codes.items() if c != "200")
print(sys.argv[1], "%.3f" % (p["p50"] * 1000), "%.3f" % (p["p99"] * 1000), "%.0f" % d["summary"]["requestsPerSec"], bad)
' "$name" <<<"$out"
}

: >"$RUN_DIR/bench-hit-wrk.log"
: >"$RUN_DIR/bench-hit-oha.log"
results=$RUN_DIR/bench-hit-results.txt
: >"$results"
n=$PRODUCTS
hot="/v1/prices/${ids[0]}"
# pair BASELINE_NAME BASELINE_URL NAME URL LUA|"": back to back, the order alternating by round.
pair() {
  local a=("$1" "$2" "$5") b=("$3" "$4" "$5")
  if ((round % 2)); then run_wrk "${a[@]}"; run_wrk "${b[@]}"; else run_wrk "${b[@]}"; run_wrk "${a[@]}"; fi
}
# The L1 entries of the long-lived producer: read every product once.
wrk -t1 -c8 -d2s -s "$lua" "http://$l1long_addr" >/dev/null
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round of $ROUNDS (wrk -t$THREADS -c$CONNS -d${SECS}s each)"
  {
    pair bare "http://$bytes_addr$hot" l1-hot "$base$hot" ""
    pair "bare-$n" "http://$bytes_addr" "l1-$n" "$base" "$lua"
    pair "bare-$n" "http://$bytes_addr" "l1-60s-$n" "http://$l1long_addr" "$lua"
    pair "redis-get-$n" "http://$redis_addr" "redis-$n" "http://$l1off_addr" "$lua"
    pair single "$base$hot" multi-100 "$base/v1/prices?ids=$page100" ""
    pair bare-page-100 "http://$page_addr/v1/prices/page" page-100 "$base/v1/prices?ids=$page100" ""
    run_wrk multi-48 "$base/v1/prices?ids=$page48"
    run_wrk multi-redis-100 "http://$l1off_addr/v1/prices?ids=$page100"
  } | sed "s/^/$round /" | tee -a "$results" >&2
done

regex_of() { local d=$((PRODUCTS - 1)); echo "$1/v1/prices/bench-hit-[0-$((d / 1000))][0-9]{3}"; }
log "the bare maximum as oha reaches it (closed loop, ${LATENCY_SECS}s)"
oha_max=$("$OHA" --no-tui --output-format json -z "${LATENCY_SECS}s" -c "$CONNS" --rand-regex-url \
  "$(regex_of "http://$bytes_addr")" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["summary"]["requestsPerSec"]))')
latency=$RUN_DIR/bench-hit-latency.txt
: >"$latency"
for share in $LATENCY_SHARES; do
  rate=$((oha_max * share / 100))
  log "latency at a fixed $rate req/s ($share% of oha's bare maximum, $oha_max req/s), ${LATENCY_SECS}s each"
  {
    run_oha "bare-$n" "$(regex_of "http://$bytes_addr")" "$rate"
    run_oha "l1-$n" "$(regex_of "$base")" "$rate"
  } | sed "s/^/$share /" | tee -a "$latency" >&2
done

# The summary: per pair, the median of the rounds' ratios; the goals.
printf '\nbench-hit (%s, %s cores, %s; wrk -t%s -c%s -d%ss, %s rounds; %s products, a comparison of %s bytes)\n' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)" "$(uname -r)" \
  "$THREADS" "$CONNS" "$SECS" "$ROUNDS" "$PRODUCTS" "$(wc -c <"$body")"
python3 - "$results" "$latency" "$n" "$oha_max" <<'PY'
import statistics, sys
from collections import defaultdict

n, oha_max = sys.argv[3], int(sys.argv[4])
runs = defaultdict(dict)  # round -> name -> (rps, p50, p99, bad)
for line in open(sys.argv[1]):
    rnd, name, rps, p50, p99, bad = line.split()
    runs[int(rnd)][name] = (float(rps), float(p50), float(p99), int(bad))
pairs = [("l1-hot", "bare"), (f"l1-{n}", f"bare-{n}"), (f"l1-60s-{n}", f"bare-{n}"), (f"redis-{n}", f"redis-get-{n}")]
def col(name, i):
    return [r[name][i] for r in runs.values() if name in r]
print(f"{'':14} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8}  non-2xx   rounds")
names = []
for b, a in pairs:
    for x in (a, b):
        if x not in names:
            names.append(x)
names += ["single", "multi-100", "bare-page-100", "page-100", "multi-48", "multi-redis-100"]
for name in names:
    rps = col(name, 0)
    print(f"{name:14} {statistics.median(rps):15,.0f} {statistics.median(col(name, 1)):8.3f} "
          f"{statistics.median(col(name, 2)):8.3f}  {sum(col(name, 3)):7d}   " + "/".join(f"{r / 1000:.1f}k" for r in rps))
print("ratios (each round's pair, back to back; the median, then every round):")
goals = []
for b, a in pairs:
    ratios = [r[b][0] / r[a][0] for r in runs.values() if a in r and b in r]
    med = statistics.median(ratios)
    print(f"  {b:12} / {a:12} {med:5.2f}   " + " ".join(f"{x:.2f}" for x in ratios))
    if b in ("l1-hot", f"l1-{n}", f"redis-{n}"):
        goals.append(f"{b} / {a} = {med:.2f} ({'met' if med >= 0.9 else 'NOT met'}: >= 0.90)")
costs = [r["single"][0] / r["multi-100"][0] for r in runs.values()]
cost = statistics.median(costs)
print(f"  a 100-id page costs {cost:.2f}x a single L1 hit   " + " ".join(f"{x:.2f}" for x in costs))
goals.append(f"multi-100 costs {cost:.2f}x a single L1 hit ({'met' if cost <= 2 else 'NOT met'}: <= 2x)")
beyond = [r["page-100"][0] / r["bare-page-100"][0] for r in runs.values()]
print(f"  page-100 / bare-page-100 (the same bytes from bare axum) {statistics.median(beyond):.2f}   " + " ".join(f"{x:.2f}" for x in beyond))
for name, size in (("multi-100", 100), ("multi-48", 48), ("multi-redis-100", 100)):
    pages = statistics.median(col(name, 0))
    print(f"  {name}: {pages:,.0f} pages/s = {pages * size:,.0f} products/s")
print(f"latency at fixed rates, as shares of {oha_max:,} req/s, oha's bare maximum (open loop, corrected for coordinated omission):")
for line in open(sys.argv[2]):
    share, name, p50, p99, rps, bad = line.split()
    print(f"  {share:>3}%  {name:12} {float(rps):10,.0f} req/s  p50 {float(p50):.3f} ms  p99 {float(p99):.3f} ms  non-200 {bad}")
    if name.startswith("l1-") and share == "70":
        goals.append(f"l1-{n} p99 at 70% = {float(p99):.2f} ms ({'met' if float(p99) <= 2 else 'NOT met'}: <= 2 ms; bare's is in the table)")
print("goals:")
for g in goals:
    print("  " + g)
PY
