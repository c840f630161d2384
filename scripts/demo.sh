#!/usr/bin/env bash
# The main job on a fresh machine: build Palim and the load harness, start Palim on embedded
# defaults (no XMPP server; Colibri2 over its private REST API on loopback), and put a meeting's
# worth of real WebRTC endpoints through it (scenarios/meeting.toml: 2 conferences × 5, VP8
# simulcast, 15 ms links). Writes target/loadtest-report.html (plots) and
# target/loadtest-result.json. Extra arguments go to the harness and win, e.g.
#   ./scripts/demo.sh --conferences 4 --duration 30s
#   ./scripts/demo.sh --scenario scenarios/school.toml
# See docs/loadtest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential; }
cargo build --release -p signaling --bin palim -p loadtest --bin loadtest
target_dir=${CARGO_TARGET_DIR:-target}
exec "$target_dir/release/loadtest" --spawn --palim "$target_dir/release/palim" \
  --scenario scenarios/meeting.toml \
  --report "$target_dir/loadtest-report.html" --json "$target_dir/loadtest-result.json" "$@"
