#!/usr/bin/env bash
# The test command: brings up Redis and a Kafka-protocol broker (reusing any already
# running), then runs the whole suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
trap stop_started EXIT

cargo build --quiet --bin admin
redis_url=$("$TARGET_DIR/debug/admin" get redis.url)
brokers=$("$TARGET_DIR/debug/admin" get kafka.brokers)
ensure_redis_server_binary   # the suite starts a private redis-server to kill it
ensure_redis "$redis_url"
ensure_broker "$brokers"
# The chaos tests stop and restart a private broker of their own.
PRICEFRONT_TEST_TANSU=$(tansu_binary)
export PRICEFRONT__REDIS__URL="$redis_url" PRICEFRONT__KAFKA__BROKERS="$brokers" PRICEFRONT_TEST_TANSU
cargo test "$@"
