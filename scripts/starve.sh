#!/usr/bin/env bash
# Robustness case 50, for real: Palim under load-harness load, its CPU cgroup limited to 0.5 CPU
# (cfs quota 50 ms per 100 ms period; v2 cpu.max "50000 100000") for 30 s, then lifted.
#
# Palim runs inside a new cpu cgroup (v1 /sys/fs/cgroup/cpu/<name>, or v2); the harness and the
# probes run outside it. A probe loop (one round every 0.5 s) times, with curl:
#   GET /about/health, a Colibri2 conference create with one endpoint (POST
#   /colibri/v2/conferences, the handler Jicofo's IQs go through) and its expire (PATCH), and
#   reads /colibri/stats rtp_packets_sent (the bridge's forwarding rate).
# Judged: no panic (alive, no "panicked" in the log, task_panics_total 0), every Colibri2/REST
# reply during the starvation under 5 s (Jicofo's IQ timeout), and media recovery: the first
# time after the lift at which the forwarding rate over 2 s is back to ≥ 80 % of its
# pre-starvation median, required < 10 s. Output in $STARVE_OUT (default $CARGO_TARGET_DIR/starve):
# probe.tsv, palim.log, harness.log/json, summary.txt. Exit 0 when all checks pass, 1 when one
# fails, 2 when cgroups are not available or writable.
#   STARVE_PROFILE=release ./scripts/starve.sh     (default: debug build)
#   STARVE_CPU=0.5 STARVE_SECONDS=30 STARVE_CONFS=2 (conferences of 5). The run fails if the
#   quota never throttled Palim (no starvation happened): then lower STARVE_CPU below what the
#   bridge uses at that load (shown as "palim CPU ... before") or raise STARVE_CONFS.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cgroup-lib.sh

profile=${STARVE_PROFILE:-debug}
cpu=${STARVE_CPU:-0.5}
starve_s=${STARVE_SECONDS:-30}
confs=${STARVE_CONFS:-2}
before_s=15
after_s=20
target_dir=${CARGO_TARGET_DIR:-target}
out=${STARVE_OUT:-$target_dir/starve}
bin=$target_dir/$profile
mkdir -p "$out"

if ! cg_detect cpu; then exit 2; fi
if ! cg_create "palim-starve-$$"; then exit 2; fi
cleanup() {
  [[ -n ${CG_DIR:-} ]] && cg_cpu_set_quota max 2>/dev/null || true
  for p in ${probe_pid:-} ${harness_pid:-} ${palim_pid:-}; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in ${harness_pid:-} ${palim_pid:-}; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cg_remove
}
trap cleanup EXIT
echo "starve: cgroup $CG_VERSION, group $CG_DIR" >&2

build_palim_and_harness "$profile" "${STARVE_NO_BUILD:-}"
rest_port=$(free_port)
rest=http://127.0.0.1:$rest_port
write_palim_config "$out/palim.toml" "$rest_port" </dev/null

cg_cpu_set_quota max
(cg_exec env -u XMPP_SERVER RUST_LOG=info "$bin/palim" --config "$out/palim.toml") >"$out/palim.log" 2>&1 </dev/null &
palim_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "$rest/about/version" && break
  kill -0 "$palim_pid" 2>/dev/null || { echo "starve: palim exited during start" >&2; cat "$out/palim.log" >&2; exit 1; }
  sleep 0.1
done
grep -qx "$palim_pid" "$CG_DIR/cgroup.procs" || { echo "starve: palim is not in $CG_DIR" >&2; exit 1; }

total_s=$((before_s + starve_s + after_s + 10))
"$bin/loadtest" -q --rest "$rest" --bridge-pid "$palim_pid" --scenario scenarios/meeting.toml \
  --conferences "$confs" --duration "${total_s}s" --json "$out/harness.json" >"$out/harness.log" 2>&1 &
harness_pid=$!
for _ in $(seq 300); do
  [[ $(curl -s "$rest/colibri/stats" | jq -r '.endpoints_connected // 0') -ge $((confs * 5)) ]] && break
  sleep 0.1
done

