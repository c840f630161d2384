#!/usr/bin/env bash
# The soak (issue 8 item 5, robustness.md §Soak): a release Palim under moderate load with
# churn (scenarios/soak.toml: 6 conferences × 5, one endpoint replaced every 2 s, one conference
# every 60 s) for SOAK_MINUTES (default 30), then judged:
#   * RSS at the end within SOAK_RSS_PERCENT (5) % above RSS after the warm-up (the first
#     sample after SOAK_WARMUP_SECONDS: 180 s, or a third of the run when it is under 10 min);
#   * open fds flat: end vs after warm-up, and after the harness expired everything vs before
#     the first join, each within ± SOAK_FD_SLACK (3);
#   * no panic: the bridge is still alive, its log has no "panicked", and task_panics_total (if
#     /metrics exports it) is 0;
#   * the bridge is empty after the harness expires everything, no churn join failed, every
#     endpoint connected and every joiner with a sending peer received media.
# Writes $SOAK_OUT (default $CARGO_TARGET_DIR/soak or target/soak): palim.log, result.json,
# report.html (RSS, fd and thread plots), summary.txt. Exits non-zero when a check fails.
# SOAK_NO_BUILD=1 skips the build; SOAK_BIN_DIR picks other palim/loadtest binaries;
# SOAK_SCENARIO another scenario (e.g. one without [churn], to compare).
#   SOAK_MINUTES=3 ./scripts/soak.sh        # a short proof run
#   ./scripts/soak.sh --seed 7              # extra arguments go to the harness
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${SOAK_MINUTES:-30}
if [[ -n ${SOAK_WARMUP_SECONDS:-} ]]; then
  warmup_s=$SOAK_WARMUP_SECONDS
elif ((minutes >= 10)); then
  warmup_s=180
else
  warmup_s=$((minutes * 20))
fi
rss_limit=${SOAK_RSS_PERCENT:-5}
fd_slack=${SOAK_FD_SLACK:-3}
scenario=${SOAK_SCENARIO:-scenarios/soak.toml}
target_dir=${CARGO_TARGET_DIR:-target}
out=${SOAK_OUT:-$target_dir/soak}
mkdir -p "$out"

if [[ -z ${SOAK_NO_BUILD:-} ]]; then
  cargo build --release -p signaling --bin palim -p loadtest --bin loadtest
fi
bin=${SOAK_BIN_DIR:-$target_dir/release}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rest_port=${SOAK_REST_PORT:-$(free_port)}
rest=http://127.0.0.1:$rest_port

env -u XMPP_SERVER RUST_LOG="${PALIM_LOG:-warn}" "$bin/palim" --udp-port 0 --rest-bind "127.0.0.1:$rest_port" \
  >"$out/palim.log" 2>&1 </dev/null &
palim_pid=$!
stop_palim() {
  if kill -0 "$palim_pid" 2>/dev/null; then
    kill "$palim_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$palim_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$palim_pid" 2>/dev/null || true
  fi
}
trap stop_palim EXIT
for _ in $(seq 200); do
  curl -fs "$rest/about/health" >/dev/null 2>&1 && break
  kill -0 "$palim_pid" 2>/dev/null || { echo "soak: palim exited during start" >&2; cat "$out/palim.log" >&2; exit 1; }
  sleep 0.1
done

echo "soak: palim pid $palim_pid on $rest; ${minutes} min, RSS baseline after ${warmup_s} s; output in $out" >&2
started=$(date -u +%FT%TZ)
set +e
"$bin/loadtest" --rest "$rest" --bridge-pid "$palim_pid" --scenario "$scenario" \
  --duration "${minutes}m" --rss-warmup "${warmup_s}s" \
  --json "$out/result.json" --report "$out/report.html" "$@" 2>&1 | tee "$out/harness.log"
harness_rc=${PIPESTATUS[0]}
set -e

