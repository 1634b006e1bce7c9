#!/usr/bin/env python3
"""Compares `ipckit bench --json` runs with runs of the C baseline (../shared/ipc-baseline).

Usage: scripts/compare_baseline.py "C_RUNS_GLOB" "IPCKIT_RUNS_GLOB"
Each glob names files of JSON lines; medians over the runs are compared per mechanism and
size (ratio = ipckit / C). C names are mapped to the bench's (unix_stream -> unix, ...).
"""
import json,sys,statistics,glob
names={"unix_stream":"unix","unix_dgram":"unix-dgram","unix_seqpacket":"unix-seqpacket","shm_spin":"shm-spin","shm_hybrid":"shm","shm_futex":"shm-block","shm_sem":"sem","mmap_futex":"mmap","posix_mq":"mq"}
def load(pattern):
    d={}
    for f in sorted(glob.glob(pattern)):
        for line in open(f):
            line=line.strip()
            if not line.startswith("{"): continue
            o=json.loads(line)
            m=names.get(o["mech"],o["mech"])
            d.setdefault((m,o["size"]),[]).append(o)
    return d
c=load(sys.argv[1]); r=load(sys.argv[2])
print(f"{'mech':16}{'size':>8} {'C rtt':>9} {'ipckit':>9} {'ratio':>6} | {'C p99':>8} {'ip p99':>8} | {'C msg/s':>11} {'ipckit':>11} {'ratio':>6}")
for k in sorted(r, key=lambda k:(list(names.values()).index(k[0]) if k[0] in names.values() else -1, k)):
    if k not in c: continue
    def med(lst,key):
        v=[o.get(key) for o in lst if o.get(key) is not None]
        return statistics.median(v) if v else None
    cr,rr=med(c[k],"rtt_ns_median"),med(r[k],"rtt_ns_median")
    cp,rp=med(c[k],"rtt_ns_p99"),med(r[k],"rtt_ns_p99")
    ct,rt=med(c[k],"msgs_per_s"),med(r[k],"msgs_per_s")
    f=lambda x: f"{x:,.0f}" if x is not None else "-"
    ratio=lambda a,b: f"{a/b:.2f}" if a and b else "-"
    print(f"{k[0]:16}{k[1]:>8} {f(cr):>9} {f(rr):>9} {ratio(rr,cr):>6} | {f(cp):>8} {f(rp):>8} | {f(ct):>11} {f(rt):>11} {ratio(rt,ct):>6}")