t0=$(date +%s.%N)
now() { echo "$(date +%s.%N) - $t0" | bc -l; }
# One probe round: t, health (code, s), create (code, s), expire (code, s), rtp_packets_sent, palim CPU ticks.
(
  printf 't_s\thealth\thealth_s\tcreate\tcreate_s\texpire\texpire_s\trtp_sent\tcpu_ticks\n'
  n=0
  while kill -0 "$palim_pid" 2>/dev/null; do
    n=$((n + 1))
    t=$(now)
    h=$(curl -s -o /dev/null -w '%{http_code}\t%{time_total}' --max-time 15 "$rest/about/health" || echo "000	15")
    c=$(curl -s -o /dev/null -w '%{http_code}\t%{time_total}' --max-time 15 -X POST -H 'Content-Type: application/json' \
      "$rest/colibri/v2/conferences" \
      -d "{\"meeting-id\":\"starve-probe-$n\",\"name\":\"probe$n@conference.meet.jitsi\",\"create\":true,\"endpoints\":[{\"id\":\"p$n\",\"create\":true,\"transport\":{\"ice-controlling\":true},\"capabilities\":[\"source-names\"]}]}" || echo "000	15")
    e=$(curl -s -o /dev/null -w '%{http_code}\t%{time_total}' --max-time 15 -X PATCH -H 'Content-Type: application/json' \
      "$rest/colibri/v2/conferences/starve-probe-$n" -d "{\"meeting-id\":\"starve-probe-$n\",\"expire\":true}" || echo "000	15")
    r=$(curl -s --max-time 15 "$rest/colibri/stats" | jq -r '.rtp_packets_sent // "?"')
    ticks=$(awk '{print $14 + $15}' "/proc/$palim_pid/stat" 2>/dev/null || echo "?")
    printf '%.2f\t%s\t%s\t%s\t%s\t%s\n' "$t" "$h" "$c" "$e" "$r" "$ticks"
    sleep 0.5
  done
) >"$out/probe.tsv" &
probe_pid=$!

sleep "$before_s"
thr_before=$(cg_cpu_throttled)
t_starve=$(now)
cg_cpu_set_quota "$cpu"
echo "starve: quota $cpu CPU from t=$t_starve s for $starve_s s" >&2
sleep "$starve_s"
cg_cpu_set_quota max
t_lift=$(now)
thr_after=$(cg_cpu_throttled)
echo "starve: quota lifted at t=$t_lift s" >&2
sleep "$after_s"
kill "$probe_pid" 2>/dev/null || true
wait "$probe_pid" 2>/dev/null || true
probe_pid=
wait "$harness_pid" 2>/dev/null && harness_rc=0 || harness_rc=$?
harness_pid=

