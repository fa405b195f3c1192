#!/usr/bin/env bash
# The test command: brings up Redis and a Kafka-protocol broker (reusing any already running),
# checks the deployment files, smoke-tests the k6 scripts against the real stack, checks the
# Grafana dashboard's queries against that stack's /metrics and its answers against its own
# OpenAPI document (schemathesis), then runs the whole cargo suite
# (unit tests, and tests/it against the real services; the widget's tests in headless Chromium,
# installed from Debian's chromium and chromium-driver if missing).
# First of all, the Markdown's relative links and anchors are checked (scripts/check-links.py).
#
# With arguments, only the link check and `cargo test ARGS…` run (after the services are up), e.g.
#   scripts/test.sh -- chaos --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
stack_pid=
stop_all() {
  if [[ -n "$stack_pid" ]]; then
    kill -TERM "$stack_pid" 2>/dev/null || true
    wait "$stack_pid" 2>/dev/null || true
  fi
  stop_started
}
trap stop_all EXIT

log "checking the Markdown links (README.md, docs/, loadtest/README.md)"
python3 scripts/check-links.py

cargo build --quiet --bin admin
redis_url=$("$TARGET_DIR/debug/admin" get redis.url)
brokers=$("$TARGET_DIR/debug/admin" get kafka.brokers)
ensure_redis_server_binary   # the suite starts private redis-servers (to kill; TLS; a cluster)
ensure_tls_tools
PRICEFRONT_TEST_LIBFAKETIME=$(ensure_faketime) # a consumer with a shifted clock, for the clock-skew test
ensure_browser               # the widget's tests run in headless Chromium
ensure_redis "$redis_url"
ensure_broker "$brokers"
# The chaos tests stop and restart a private broker of their own.
PRICEFRONT_TEST_TANSU=$(tansu_binary)
# `admin get redis.url` redacts a password: pass the URL on only when it has none to lose.
[[ "$redis_url" == *"<redacted>"* ]] || export PRICEFRONT__REDIS__URL="$redis_url"
PRICEFRONT_TEST_CHROMEDRIVER=$(command -v chromedriver)
export PRICEFRONT__KAFKA__BROKERS="$brokers" PRICEFRONT_TEST_TANSU PRICEFRONT_TEST_CHROMEDRIVER PRICEFRONT_TEST_LIBFAKETIME

if (($# == 0)); then
  log "checking the deployment files (no Docker engine needed)"
  bash scripts/check-deploy.sh
  log "k6 smoke against the real stack (scripts/run.sh; logs in .run/ci-stack.log)"
  bash scripts/run.sh >"$RUN_DIR/ci-stack.log" 2>&1 &
  stack_pid=$!
  # run.sh builds in release mode first: allow for a cold build.
  READY_TIMEOUT=1200 bash scripts/loadtest-smoke.sh || { tail -n 30 "$RUN_DIR/ci-stack.log"; exit 1; }
  log "dashboard queries against the stack's /metrics, after the smoke's traffic (producer, every consumer)"
  metrics_urls="http://$("$TARGET_DIR/debug/admin" get producer.ops_listen)/metrics"
  for i in $(seq 1 "$("$TARGET_DIR/debug/admin" get kafka.partitions)"); do
    metrics_urls+=",http://127.0.0.1:$((9100 + i))/metrics" # run.sh's consumer i serves 9100+i
  done
  bash scripts/check-deploy.sh --metrics "$metrics_urls"
  log "the OpenAPI document against the same stack (schemathesis)"
  bash scripts/check-openapi.sh "http://$("$TARGET_DIR/debug/admin" get producer.listen)"
  kill -TERM "$stack_pid"
  wait "$stack_pid" || true
  stack_pid=
fi

# Last, so its summary closes the output.
cargo test "$@"
