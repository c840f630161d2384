#!/usr/bin/env bash
# The documented long fuzz run (docs/security.md §4, robustness.md §4: >= 10 min per target).
# Runs every target of sfu/fuzz and signaling/fuzz under libFuzzer for FUZZ_MINUTES each and
# appends one markdown table row per target to FUZZ_RESULTS:
#
#   | target | minutes | execs | exec/s | corpus files | crashes | date |
#
#   FUZZ_MINUTES=10      minutes per target (default 10)
#   FUZZ_JOBS=1          targets run in parallel (default 1: sequential)
#   FUZZ_RESULTS=file    where rows go (default docs/fuzz-results.md; the header is written once)
#   FUZZ_TARGETS="a b"   only these targets (default: all of them)
#
# libFuzzer needs nightly features: the script builds with RUSTC_BOOTSTRAP=1 and no sanitizer
# (only stable Rust is available), installing cargo-fuzz when missing. The corpus grows in
# place (fuzz/corpus/<target>/); crashing inputs land in <project>/fuzz/artifacts/<target>/ and
# the script exits non-zero if any target crashed. Logs: target/fuzz-long/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MINUTES=${FUZZ_MINUTES:-10}
JOBS=${FUZZ_JOBS:-1}
RESULTS=${FUZZ_RESULTS:-$ROOT/docs/fuzz-results.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/fuzz}
LOGS=$ROOT/target/fuzz-long
mkdir -p "$LOGS"

SFU_TARGETS="demux rtp rtcp vp8 vp9 av1_dd h264 client_hello srtp bridge_channel shard stun dtls_records sctp twcc"
SIG_TARGETS="colibri2_xml colibri2_json config_toml jvbconf"
WANT=${FUZZ_TARGETS:-$SFU_TARGETS $SIG_TARGETS}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

project_of() {
    case " $SFU_TARGETS " in *" $1 "*) echo sfu ;; *) echo signaling ;; esac
}

# Build every wanted target first (by name: a bare `cargo fuzz build` also tries to
# instrument the fuzz-loop binary, which does not link libFuzzer), so the timed runs do not
# include compilation.
for t in $WANT; do
    proj=$(project_of "$t")
    echo "== building $proj/fuzz $t"
    (cd "$proj" && cargo fuzz build --fuzz-dir fuzz -s none --features libfuzzer -O "$t") >"$LOGS/build-$t.log" 2>&1 || {
        echo "build of $t failed, see $LOGS/build-$t.log" >&2
        exit 2
    }
done

if [ ! -f "$RESULTS" ]; then
    {
        echo "| target | minutes | execs | exec/s | corpus files | crashes | date |"
        echo "|---|---|---|---|---|---|---|"
    } >"$RESULTS"
fi

run_one() {
    local t=$1 proj log rc execs rate corpus crashes
    proj=$(project_of "$t")
    log=$LOGS/$t.log
    rc=0
    (cd "$proj" && cargo fuzz run --fuzz-dir fuzz -s none --features libfuzzer -O "$t" "fuzz/corpus/$t" -- \
        -max_total_time=$((MINUTES * 60)) -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(find "$proj/fuzz/corpus/$t" -type f | wc -l)
    crashes=$(find "$proj/fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="exit $rc (see $log)"
    fi
    echo "| $t | $MINUTES | ${execs:-?} | ${rate:-?} | $corpus | $crashes | $(date -u +%Y-%m-%dT%H:%MZ) |" >>"$RESULTS"
    echo "$t: ${execs:-?} execs, ${rate:-?}/s, $crashes crashes"
    [ "$rc" -eq 0 ]
}

fail=0
running=0
pids=()
for t in $WANT; do
    if [ "$JOBS" -le 1 ]; then
        run_one "$t" || fail=1
    else
        run_one "$t" &
        pids+=($!)
        running=$((running + 1))
        if [ "$running" -ge "$JOBS" ]; then
            wait "${pids[0]}" || fail=1
            pids=("${pids[@]:1}")
            running=$((running - 1))
        fi
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || fail=1
done
echo "results appended to $RESULTS"
exit $fail
