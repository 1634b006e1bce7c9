#!/usr/bin/env python3
"""A/B runs of `ipckit bench` on a noisy machine: medians per binary, runs alternated.

Usage: scripts/ab.py ROUNDS MECHS BIN [BIN ...] [-- BENCH ARGS]
  e.g. scripts/ab.py 8 shm,bus-local,bus-fanout-8 ./old ./new -- --size 64 --duration 0.5

Each round runs every binary once (`BIN bench --mech MECHS --json --repeat 1 ARGS`), in
reverse order every other round, and prints per figure the median over the rounds with the
range (ROWS=1 also prints each run's figures as it ends: the host's phase shows in them).
Where both rows are measured it adds `bus/shm rtt` (bus-local over shm round trip, same
run) and `fan8/1sub` (bus-fanout-8 over bus-local msg/s). CHRT=1 runs each binary under
`chrt -f 10` (keep /proc/sys/kernel/sched_rt_runtime_us at its default 950000; a bench
parent reaping its peer under chrt once spun in the kernel for good, fixed in d72fb8c, see
docs/BENCHMARKS.md; do not use it with the fan-out rows, whose subscribers outnumber the
CPUs).

Two builds of the same code can differ by about 10 % here (code layout): to measure a small
change, build one binary with the change behind an environment switch read once (a
`OnceLock`), and pass a wrapper script that sets the switch as the second BIN.
"""
import json
import os
import statistics
import subprocess
import sys


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    if len(args) < 3:
        sys.exit(__doc__)
    rounds, mechs, bins = int(args[0]), args[1], args[2:]
    res = {b: {} for b in bins}
    for r in range(rounds):
        for b in bins if r % 2 == 0 else bins[::-1]:
            cmd = [b, "bench", "--mech", mechs, "--json", "--repeat", "1"] + extra
            if os.environ.get("CHRT"):
                cmd = ["chrt", "-f", "10"] + cmd
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            row = {}
            for line in out.splitlines():
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if "mech" not in j:
                    continue
                m = f"{j['mech']}@{j['size']}"
                row[m + " rtt"] = j.get("rtt_ns_median")
                row[m + " p99"] = j.get("rtt_ns_p99")
                row[m + " msg/s"] = j.get("msgs_per_s")
            if row.get("bus-local@64 rtt") and row.get("shm@64 rtt"):
                row["bus/shm rtt"] = row["bus-local@64 rtt"] / row["shm@64 rtt"]
            if row.get("bus-fanout-8@64 msg/s") and row.get("bus-local@64 msg/s"):
                row["fan8/1sub"] = row["bus-fanout-8@64 msg/s"] / row["bus-local@64 msg/s"]
            if os.environ.get("ROWS"):
                shown = "  ".join(f"{k}={v:,.4g}" for k, v in sorted(row.items()) if v)
                print(f"round {r} {os.path.basename(b)}: {shown}", flush=True)
            for k, v in row.items():
                if v is not None:
                    res[b].setdefault(k, []).append(v)
    for k in sorted({k for b in bins for k in res[b]}):
        line = f"{k:28}"
        for b in bins:
            v = res[b].get(k)
            if v:
                med = statistics.median(v)
                shown = f"{med:,.3f}" if med < 100 else f"{med:,.0f}"
                line += f" | {os.path.basename(b)}: {shown} [{min(v):,.3g}-{max(v):,.3g}, n={len(v)}]"
        print(line)


if __name__ == "__main__":
    main()