# --- judge
check() { if [[ $1 == 1 ]]; then echo "PASS  $2"; else echo "FAIL  $2"; fi; }
hz=$(getconf CLK_TCK)
analysis=$(awk -F'\t' -v ts="$t_starve" -v tl="$t_lift" -v hz="$hz" '
  NR == 1 { next }
  {
    t = $1; n++
    T[n] = t; R[n] = $8; C[n] = $9
    # phase: 0 before, 1 starved, 2 after
    ph = (t < ts) ? 0 : (t < tl ? 1 : 2)
    for (k = 3; k <= 7; k += 2) {
      v = $k + 0
      if (ph == 1 && v > max1) max1 = v
      if (ph != 1 && v > max0) max0 = v
      if (ph == 1 && $(k - 1) !~ /^2/) bad1++
    }
    if (ph == 1) n1++
  }
  END {
    # Forwarding rate and CPU over windows of >= 2 s starting at each probe (single 0.5 s
    # intervals are too noisy: the harness shares the machine).
    m = 0
    for (i = 1; i <= n; i++) {
      for (j = i + 1; j <= n && T[j] < T[i] + 2; j++) {}
      if (j > n || R[i] == "?" || R[j] == "?") continue
      dt = T[j] - T[i]
      rate[i] = (R[j] - R[i]) / dt
      cpu[i] = (C[j] - C[i]) / hz / dt * 100
      if (T[i] >= ts - 12 && T[j] < ts) base[++m] = rate[i]
    }
    for (a = 2; a <= m; a++) { v = base[a]; b = a - 1; while (b >= 1 && base[b] > v) { base[b + 1] = base[b]; b-- } base[b + 1] = v }
    med = m ? base[int((m + 1) / 2)] : 0
    # Recovered: the first window starting after the lift at >= 80 % of the median before.
    rec = -1
    for (i = 1; i <= n; i++) if (T[i] >= tl && (i in rate) && rate[i] >= 0.8 * med) { rec = T[i] - tl; break }
    smin = -1; cs = 0; cn = 0; cb = 0; cbn = 0
    for (i = 1; i <= n; i++) if (i in rate) {
      if (T[i] >= ts && T[i] + 2 <= tl) { if (smin < 0 || rate[i] < smin) smin = rate[i]; cs += cpu[i]; cn++ }
      if (T[i] >= ts - 12 && T[i] + 2 < ts) { cb += cpu[i]; cbn++ }
    }
    printf "%.3f %.3f %d %d %.0f %.0f %.1f %.0f %.0f\n", max1, max0, bad1, n1, med, smin, rec, (cn ? cs / cn : 0), (cbn ? cb / cbn : 0)
  }' "$out/probe.tsv")
read -r max_starved max_other bad_starved rounds_starved base_rate min_rate recovery cpu_starved cpu_before <<<"$analysis"
{
  echo "Palim CPU starvation (robustness.md case 50), $(date -u +%FT%TZ), git $(git rev-parse --short HEAD), $profile build"
  echo "cgroup $CG_VERSION ($CG_DIR), quota $cpu CPU for $starve_s s, $confs × 5 endpoints (meeting scenario), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  read -r p0 n0 ms0 <<<"$thr_before"; read -r p1 n1 ms1 <<<"$thr_after"
  check "$([[ $((n1 - n0)) -gt 0 ]] && echo 1 || echo 0)" "the quota bit: throttled in $((n1 - n0)) of $((p1 - p0)) periods, $((ms1 - ms0)) ms in all; palim CPU $cpu_before % of a core before, $cpu_starved % during"
  echo "INFO  forwarding rate (bridge rtp_packets_sent, 2 s windows): median $base_rate pkt/s in the 12 s before, lowest $min_rate pkt/s while starved"
  check "$([[ $bad_starved == 0 ]] && echo 1 || echo 0)" "$rounds_starved probe rounds while starved, $bad_starved non-2xx replies"
  check "$(awk -v m="$max_starved" 'BEGIN {print (m < 5) ? 1 : 0}')" "slowest health/Colibri2 create/expire reply while starved ${max_starved} s (< 5 s); outside ${max_other} s"
  check "$(awk -v r="$recovery" 'BEGIN {print (r >= 0 && r < 10) ? 1 : 0}')" "media recovered ${recovery} s after the lift (first 2 s window forwarding ≥ 80 % of the median before; < 10 s; -1 = never)"
  alive=0; kill -0 "$palim_pid" 2>/dev/null && alive=1
  check "$alive" "palim alive at the end"
  panics=$(grep -c panicked "$out/palim.log" || true)
  tp=$(curl -s "$rest/metrics" | awk '$1 == "palim_task_panics_total" || $1 == "task_panics_total" {v = $2} END {print v}')
  check "$([[ $panics == 0 ]] && awk -v t="${tp:-0}" 'BEGIN {exit !(t == 0)}' && echo 1 || echo 0)" "no panic (log: $panics lines, task_panics_total ${tp:-n/a})"
  echo "INFO  harness exit status $harness_rc; loss $(jq -r '.totals.loss_percent // 0 | . * 100 | floor / 100' "$out/harness.json" 2>/dev/null) %, latency p99 $(jq -r '.totals.latency_ms_p99 // 0 | floor' "$out/harness.json" 2>/dev/null) ms over the whole run"
} | tee "$out/summary.txt"
! grep -q '^FAIL' "$out/summary.txt"
