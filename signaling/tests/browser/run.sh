#!/usr/bin/env bash
# Run the real-browser tests (see README.md). Installs playwright-core (no browser download) on
# first use; pass the bridge with PALIM_BIN, PALIM_REST or PALIM_CMD, otherwise the bridge tests
# are reported as skipped and only the offline tests run.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
exec node --test --test-concurrency=1 test/