check() { # check <ok 0|1> <message>
  if [[ $1 == 1 ]]; then echo "PASS  $2"; else echo "FAIL  $2"; fi
}
{
  echo "Palim soak, started $started, ${minutes} min, scenario $scenario $*"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  check "$([[ $harness_rc == 0 ]] && echo 1 || echo 0)" "harness exit status $harness_rc"
  alive=0; kill -0 "$palim_pid" 2>/dev/null && alive=1
  check "$alive" "palim still running after the run"
  panics=$(grep -c "panicked" "$out/palim.log" || true)
  check "$([[ $panics == 0 ]] && echo 1 || echo 0)" "palim log: $panics line(s) with \"panicked\""
  task_panics=$(curl -fs "$rest/metrics" 2>/dev/null | awk '/^(palim_)?task_panics_total /{print $2}' | head -1)
  if [[ -n $task_panics ]]; then
    check "$([[ ${task_panics%.*} == 0 ]] && echo 1 || echo 0)" "task_panics_total $task_panics"
  else
    echo "INFO  task_panics_total not exported by /metrics"
  fi
  if [[ -s $out/result.json ]]; then
    j() { jq -r "$1" "$out/result.json"; }
    j2() { jq -r "($1) | if . == null then \"n/a\" else (. * 100 | round / 100) end" "$out/result.json"; }
    rs=$(j2 .resources.rss_start_mib) re=$(j2 .resources.rss_end_mib) rm=$(j2 .resources.rss_max_mib)
    drift=$(j2 .resources.rss_drift_percent)
    ok=$(jq -r --argjson lim "$rss_limit" '.resources.rss_drift_percent as $d | if $d == null then 0 elif $d <= $lim then 1 else 0 end' "$out/result.json")
    check "$ok" "RSS after warm-up ${rs} MiB, end ${re} MiB (max ${rm}): drift ${drift} % (limit +${rss_limit} %)"
    fs=$(j .resources.fds_start) fe=$(j .resources.fds_end) fm=$(j .resources.fds_max)
    ok=$(jq -r --argjson s "$fd_slack" '.resources | if .fds_start == null or .fds_end == null then 0 elif ((.fds_end - .fds_start) | fabs) <= $s then 1 else 0 end' "$out/result.json")
    check "$ok" "fds after warm-up $fs, end $fe (max $fm), within ± $fd_slack"
    fb=$(j .resources.before.fds) fa=$(j .resources.after_expire.fds)
    ok=$(jq -r --argjson s "$fd_slack" '.resources.fd_drift as $d | if $d == null then 0 elif ($d | fabs) <= $s then 1 else 0 end' "$out/result.json")
    check "$ok" "fds before the run $fb, after expiring everything $fa, within ± $fd_slack"
    echo "INFO  threads after warm-up $(j .resources.threads_start), end $(j .resources.threads_end)"
    after=$(j '.resources.stats_after_expire | "\(.conferences) conferences, \(.endpoints) endpoints"')
    ok=$(jq -r '.resources.stats_after_expire | if . != null and .conferences == 0 and .endpoints == 0 then 1 else 0 end' "$out/result.json")
    check "$ok" "/colibri/stats after expiring everything: $after (at end: $(j '.resources.stats_at_end | "\(.conferences) conferences, \(.endpoints) endpoints"'))"
    ok=$(jq -r 'if .connected == .endpoints then 1 else 0 end' "$out/result.json")
    check "$ok" "endpoints connected $(j .connected) of $(j .endpoints) that ever joined"
    if [[ $(j '.churn != null') == true ]]; then
      ok=$(jq -r '.churn | if .join_failures == 0 and .joins > 0 then 1 else 0 end' "$out/result.json")
      check "$ok" "churn: $(j '.churn | "\(.leaves) leaves, \(.joins) joins, \(.join_failures) failed, \(.conferences_expired) conferences replaced; join ms p50 \(.join_ms_p50 // 0 | floor) p99 \(.join_ms_p99 // 0 | floor) max \(.join_ms_max // 0 | floor)"')"
      ok=$(jq -r '.churn | if .joiners_with_media == .joiners_expecting_media then 1 else 0 end' "$out/result.json")
      check "$ok" "churn joiners that received media: $(j .churn.joiners_with_media) of $(j .churn.joiners_expecting_media)"
    else
      echo "INFO  no churn in this scenario"
    fi
    echo "INFO  loss $(j '.totals.loss_percent * 100 | floor / 100') %, latency p99 $(j '.totals.latency_ms_p99 * 10 | floor / 10') ms, harness timer lag p99 $(j '.totals.harness_lag_ms_p99 * 10 | floor / 10') ms, bridge CPU $(j '.bridge.cpu_percent // 0 | floor') %"
  else
    check 0 "no result.json"
  fi
} | tee "$out/summary.txt"
if grep -q '^FAIL' "$out/summary.txt"; then
  echo "soak: FAILED (see $out/summary.txt)" >&2
  exit 1
fi
echo "soak: passed ($out/summary.txt)" >&2
