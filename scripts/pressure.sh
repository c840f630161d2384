#!/usr/bin/env bash
# Robustness case 51, for real: Palim in a memory cgroup limited to 2× its steady-state RSS,
# load driven up with the load harness until it sheds (health 503, stress 1.0, new endpoints and
# conferences refused) instead of being OOM-killed.
#
#  1. steady state: Palim outside any cgroup of ours under PRESSURE_STEADY_CONFS (2) harness
#     conferences of 5 (scenarios/meeting.toml); its RSS at the end is the steady state.
#  2. a memory cgroup (v1 memory.limit_in_bytes or v2 memory.max) of 2× that; Palim restarted
#     inside it with [limits] memory_limit_mib = 0, so it reads the limit from the cgroup.
#  3. one more harness instance (1 conference of 5, PRESSURE_HOLD_S long) every
#     PRESSURE_STEP_S seconds until Palim sheds (or PRESSURE_MAX_INSTANCES); then a REST
#     Colibri2 endpoint create into a running conference and a new conference, both expected
#     to be refused; the running conferences go on until their harnesses end (they expire
#     them), and the timeline shows whether shedding ends once RSS is below 75 %.
#  4. judged: shedding seen, /about/health 503, stress 1.0, refusals, no OOM kill (oom_control /
#     memory.events), Palim alive, no panic, the running harnesses' media continued; failcnt and
#     the cgroup's peak usage are reported.
# Output in $PRESSURE_OUT (default $CARGO_TARGET_DIR/pressure): timeline.tsv (one line per
# 0.5 s), palim-*.log, harness-*.log, summary.txt. Exit status 0 when every check passed,
# 1 when one failed, 2 when cgroups are not available or writable.
#   PRESSURE_PROFILE=release ./scripts/pressure.sh     (default: debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cgroup-lib.sh

profile=${PRESSURE_PROFILE:-debug}
steady_confs=${PRESSURE_STEADY_CONFS:-2}
step_s=${PRESSURE_STEP_S:-6}
hold_s=${PRESSURE_HOLD_S:-60}
max_instances=${PRESSURE_MAX_INSTANCES:-12}
target_dir=${CARGO_TARGET_DIR:-target}
out=${PRESSURE_OUT:-$target_dir/pressure}
bin=$target_dir/$profile
mkdir -p "$out"
rm -f "$out"/harness-*.log "$out"/harness-*.json "$out"/timeline.tsv

if ! cg_detect memory; then exit 2; fi
if ! cg_create "palim-pressure-$$"; then exit 2; fi
cleanup() {
  for p in ${harness_pids:-} ${palim_pid:-}; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in ${harness_pids:-} ${palim_pid:-}; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cg_remove
}
trap cleanup EXIT
echo "pressure: cgroup $CG_VERSION, group $CG_DIR" >&2

build_palim_and_harness "$profile" "${PRESSURE_NO_BUILD:-}"
rest_port=$(free_port)
rest=http://127.0.0.1:$rest_port
write_palim_config "$out/palim.toml" "$rest_port" <<'EOF'
[limits]
memory_limit_mib = 0
EOF

