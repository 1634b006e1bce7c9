#!/usr/bin/env bash
# Interleaved short runs of the C baseline and one or more ipckit binaries, for A/B work on
# a noisy machine: the host's state drifts over seconds, so compare within one call.
#
#   scripts/interleave.sh rtt    N MECH SIZE BIN...   # median of the runs' RTT medians and p99s
#   scripts/interleave.sh stream N MECH SIZE BIN...   # median msgs/s of the runs
#
# Each binary's line ends with the median of its per-run ratios to the C run of the same round.
#
# CMECH names the C mechanism to run beside MECH (default shm_spin), ITERS the round trips
# (default 50000), DUR the streaming seconds (default 1). Each run is SCHED_FIFO (chrt -f 10)
# so that nice'd work (a build) cannot preempt it. The kernel throttles real-time tasks for
# 50 ms of every second (/proc/sys/kernel/sched_rt_runtime_us = 950000); keep it so. A bench
# parent once spun in the kernel for good under chrt, ignoring SIGKILL, while reaping its
# peer (fixed in d72fb8c, docs/BENCHMARKS.md); if a run ever hangs with a thread at 100 %
# system time, `chrt -o -p 0 TID` on that thread ends it.
# Build the C yardstick with
#   gcc -std=c11 -O2 -pthread -o /tmp/ipc-baseline ../shared/ipc-baseline/baseline.c -lrt
set -euo pipefail
what=$1 n=$2 mech=$3 size=$4
shift 4
base=${IPC_BASELINE:-/tmp/ipc-baseline}
cmech=${CMECH:-shm_spin}
iters=${ITERS:-50000}
dur=${DUR:-1}
field() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
declare -A med p99 rate
for _ in $(seq "$n"); do
  if [ "$what" = rtt ]; then
    o=$(chrt -f 10 "$base" --mech "$cmech" --size "$size" --iters "$iters" --duration 0.1 --json 2>/dev/null)
  else
    o=$(chrt -f 10 "$base" --mech "$cmech" --size "$size" --iters 1000 --duration "$dur" --json 2>/dev/null)
  fi
  med[C]+="$(echo "$o" | field rtt_ns_median) "; p99[C]+="$(echo "$o" | field rtt_ns_p99) "
  rate[C]+="$(echo "$o" | field msgs_per_s) "
  for b in "$@"; do
    if [ "$what" = rtt ]; then
      o=$(chrt -f 10 "$b" bench --mech "$mech" --size "$size" --iters "$iters" --duration 0.1 --repeat 1 --json 2>/dev/null)
    else
      o=$(chrt -f 10 "$b" bench --mech "$mech" --size "$size" --iters 1000 --duration "$dur" --repeat 1 --json 2>/dev/null)
    fi
    med[$b]+="$(echo "$o" | field rtt_ns_median) "; p99[$b]+="$(echo "$o" | field rtt_ns_p99) "
    rate[$b]+="$(echo "$o" | field msgs_per_s) "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# Median of the per-run ratios to the C run just before: on this host, whose speed shifts
# between runs, a steadier figure than the ratio of the two medians.
paired() {
  paste -d' ' <(echo "$1" | tr ' ' '\n' | grep .) <(echo "$2" | tr ' ' '\n' | grep .) |
    awk '$2 > 0 {print $1 / $2}' | median
}
for k in C "$@"; do
  if [ "$what" = rtt ]; then
    line="$k: rtt median $(echo "${med[$k]}" | median) ns (runs: ${med[$k]}) p99 $(echo "${p99[$k]}" | median)"
    [ "$k" = C ] || line+=" paired ratio to C $(paired "${med[$k]}" "${med[C]}")"
    echo "$line"
  else
    line="$k: msgs/s median $(echo "${rate[$k]}" | median) (runs: ${rate[$k]})"
    [ "$k" = C ] || line+=" paired ratio to C $(paired "${rate[$k]}" "${rate[C]}")"
    echo "$line"
  fi
done
