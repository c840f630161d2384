#!/usr/bin/env bash
# CI smoke for the fuzz targets (docs/security.md §4). Runs every target of sfu/fuzz and
# signaling/fuzz for FUZZ_SECS seconds each (default 15; 19 targets, about 5 min in total).
#
#   FUZZ_ENGINE=loop       (default) the stable in-process mutational loop (src/bin/fuzz-loop.rs),
#                          plus `cargo test` over the seed corpus. Needs nothing but stable Rust.
#   FUZZ_ENGINE=libfuzzer  cargo-fuzz / libFuzzer (installs cargo-fuzz when missing; builds with
#                          RUSTC_BOOTSTRAP=1 and no sanitizer, as only stable Rust is available).
#
# Crashing inputs land in <project>/artifacts/<target>/; the script exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${FUZZ_SECS:-15}
ENGINE=${FUZZ_ENGINE:-loop}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/fuzz}

SFU_TARGETS="demux rtp rtcp vp8 vp9 av1_dd h264 client_hello srtp bridge_channel shard stun dtls_records sctp twcc"
SIG_TARGETS="colibri2_xml colibri2_json config_toml jvbconf"

fail=0
case "$ENGINE" in
loop)
    for proj in sfu signaling; do
        echo "== $proj/fuzz: seed corpus as tests"
        (cd "$proj/fuzz" && cargo test --quiet) || fail=1
        echo "== $proj/fuzz: ${SECS}s per target"
        (cd "$proj/fuzz" && cargo run --quiet --bin fuzz-loop -- all "$SECS" "${FUZZ_SEED:-$RANDOM}") || fail=1
    done
    ;;
libfuzzer)
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    export RUSTC_BOOTSTRAP=1
    for proj in sfu signaling; do
        if [ "$proj" = sfu ]; then targets=$SFU_TARGETS; else targets=$SIG_TARGETS; fi
        for t in $targets; do
            echo "== $proj/fuzz $t (libFuzzer, ${SECS}s)"
            (cd "$proj" && cargo fuzz run --fuzz-dir fuzz -s none --features libfuzzer "$t" \
                "fuzz/corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048) || fail=1
        done
    done
    ;;
*)
    echo "unknown FUZZ_ENGINE=$ENGINE" >&2
    exit 2
    ;;
esac
exit $fail
