#!/usr/bin/env bash
# This host has a fast phase: for seconds at a time, the C cache-line ping-pong (spin_flag)
# takes about 80 ns a round trip instead of 340-480, and the shm rows' round trips show the
# sides' own work instead of the line transfers (docs/BENCHMARKS.md, fourteenth and
# fifteenth sessions). This waits for it and measures then.
#
#   scripts/fast-phase.sh SECONDS BIN...   # watch for SECONDS; in each fast phase, rounds of
#                                          # C shm_spin and each BIN's shm-spin round trip
#
# Every POLL seconds (default 2) it runs spin_flag once (0.1 s). Below 200 ns it runs short
# rounds (5,000 round trips each: C shm_spin, then each BIN's shm-spin followed by C again,
# the BINs taking turns at going first) until C's figure is slow again. A round lists after
# FAST the BINs whose C runs before and after were both under 200 ns (the phase often ends
# within seconds); a round with none is tagged slow. BUS=1 adds, per round, one bench call
# per BIN of shm and bus-local and prints the bus round trip over shm's (issue 7's 1.5).
# `grep FAST` the output; compare BINs within a round.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=$1
shift
base=${IPC_BASELINE:-/tmp/ipc-baseline}
rtt() { grep -o '"rtt_ns_median":[0-9]*' | head -1 | cut -d: -f2; }
end=$((SECONDS + secs))
round=0
cshm() {
  chrt -f 10 "$base" --mech shm_spin --size 64 --iters 5000 --duration 0.05 --json \
    2>/dev/null | rtt || true
}
while [ $SECONDS -lt $end ]; do
  f=$(chrt -f 10 "$base" --mech spin_flag --size 64 --iters 20000 --duration 0.1 --json \
    2>/dev/null | rtt || true)
  echo "$(date +%T) spin_flag ${f:-?} ns"
  while [ -n "$f" ] && [ "$f" -lt 200 ] && [ $SECONDS -lt $end ]; do
    # C before and after every binary: a binary's figure is FAST only if both are (the phase
    # can end within a round), and the binaries take turns at going first.
    c=$(cshm)
    line="C ${c:-?}"
    fast=()
    n=$#
    bins=("$@")
    for k in $(seq 0 $((n - 1))); do
      bin=${bins[$(((k + round) % n))]}
      r=$(chrt -f 10 "$bin" bench --mech shm-spin --size 64 --iters 5000 --duration 0.05 \
        --repeat 1 --json 2>/dev/null | rtt || true)
      c2=$(cshm)
      line+=" | $(basename "$bin") ${r:-?} | C ${c2:-?}"
      if [ -n "$c" ] && [ -n "$c2" ] && [ "$c" -lt 200 ] && [ "$c2" -lt 200 ] && [ -n "$r" ]; then
        fast+=("$(basename "$bin")=$r")
      fi
      c=$c2
    done
    round=$((round + 1))
    tag=slow
    if [ ${#fast[@]} -gt 0 ]; then tag="FAST ${fast[*]}"; fi
    echo "$(date +%T) $tag; shm-spin rtt ns: $line"
    if [ "${BUS:-0}" = 1 ]; then
      for bin in "$@"; do
        chrt -f 10 "$bin" bench --mech shm,bus-local --size 64 --iters 5000 --duration 0.05 \
          --repeat 1 --json 2>/dev/null | python3 -c '
import json, sys
r = {j["mech"]: j["rtt_ns_median"] for j in map(json.loads, filter(str.strip, sys.stdin))}
s, b = r.get("shm"), r.get("bus-local")
print("   ", sys.argv[1], "shm", s, "bus-local", b, "ratio %.2f" % (b / s) if s and b else "")
' "$(basename "$bin")" || true
      done
    fi
    # C's shm_spin is about 110 ns in the fast phase, 500-700 outside it.
    f=$c
  done
  sleep "${POLL:-2}"
done
