#!/usr/bin/env bash
# Issue 2's table: every kernel transport at 64 B and 4 KiB against the C yardstick,
# interleaved (scripts/interleave.sh): round trips (5 rounds of 20,000) and streams (6 rounds
# of 0.5 s). About 8 minutes.
#
#   scripts/kernel-table.sh BIN... > log
#
# Each ipckit line ends with its paired ratio to C (the median of the per-round ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
for m in pipe:pipe fifo:fifo unix:unix_stream unix-dgram:unix_dgram unix-seqpacket:unix_seqpacket tcp:tcp udp:udp; do
  r=${m%%:*} c=${m##*:}
  for s in 64 4096; do
    echo "== $r $s rtt"
    ITERS=20000 CMECH=$c scripts/interleave.sh rtt 5 "$r" "$s" "$@"
    echo "== $r $s stream"
    DUR=0.5 CMECH=$c scripts/interleave.sh stream 6 "$r" "$s" "$@"
  done
done
