#!/usr/bin/env bash
# The C yardstick at two sizes and ipckit at the first, alternating, streams of 0.5 s: what
# the kernel charges for a frame's header, and ipckit against C at the same byte count.
#
#   scripts/equal-bytes.sh MECH CMECH SIZE_A SIZE_B ROUNDS BIN
#   scripts/equal-bytes.sh pipe pipe 4096 4100 8 target/release/ipckit
#
# Prints each round (thousands of messages/s: C at A, C at B, ipckit at A) and the medians
# of the per-round ratios. Build the C yardstick as scripts/interleave.sh says.
set -euo pipefail
m=$1 cm=$2 a=$3 b=$4 n=$5 bin=$6
base=${IPC_BASELINE:-/tmp/ipc-baseline}
rate() { grep -o '"msgs_per_s":[0-9.]*' | head -1 | cut -d: -f2; }
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$n"); do
  x=$(chrt -f 10 "$base" --mech "$cm" --size "$a" --iters 1000 --duration 0.5 --json 2>/dev/null | rate)
  y=$(chrt -f 10 "$base" --mech "$cm" --size "$b" --iters 1000 --duration 0.5 --json 2>/dev/null | rate)
  z=$(chrt -f 10 "$bin" bench --mech "$m" --size "$a" --iters 1000 --duration 0.5 --repeat 1 --json 2>/dev/null | rate)
  echo "$x $y $z" >> "$runs"
done
python3 - "$m" "$a" "$b" "$runs" <<'P'
import statistics as st, sys
m, a, b, path = sys.argv[1:]
r = [list(map(float, l.split())) for l in open(path) if l.strip()]
for x in r:
    print("  C %s %8.0f k | C %s %8.0f k | ipckit %s %8.0f k" % (a, x[0] / 1e3, b, x[1] / 1e3, a, x[2] / 1e3))
med = lambda f: st.median(f(x) for x in r)
print("%s: C %s / C %s %.3f, ipckit %s / C %s %.3f, ipckit %s / C %s %.3f" % (
    m, b, a, med(lambda x: x[1] / x[0]), a, a, med(lambda x: x[2] / x[0]), a, b, med(lambda x: x[2] / x[1])))
P
