#!/usr/bin/env bash
# Hit-path cost in instructions (issue 23): user-space instructions per request, counted by
# callgrind, for pricefront's hits and for the baselines of examples/hit-baseline.rs. Unlike
# wrk's ratios (scripts/bench-hit.sh), these counts barely move on a busy machine, so they
# compare builds and changes.
#
# Each server runs under `valgrind --tool=callgrind`; wrk warms it (-t1 -c8, 3 s), the counts
# are zeroed, wrk runs SECS seconds, the counts are dumped, and the dump's total is divided by
# wrk's requests. Every server answers the same comparison (made by `standalone` from the mock
# sources, written to Redis for the Redis-path servers):
#
#   l1-hot          standalone, one hot product (an L1 hit)
#   bare            bare axum answering the same bytes
#   bare-headers    bare axum with the headers a hit carries (fixed values)
#   redis-2000      the producer with L1 off (cache.l1_ttl_ms = 1) over 2,000 products, each
#                   request a Redis GET (counted from Redis's own statistics and printed)
#   redis-get-2000  axum doing one plain Redis GET per request over the same 2,000 products
#
#   scripts/bench-instructions.sh
#   ONLY="l1-hot bare" scripts/bench-instructions.sh
#
# Knobs (env): SECS (20), ONLY (all five), PORTS_FROM (18300). Needs valgrind and wrk
# (installed from Debian when missing) and Redis (started if absent; keys under the prefix
# pricefront-bench-instructions, expiring in an hour). About 3 minutes. Logs: .run/bench-instructions-*.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SECS=${SECS:-20}
ONLY=${ONLY:-l1-hot bare bare-headers redis-2000 redis-get-2000}
PORTS_FROM=${PORTS_FROM:-18300}
[[ $SECS =~ ^[0-9]+$ ]] && ((SECS > 0)) || { log "SECS must be a positive whole number"; exit 2; }
command -v valgrind >/dev/null || apt_install valgrind
command -v wrk >/dev/null || apt_install wrk

