#!/usr/bin/env bash
# Install what the tests need when it is missing (Prosody, Chromium, the npm packages, the
# build's C toolchain), then run every test: formatting, lints, unit, property and integration
# tests (real Prosody, str0m clients), and the headless-Chromium interop test.
# Safe to run again; it installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A CI build is built once: incremental state would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi
disk() { echo "   disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)"; }

need_apt=()
command -v prosody >/dev/null 2>&1 || need_apt+=(prosody)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_apt[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "== installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Prosody's Debian package starts a system instance; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prosody >/dev/null 2>&1 || true; fi
pkill -x lua5.4 -u prosody >/dev/null 2>&1 || true

echo "== npm packages for the browser test"
(cd signaling/tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo fmt --check"
cargo fmt --all -- --check

disk
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

disk
echo "== cargo test (unit, property, Prosody and str0m integration)"
CI=${CI:-} cargo test --workspace

disk
echo "== fuzz targets: seed corpora and a short fixed-seed run of each (docs/security.md)"
FUZZ_SECS=${FUZZ_SECS:-5} FUZZ_SEED=${FUZZ_SEED:-42} ./scripts/fuzz-smoke.sh

disk
echo "== headless Chromium through Palim"
cargo build -p signaling --bin palim
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
PALIM_BIN="$target_dir/debug/palim" ./signaling/tests/browser/run.sh
disk
