#!/usr/bin/env bash
# This host has a fast phase: for seconds to minutes, the C cache-line ping-pong (spin_flag)
# takes about 80 ns a round trip instead of 340-480, and the shm rows' round trips show the
# sides' own work instead of the line transfers (docs/BENCHMARKS.md, fourteenth session).
# This waits for it and measures then.
#
#   scripts/fast-phase.sh SECONDS BIN...   # watch for SECONDS; in each fast phase, interleave
#                                          # shm-spin and shm round trips of the BINs with C
#
# Every 20 s it runs spin_flag once (0.1 s); below 200 ns it runs `scripts/interleave.sh rtt 6`
# for shm-spin (against C shm_spin) and shm (against C shm_hybrid), then one bench call per BIN
# of shm and bus-local (the bus round trip over shm's). Only the runs whose C
# figure is fast (about 110 and 140 ns) are of the fast phase: it often ends within a run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=$1
shift
end=$((SECONDS + secs))
while [ $SECONDS -lt $end ]; do
  f=$(chrt -f 10 "${IPC_BASELINE:-/tmp/ipc-baseline}" --mech spin_flag --size 64 --iters 20000 \
    --duration 0.1 --json 2>/dev/null | grep -o '"rtt_ns_median":[0-9]*' | cut -d: -f2 || true)
  echo "$(date +%T) spin_flag ${f:-?} ns"
  if [ -n "$f" ] && [ "$f" -lt 200 ]; then
    ITERS=20000 CMECH=shm_spin scripts/interleave.sh rtt 6 shm-spin 64 "$@"
    ITERS=20000 CMECH=shm_hybrid scripts/interleave.sh rtt 6 shm 64 "$@"
    # The bus round trip against shm's in the same call (issue 7's 1.5).
    for bin in "$@"; do
      chrt -f 10 "$bin" bench --mech shm,bus-local --size 64 --iters 20000 --duration 0.1 \
        --repeat 1 --json 2>/dev/null | python3 -c '
import json, sys
r = {j["mech"]: j["rtt_ns_median"] for j in map(json.loads, filter(str.strip, sys.stdin))}
print(sys.argv[1], "shm", r.get("shm"), "bus-local", r.get("bus-local"),
      "ratio %.2f" % (r["bus-local"] / r["shm"]) if r.get("shm") and r.get("bus-local") else "")
' "$bin" || true
    done
  fi
  sleep 20
done