log "building (release)"
cargo build --release --quiet --bins --example hit-baseline
bin=$TARGET_DIR/release
prefix=pricefront-bench-instructions
redis_url=$("$bin/admin" get redis.url)
[[ $redis_url == redis://* && $redis_url != *@* ]] || { log "needs a plain redis:// URL without a password"; exit 2; }
ensure_redis "$redis_url"
redis_hp=$(hostport_of "$redis_url")
redis=(redis-cli -h "${redis_hp%:*}" -p "$(port_of "$redis_url" 6379)")

server_pid=
cleanup() {
  trap '' INT TERM
  [[ -z $server_pid ]] || { kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$PORTS_FROM
export PRICEFRONT__PRODUCER__LISTEN=127.0.0.1:$port PRICEFRONT__PRODUCER__OPS_LISTEN=127.0.0.1:$((port + 1))
export PRICEFRONT__CACHE__TTL_SECS=3600 RUST_LOG=warn

# The comparison every server answers: one computed by standalone from the mock sources.
body=$RUN_DIR/bench-instructions-body.json
"$bin/standalone" >"$RUN_DIR/bench-instructions-standalone.log" 2>&1 &
server_pid=$!
up() { curl -fs -o /dev/null "http://127.0.0.1:$port/healthz"; }
wait_until 30 "standalone" up
curl -fsS -H 'Prefer: wait=20' -o "$body" "http://127.0.0.1:$port/v1/prices/bench-instr-hot"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=
grep -q '"status":"complete"' "$body" || { log "the comparison is not complete: $(head -c 300 "$body")"; exit 1; }

lua=$RUN_DIR/bench-instructions.lua
cat >"$lua" <<'LUA'
local paths = {}
for i = 0, 1999 do paths[i + 1] = string.format("/v1/prices/bench-instr-%04d", i) end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
# The 2,000 products in Redis, in the stored format (stored.rs: `#pf1 <computed_at_ms>
# <expires_at_ms> <status> "<etag>"`, a newline, the JSON), for an hour.
seed_redis() {
  python3 - "$body" "$prefix" <<'PY' | "${redis[@]}" --pipe >/dev/null
import sys, time
body, prefix = open(sys.argv[1]).read(), sys.argv[2]
now = int(time.time() * 1000); until = now + 3_600_000
def command(*words):
    out = "*%d\r\n" % len(words)
    for w in words:
        out += "$%d\r\n%s\r\n" % (len(w.encode()), w)
    return out
for i in range(2000):
    pid = "bench-instr-%04d" % i
    value = '#pf1 %d %d complete "%x-%016x"\n%s' % (now, until, now, i, body.replace("bench-instr-hot", pid))
    sys.stdout.write(command("SET", "%s:result:{%s}" % (prefix, pid), value, "PXAT", str(until)))
PY
}
gets() { "${redis[@]}" info commandstats | awk -F'[=,:]' '/^cmdstat_get:/ { print $3 }'; }

# measure NAME PATH|lua [VAR=VALUE…] -- COMMAND…: prints "NAME instructions/request requests
# [gets]". The variables are the server's environment (set outside valgrind, which follows no exec).
results=()
measure() {
  local name=$1 target=$2 out=$RUN_DIR/bench-instructions-$1.callgrind vars=()
  shift 2
  while [[ $1 != -- ]]; do vars+=("$1"); shift; done
  shift
  rm -f "$out" "$out".*
  env "${vars[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$RUN_DIR/bench-instructions-$name.log" 2>&1 &
  server_pid=$!
  local url=http://127.0.0.1:$port wrk_args=() probe=$target
  if [[ $target == lua ]]; then wrk_args=(-s "$lua"); probe=/v1/prices/bench-instr-0000; else url+=$target; fi
  ready() { curl -fs -o /dev/null -H "Prefer: wait=20" "http://127.0.0.1:$port$probe"; }
  wait_until 120 "$name under valgrind" ready || { tail -n 5 "$RUN_DIR/bench-instructions-$name.log"; exit 1; }
  wrk -t1 -c8 -d3s "${wrk_args[@]}" "$url" >/dev/null
  callgrind_control -z "$server_pid" >/dev/null
  local g0 g1 requests total
  g0=$(gets)
  requests=$(wrk -t1 -c8 -d"${SECS}s" "${wrk_args[@]}" "$url" | awk '/requests in/ { print $1 }')
  g1=$(gets)
  callgrind_control -d "$server_pid" >/dev/null
  sleep 1
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  total=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  results+=("$(printf '%-16s %8d %9d %s' "$name" $((total / requests)) "$requests" \
    "$([[ $target == lua ]] && echo "Redis GETs $((g1 - g0))")")")
  log "${results[-1]}"
}

for name in $ONLY; do
  case $name in
    l1-hot)
      # Warmed by its own computation (standalone keeps nothing across runs).
      measure l1-hot /v1/prices/bench-instr-hot -- "$bin/standalone" ;;
    bare) measure bare /v1/prices/bench-instr-hot -- "$bin/examples/hit-baseline" bytes "127.0.0.1:$port" "$body" ;;
    bare-headers) measure bare-headers /v1/prices/bench-instr-hot -- "$bin/examples/hit-baseline" bytes-headers "127.0.0.1:$port" "$body" ;;
    redis-2000)
      seed_redis
      measure redis-2000 lua PRICEFRONT__REDIS__KEY_PREFIX=$prefix PRICEFRONT__CACHE__L1_TTL_MS=1 -- "$bin/producer" ;;
    redis-get-2000)
      seed_redis
      measure redis-get-2000 lua -- "$bin/examples/hit-baseline" redis "127.0.0.1:$port" "$redis_url" "$prefix" ;;
    *) log "unknown measurement $name (l1-hot bare bare-headers redis-2000 redis-get-2000)"; exit 2 ;;
  esac
done

echo
echo "bench-instructions ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+changes')): callgrind, user-space instructions per request over ${SECS}s of wrk -t1 -c8"
printf '%-16s %8s %9s\n' what per_req requests
printf '%s\n' "${results[@]}"
