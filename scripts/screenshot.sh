#!/usr/bin/env bash
# Makes docs/widget.png: a finished comparison on the demo page, in headless Chromium, against
# the real stack the test suite uses (Redis, the broker, the mock sources, a producer and a
# consumer). Eight sources as config/default.toml's mock has them (two in USD and GBP), one of
# them failing, so the picture shows every part of the widget.
#
#   scripts/screenshot.sh [PRODUCT_ID]    (default sku-123)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/docs/widget.png"
mkdir -p docs
PRICEFRONT_SCREENSHOT="$out" PRICEFRONT_SCREENSHOT_PRODUCT="${1:-sku-123}" \
  bash scripts/test.sh --test it -- browser::screenshot --ignored --exact
echo "wrote $out"
