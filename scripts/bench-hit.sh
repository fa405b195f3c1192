#!/usr/bin/env bash
# Hit-path benchmark (issue 11): pricefront's cache hits against bare axum on the same machine,
# in one run, as ratios.
#
# It builds release, reuses the stack running at producer.listen or starts one (scripts/run.sh),
# starts a second producer with L1 effectively off (cache.l1_ttl_ms = 1: every hit reads Redis)
# and the two baselines of examples/hit-baseline.rs: a bare axum handler answering the bytes of
# a real comparison, and an axum handler doing one plain Redis GET per request. It warms
# PRODUCTS products, then, for ROUNDS rounds, measures throughput with wrk (closed loop,
# THREADS threads, CONNS connections, SECS seconds each):
#
#   bare          bare axum, the same bytes, on one path        \
#   bare-N        bare axum, over the N products' paths          |  the L1 goal: >= 0.90x
#   l1-hot        pricefront, one hot product (an L1 hit)        |
#   l1-N          pricefront, over the N products (L1 hits)     /
#   redis-get-N   axum + one Redis GET, over the N products     \   the Redis goal: >= 0.90x
#   redis-N       pricefront with L1 off, over the N products   /
#   multi-48      pricefront, GET /v1/prices?ids=<48 cached ids> (only when the route exists)
#
# and latency with oha at a fixed, open-loop rate (LATENCY_SHARE % of the best bare req/s,
# corrected for coordinated omission) against bare-N and l1-N: the p99 goal is <= 2 ms.
#
#   scripts/bench-hit.sh
#   ROUNDS=5 SECS=10 scripts/bench-hit.sh
#
# Knobs (env): ROUNDS (3), SECS (8), CONNS (64), THREADS (2), PRODUCTS (2000, a multiple of
# 1000), LATENCY_SECS
# (10), LATENCY_SHARE (70), PORTS_FROM (18090: the bytes baseline, +1 the Redis baseline, +2
# the L1-off producer). Needs no Docker; installs wrk (Debian) and oha (cargo install) when
# missing. wrk and the servers share the machine's cores: compare ratios, not absolute figures.
# Logs: .run/bench-hit-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
PRODUCTS=${PRODUCTS:-2000}
LATENCY_SECS=${LATENCY_SECS:-10}
LATENCY_SHARE=${LATENCY_SHARE:-70}
PORTS_FROM=${PORTS_FROM:-18090}
for knob in ROUNDS SECS CONNS THREADS PRODUCTS LATENCY_SECS LATENCY_SHARE PORTS_FROM; do
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
require_free "$bytes_addr" "$redis_addr" "$l1off_addr"

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
  log "starting the stack (scripts/run.sh; log in $RUN_DIR/bench-hit-stack.log)"
  start_release_stack "$bin" "$RUN_DIR/bench-hit-stack.log"
fi

PRICEFRONT__PRODUCER__LISTEN=$l1off_addr PRICEFRONT__CACHE__L1_TTL_MS=1 \
  "$bin/producer" >"$RUN_DIR/bench-hit-producer-l1-off.log" 2>&1 &
pids+=($!)
wait_until 60 "the L1-off producer" up "http://$l1off_addr/readyz" || { tail "$RUN_DIR/bench-hit-producer-l1-off.log"; exit 1; }