start_palim() { # log-name [in-cgroup]
  if [[ ${2:-} == cgroup ]]; then
    (cg_exec env -u XMPP_SERVER RUST_LOG=info "$bin/palim" --config "$out/palim.toml") >"$out/$1" 2>&1 </dev/null &
  else
    env -u XMPP_SERVER RUST_LOG=info "$bin/palim" --config "$out/palim.toml" >"$out/$1" 2>&1 </dev/null &
  fi
  palim_pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "$rest/about/version" && return 0
    kill -0 "$palim_pid" 2>/dev/null || { echo "pressure: palim exited during start" >&2; cat "$out/$1" >&2; exit 1; }
    sleep 0.1
  done
  echo "pressure: palim did not answer" >&2
  exit 1
}
stop_palim() {
  kill "$palim_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$palim_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$palim_pid" 2>/dev/null || true
  wait "$palim_pid" 2>/dev/null || true
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$palim_pid/status" 2>/dev/null || echo 0; }
metric() { curl -s "$rest/metrics" | awk -v n="$1" '$1 == n {v = $2} END {print v}'; }

# --- 1. steady state
start_palim palim-steady.log
echo "pressure: steady state, $steady_confs × 5 endpoints (meeting scenario), $profile build" >&2
"$bin/loadtest" -q --rest "$rest" --bridge-pid "$palim_pid" --scenario scenarios/meeting.toml \
  --conferences "$steady_confs" --duration 15s --json "$out/harness-steady.json" >"$out/harness-steady.log" 2>&1 || true
steady_kib=$(jq -r '.resources.rss_end_mib // empty | . * 1024 | floor' "$out/harness-steady.json" 2>/dev/null || true)
[[ -n $steady_kib ]] || steady_kib=$(rss_kib)
idle_mib=$(jq -r '.resources.before.rss_mib // "?" | if type == "number" then (. * 10 | floor / 10) else . end' "$out/harness-steady.json" 2>/dev/null || echo "?")
stop_palim
limit=$((steady_kib * 2 * 1024))
echo "pressure: steady-state RSS $((steady_kib / 1024)) MiB (idle ${idle_mib} MiB); cgroup limit $((limit >> 20)) MiB" >&2

# --- 2. Palim inside the cgroup
cg_mem_set_limit "$limit"
start_palim palim-cgroup.log cgroup
grep -qx "$palim_pid" "$CG_DIR/cgroup.procs" || { echo "pressure: palim is not in $CG_DIR" >&2; exit 1; }
sleep 1.5
seen_limit=$(metric palim_memory_limit_bytes)

# --- timeline sampler
t0=$(date +%s.%N)
(
  printf 't_s\trss_mib\tcgroup_usage_mib\tfailcnt\thealth\tstress\tshedding\tconferences\tendpoints\trtp_sent\trefused_memory\n'
  while kill -0 "$palim_pid" 2>/dev/null; do
    h=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$rest/about/health" || echo 000)
    st=$(curl -s --max-time 2 "$rest/colibri/stats" || echo '{}')
    ref=$(curl -s --max-time 2 "$rest/metrics" | awk '$1 == "palim_limit_refusals_total{limit=\"memory\"}" {print $2}')
    printf '%.1f\t%.1f\t%.1f\t%s\t%s\t%s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" \
      "$(echo "$(rss_kib) / 1024" | bc -l)" "$(echo "$(cg_mem_usage) / 1048576" | bc -l)" "$(cg_mem_failcnt)" "$h" \
      "$(jq -r '[.stress_level, .memory_shedding, .conferences, .endpoints, .rtp_packets_sent] | map(tostring) | join("\t")' <<<"$st" 2>/dev/null)	${ref:-?}"
    sleep 0.5
  done
) >"$out/timeline.tsv" &
sampler_pid=$!

# --- 3. drive load up until shedding
harness_pids=
instances=0
shedding_at=
while ((instances < max_instances)); do
  instances=$((instances + 1))
  "$bin/loadtest" -q --rest "$rest" --scenario scenarios/meeting.toml --conferences 1 --join-rate 5 \
    --warmup 2s --duration "${hold_s}s" --seed "$instances" --json "$out/harness-$instances.json" \
    >"$out/harness-$instances.log" 2>&1 &
  harness_pids="$harness_pids $!"
  echo "pressure: harness $instances started; RSS $(($(rss_kib) / 1024)) MiB" >&2
  for _ in $(seq $((step_s * 2))); do
    sleep 0.5
    if [[ $(curl -s "$rest/colibri/stats" | jq -r .memory_shedding) == true ]]; then
      shedding_at=$instances
      break 2
    fi
  done
done
peak_load=$instances

refused_endpoint=
refused_conference=
if [[ -n $shedding_at ]]; then
  echo "pressure: shedding after harness $shedding_at; RSS $(($(rss_kib) / 1024)) MiB" >&2
  health_body=$(curl -s "$rest/about/health")
  # A new endpoint in a running conference (as Jicofo would add a participant).
  meeting=$(curl -s "$rest/debug" | jq -r '.conferences | keys[0] // empty')
  refused_endpoint=$(curl -s -w ' HTTP %{http_code}' -X PATCH -H 'Content-Type: application/json' \
    "$rest/colibri/v2/conferences/$meeting" \
    -d '{"endpoints":[{"id":"pressure-probe","create":true,"transport":{"ice-controlling":true},"capabilities":["source-names"]}]}')
  # A new conference (the harness itself will not start against a 503 health check).
  refused_conference=$(curl -s -w ' HTTP %{http_code}' -X POST -H 'Content-Type: application/json' \
    "$rest/colibri/v2/conferences" \
    -d '{"meeting-id":"pressure-probe","name":"probe@conference.meet.jitsi","create":true,"endpoints":[{"id":"p1","create":true,"transport":{"ice-controlling":true},"capabilities":["source-names"]}]}')
  sleep 10 # the running conferences keep forwarding while shedding
fi

# --- wait for the harnesses (they expire their conferences at the end), then watch recovery
for p in $harness_pids; do wait "$p" 2>/dev/null || true; done
harness_pids=
sleep 8
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true

# --- 4. judge
check() { if [[ $1 == 1 ]]; then echo "PASS  $2"; else echo "FAIL  $2"; fi; }
col() { awk -F'\t' -v c="$1" 'NR > 1 {print $c}' "$out/timeline.tsv"; }
{
  echo "Palim memory pressure (robustness.md case 51), $(date -u +%FT%TZ), git $(git rev-parse --short HEAD), $profile build"
  echo "cgroup $CG_VERSION ($CG_DIR), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "INFO  steady state ($steady_confs × 5 endpoints): RSS $((steady_kib / 1024)) MiB (idle ${idle_mib} MiB); cgroup limit 2× = $((limit >> 20)) MiB; shed at 85 % = $((limit * 85 / 100 >> 20)) MiB"
  check "$([[ ${seen_limit%.*} == "$limit" ]] && echo 1 || echo 0)" "palim read the cgroup limit: palim_memory_limit_bytes ${seen_limit:-none} (set $limit)"
  check "$([[ -n $shedding_at ]] && echo 1 || echo 0)" "shedding reached with $peak_load harness instance(s) of 5 endpoints (+ none after)"
  max_rss=$(col 2 | sort -g | tail -1)
  max_usage=$(if [[ $CG_VERSION == v1 ]]; then echo $(($(cat "$CG_DIR/memory.max_usage_in_bytes") >> 20)); else echo "n/a"; fi)
  echo "INFO  peak RSS ${max_rss} MiB, peak cgroup usage ${max_usage} MiB of $((limit >> 20)) MiB; failcnt $(cg_mem_failcnt)"
  n503=$(col 5 | grep -c '^503$' || true)
  check "$([[ $n503 -gt 0 ]] && echo 1 || echo 0)" "/about/health 503 in $n503 samples: ${health_body:-}"
  n1=$(col 6 | grep -c '^1$\|^1.0$' || true)
  check "$([[ $n1 -gt 0 ]] && echo 1 || echo 0)" "stress_level 1.0 in $n1 samples"
  check "$([[ $refused_endpoint == *'Limit reached: memory'*'HTTP 503' ]] && echo 1 || echo 0)" "new endpoint in a running conference refused: $refused_endpoint"
  check "$([[ $refused_conference == *'Limit reached: memory'*'HTTP 503' ]] && echo 1 || echo 0)" "new conference refused: $refused_conference"
  echo "INFO  palim_limit_refusals_total{limit=\"memory\"} $(metric 'palim_limit_refusals_total{limit="memory"}')"
  oom=$(cg_mem_oom_kills)
  check "$([[ $oom == 0 ]] && echo 1 || echo 0)" "no OOM kill in the cgroup (oom_kill $oom, under_oom $(cg_mem_under_oom))"
  alive=0; kill -0 "$palim_pid" 2>/dev/null && alive=1
  check "$alive" "palim alive at the end (pid $palim_pid)"
  panics=$(grep -c panicked "$out/palim-cgroup.log" || true)
  check "$([[ $panics == 0 ]] && echo 1 || echo 0)" "no panic in the log"
  ok_h=0; bad_h=
  for i in $(seq "$peak_load"); do
    if [[ -s $out/harness-$i.json ]]; then ok_h=$((ok_h + 1)); else bad_h="$bad_h $i"; fi
  done
  check "$([[ -z $bad_h ]] && echo 1 || echo 0)" "harnesses that started before shedding completed with media: $ok_h of $peak_load${bad_h:+ (failed:$bad_h)}"
  for i in $(seq "$peak_load"); do
    [[ -s $out/harness-$i.json ]] && echo "INFO    harness $i: loss $(jq -r '.totals.loss_percent * 100 | floor / 100' "$out/harness-$i.json") %, connected $(jq -r .connected "$out/harness-$i.json") of $(jq -r .endpoints "$out/harness-$i.json")"
  done
  last=$(tail -1 "$out/timeline.tsv")
  echo "INFO  at the end (after the harnesses expired their conferences): $(awk -F'\t' '{printf "RSS %s MiB, health %s, stress %s, shedding %s, conferences %s, refusals %s", $2, $5, $6, $7, $8, $11}' <<<"$last")"
} | tee "$out/summary.txt"
! grep -q '^FAIL' "$out/summary.txt"
