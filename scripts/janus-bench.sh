#!/usr/bin/env bash
# Palim beside Janus (issue 3, item 7): the same str0m endpoints and the same media (Opus +
# one 500 kbps VP8 stream per participant, every participant receives every other one of its
# room) against Palim and then against Janus 1.1.2's videoroom, one SFU at a time. Optionally
# the SFU is pinned to one core and the harness to the other. Prints a comparison table.
#
# Usage (as root, needs `apt-get install -y janus`):
#   scripts/janus-bench.sh                 scenarios 2x5 and 4x8 (rooms x participants)
#   scripts/janus-bench.sh 1x3 3x6         other scenarios
# Environment: DURATION (30s), VIDEO_KBPS (500), REPEAT (1),
#   SFU_CPU / HARNESS_CPU (unset: no pinning; e.g. SFU_CPU=1 HARNESS_CPU=0 pins with taskset),
#   OUT (result dir; default a new /tmp/janus-bench.* dir), NO_BUILD=1 (use existing binaries),
#   JANUS_EXTRA (more `loadtest janus` flags, e.g. --simulcast), SKIP_PALIM=1 (Janus rows only),
#   CARGO_TARGET_DIR (where the release binaries are), TABLE_ONLY=1 (only print the table of the
#   results already in OUT).
#
# Janus runs in a network namespace behind a veth pair (scripts/janus/run.sh, from the shared
# recipe: libnice never uses loopback); Palim runs on 127.0.0.1 as `loadtest` expects. Both
# paths are in-kernel, but the veth one costs a little more softirq time, which the kernel may
# charge to whichever process is on the core (often the SFU).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-30s}
VIDEO_KBPS=${VIDEO_KBPS:-500}
SFU_CPU=${SFU_CPU:-}
HARNESS_CPU=${HARNESS_CPU:-}
SFU_PIN=(); [ -z "$SFU_CPU" ] || SFU_PIN=(taskset -c "$SFU_CPU")
HARNESS_PIN=(); [ -z "$HARNESS_CPU" ] || HARNESS_PIN=(taskset -c "$HARNESS_CPU")
REPEAT=${REPEAT:-1}
OUT=${OUT:-$(mktemp -d /tmp/janus-bench.XXXXXX)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(2x5 4x8)

[ "$(id -u)" -eq 0 ] || { echo "janus-bench: needs root (network namespaces)" >&2; exit 1; }
[ -x /usr/bin/janus ] || { echo "janus-bench: apt-get install -y janus" >&2; exit 1; }
mkdir -p "$OUT"

if [ "${NO_BUILD:-0}" != 1 ] && [ "${TABLE_ONLY:-0}" != 1 ]; then
	(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p loadtest -p signaling --bin loadtest --bin palim)
fi
LOADTEST=$TARGET/release/loadtest
PALIM=$TARGET/release/palim

free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

PALIM_PID=""
stop_palim() {
	if [ -n "$PALIM_PID" ]; then
		kill -TERM "$PALIM_PID" 2>/dev/null || true
		wait "$PALIM_PID" 2>/dev/null || true
		PALIM_PID=""
	fi
}
trap stop_palim EXIT

run_palim() { # rooms participants json
	local rest udp
	rest=$(free_port SOCK_STREAM); udp=$(free_port SOCK_DGRAM)
	env -u XMPP_SERVER RUST_LOG=warn "${SFU_PIN[@]}" "$PALIM" --udp-port "$udp" --rest-bind "127.0.0.1:$rest" \
		> "$3.palim.log" 2>&1 &
	PALIM_PID=$!
	for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$rest/about/health" && break; sleep 0.2; done
	"${HARNESS_PIN[@]}" "$LOADTEST" --rest "http://127.0.0.1:$rest" --bridge-pid "$PALIM_PID" \
		--conferences "$1" --endpoints "$2" --duration "$DURATION" --codec vp8 --json "$3" -q \
		> "$3.out" 2>&1 || echo "palim run $1x$2 failed (see $3.out)" >&2
	stop_palim
}

run_janus() { # rooms participants json
	JANUS_CPUS="$SFU_CPU" "$HERE/janus/run.sh" -- "${HARNESS_PIN[@]}" "$LOADTEST" janus \
		--conferences "$1" --endpoints "$2" --duration "$DURATION" --video-kbps "$VIDEO_KBPS" --json "$3" ${JANUS_EXTRA:-} \
		> "$3.out" 2>&1 || echo "janus run $1x$2 failed (see $3.out)" >&2
}

for s in "${SCENARIOS[@]}"; do
	[ "${TABLE_ONLY:-0}" != 1 ] || break
	rooms=${s%x*}; n=${s#*x}
	for r in $(seq 1 "$REPEAT"); do
		if [ "${SKIP_PALIM:-0}" != 1 ]; then
			echo "== $s run $r: palim" >&2
			run_palim "$rooms" "$n" "$OUT/palim-$s-$r.json"
		fi
		echo "== $s run $r: janus" >&2
		run_janus "$rooms" "$n" "$OUT/janus-$s-$r.json"
	done
done

# CPU-seconds per million forwarded packets equals CPU µs per forwarded packet.
# Forwarded: Palim's own RTP-sent counter; for Janus, the RTP packets its subscribers received.
echo
echo "results in $OUT (DURATION=$DURATION, VIDEO_KBPS=$VIDEO_KBPS, SFU on CPU ${SFU_CPU:-any}, harness on CPU ${HARNESS_CPU:-any})"
printf '%-6s %-6s %-3s %8s %9s %10s %7s %8s %8s %8s %12s\n' \
	sfu scen run conn fwd_pps fwd_total loss% p50_ms p99_ms cpu_s "cpu_s/Mpkt"
for s in "${SCENARIOS[@]}"; do
	for r in $(seq 1 "$REPEAT"); do
		for sfu in palim janus; do
			f="$OUT/$sfu-$s-$r.json"
			if [ ! -s "$f" ]; then printf '%-6s %-6s %-3s %s\n' "$sfu" "$s" "$r" "no result"; continue; fi
			# The harness's summary nests totals and bridge figures; the Janus runner's is flat.
			jq -r --arg sfu "$sfu" --arg s "$s" --arg r "$r" '
				(if .totals then (. + .totals + {duration_s: (.window[1] - .window[0]),
				   bridge_cpu_s: .bridge.cpu_s, forwarded_packets: .bridge.forwarded_packets,
				   bridge_cpu_us_per_forwarded_packet: .bridge.cpu_us_per_forwarded_packet}) else . end)
				| (if .forwarded_packets then .forwarded_packets
				 elif (.bridge_cpu_us_per_forwarded_packet // 0) > 0 then (.bridge_cpu_s * 1e6 / .bridge_cpu_us_per_forwarded_packet)
				 else null end) as $fwd
				| [$sfu, $s, $r, "\(.connected)/\(.endpoints)",
				   (if $fwd then ($fwd / .duration_s | floor) else "-" end),
				   (if $fwd then ($fwd | round) else "-" end),
				   (.loss_percent * 100 | round / 100), (.latency_ms_p50 * 100 | round / 100),
				   (.latency_ms_p99 * 100 | round / 100), (if .bridge_cpu_s then (.bridge_cpu_s * 100 | round / 100) else "-" end),
				   (if .bridge_cpu_us_per_forwarded_packet then (.bridge_cpu_us_per_forwarded_packet * 100 | round / 100) else "-" end)]
				| @tsv' "$f" | awk -F'\t' '{ printf "%-6s %-6s %-3s %8s %9s %10s %7s %8s %8s %8s %12s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11 }'
		done
	done
done