# Warm the products: waited requests, each as a client of its own (a load balancer's
# X-Forwarded-For, which run.sh trusts from this host), so the per-client miss limit does not
# refuse them; then again until every one answers 200.
ids=()
for ((i = 0; i < PRODUCTS; i++)); do ids+=("$(printf 'bench-hit-%04d' "$i")"); done
warm_one() {
  local id=$1 n=${1##*-}
  n=$((10#$n))
  curl -s -o /dev/null -w '%{http_code} %{url_effective}\n' --max-time 15 -H 'Prefer: wait=10' \
    -H "X-Forwarded-For: 10.77.$((n / 256)).$((n % 256))" "$base/v1/prices/$id"
}
export -f warm_one
export base
log "warming $PRODUCTS products (bench-hit-0000 …)"
warm_started=$SECONDS
pending=("${ids[@]}")
for attempt in 1 2 3 4 5; do
  mapfile -t pending < <(printf '%s\n' "${pending[@]}" | xargs -P 64 -I{} bash -c 'warm_one {}' |
    awk '$1 != 200 { n = split($2, p, "/"); print p[n] }')
  ((${#pending[@]} == 0)) && break
  log "  $((PRODUCTS - ${#pending[@]})) warm, ${#pending[@]} not yet (attempt $attempt)"
  sleep 2
done
((${#pending[@]} == 0)) || { log "${#pending[@]} products never answered 200 (e.g. ${pending[0]})"; exit 1; }
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

# A multi-get page of 48 cached ids, if the route exists (issue 12).
page=$(IFS=,; echo "${ids[*]:0:48}")
multi=
if [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/v1/prices?ids=$page") == 200 ]]; then multi=yes; fi

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
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round of $ROUNDS (wrk -t$THREADS -c$CONNS -d${SECS}s each)"
  {
    run_wrk bare "http://$bytes_addr/v1/prices/${ids[0]}"
    run_wrk "bare-$n" "http://$bytes_addr" "$lua"
    run_wrk l1-hot "$base/v1/prices/${ids[0]}"
    run_wrk "l1-$n" "$base" "$lua"
    run_wrk "redis-get-$n" "http://$redis_addr" "$lua"
    run_wrk "redis-$n" "http://$l1off_addr" "$lua"
    [[ -z $multi ]] || run_wrk multi-48 "$base/v1/prices?ids=$page"
  } | sed "s/^/$round /" | tee -a "$results" >&2
done

best_bare=$(awk '$2 == "bare" && $3 > m { m = $3 } END { print m + 0 }' "$results")
rate=$((best_bare * LATENCY_SHARE / 100))
log "latency at a fixed $rate req/s ($LATENCY_SHARE% of the best bare $best_bare req/s), oha, ${LATENCY_SECS}s each"
regex_of() { local d=$((PRODUCTS - 1)); echo "$1/v1/prices/bench-hit-[0-$((d / 1000))][0-9]{3}"; }
latency=$RUN_DIR/bench-hit-latency.txt
{
  run_oha "bare-$n" "$(regex_of "http://$bytes_addr")" "$rate"
  run_oha "l1-$n" "$(regex_of "$base")" "$rate"
} | tee "$latency" >&2

# The summary: medians over the rounds, and the goals.
printf '\nbench-hit (%s, %s cores, %s; wrk -t%s -c%s -d%ss x %s rounds; %s products, comparison of %s bytes)\n' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)" "$(uname -r)" \
  "$THREADS" "$CONNS" "$SECS" "$ROUNDS" "$PRODUCTS" "$(wc -c <"$body")"
python3 - "$results" "$latency" "$n" <<'PY'
import statistics, sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    rnd, name, rps, p50, p99, bad = line.split()
    rows[name].append((float(rps), float(p50), float(p99), int(bad)))
n = sys.argv[3]
med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
           statistics.median(r[2] for r in v), sum(r[3] for r in v), [r[0] for r in v]) for k, v in rows.items()}
ref = {"bare": None, f"bare-{n}": None, "l1-hot": "bare", f"l1-{n}": f"bare-{n}",
       f"redis-get-{n}": None, f"redis-{n}": f"redis-get-{n}", "multi-48": None}
print(f"{'':14} {'req/s (median)':>15} {'rounds':>26} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}  non-2xx")
for name, (rps, p50, p99, bad, all_rps) in med.items():
    base = ref.get(name)
    ratio = f"{rps / med[base][0]:.2f}" if base in med else ""
    rounds = "/".join(f"{r / 1000:.1f}k" for r in all_rps)
    print(f"{name:14} {rps:15,.0f} {rounds:>26} {p50:8.3f} {p99:8.3f} {ratio:>7}  {bad}")
if "multi-48" in med:
    print(f"multi-48 page: {med['multi-48'][0]:,.0f} pages/s = {med['multi-48'][0] * 48:,.0f} products/s; "
          f"cost per page {med['l1-hot'][0] / med['multi-48'][0]:.2f}x a single hit (goal: at most 2x)")
goals = []
for name, base in ((f"l1-hot", "bare"), (f"l1-{n}", f"bare-{n}"), (f"redis-{n}", f"redis-get-{n}")):
    r = med[name][0] / med[base][0]
    goals.append(f"{name} / {base} = {r:.2f} ({'met' if r >= 0.9 else 'NOT met'}: >= 0.90)")
print("latency at a fixed rate (oha, open loop, corrected for coordinated omission):")
for line in open(sys.argv[2]):
    name, p50, p99, rps, bad = line.split()
    print(f"  {name:12} {float(rps):10,.0f} req/s  p50 {float(p50):.3f} ms  p99 {float(p99):.3f} ms  non-200 {bad}")
    if name.startswith("l1-"):
        goals.append(f"l1-{n} p99 at the fixed rate = {float(p99):.2f} ms ({'met' if float(p99) <= 2 else 'NOT met'}: <= 2 ms)")
print("goals:")
for g in goals:
    print("  " + g)
PY
