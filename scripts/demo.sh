#!/usr/bin/env bash
# The main job on a fresh machine: build Palim and the load harness, start Palim on embedded
# defaults (no XMPP server; Colibri2 over its private REST API on loopback), and put a meeting's
# worth of real WebRTC endpoints through it. Extra arguments go to the harness, e.g.
#   ./scripts/demo.sh --conferences 4 --endpoints 5 --duration 30s
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential; }
cargo build --release -p signaling --bin palim -p loadtest --bin loadtest
# Defaults: 1 conference of 4 endpoints for 10 s (see `loadtest --help`).
exec ./target/release/loadtest --spawn "$@"
