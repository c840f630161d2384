#!/usr/bin/env bash
# A/B of [sfu] io_batch (docs/benchmarks.md): the same scenario against palim with io_batch = 32, then 1,
# system calls counted with perf stat (tracepoints) on the bridge pid. Needs perf and a release build:
#   cargo build --release -p signaling --bin palim -p loadtest --bin loadtest && DUR=20s scripts/io-batch-ab.sh
# Writes its files into the current directory; run it from a scratch directory with B and SC absolute.
set -u
B=${B:-target/release}
SC=${SC:-scenarios/meeting.toml}
for round in ${ROUNDS:-1}; do
for batch in 32 1; do
  printf '[sfu]\nio_batch = %s\n[ice]\nbind_address = "127.0.0.1"\nudp_port = 10400\n[rest]\nbind = "127.0.0.1:18480"\n' $batch > cfg-$batch.toml
  RUST_LOG=warn $B/palim --config cfg-$batch.toml > palim-$batch.log 2>&1 &
  pid=$!
  sleep 2
  perf stat -e 'raw_syscalls:sys_enter,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,task-clock' -p $pid -o perf-$batch-$round.txt &
  perfpid=$!
  $B/loadtest --scenario $SC --rest http://127.0.0.1:18480 --bridge-pid $pid --duration ${DUR:-20s} --json r-$batch-$round.json -q > lt-$batch-$round.log 2>&1
  kill -INT $perfpid; wait $perfpid 2>/dev/null
  kill $pid; wait $pid 2>/dev/null
  echo "batch=$batch round=$round: $(grep 'per forwarded' lt-$batch-$round.log)"
  grep -E "sys_enter|task-clock" perf-$batch-$round.txt | awk '{print "   ", $1, $2}'
done; done
