#!/bin/bash
# 1 MiB: the C yardstick's shm rings and memcpy against ipckit's, interleaved, each against its
# own memcpy of the same call. Usage: scripts/one-mib.sh BIN [PAIRS] (C yardstick at /tmp/ipc-baseline)
BIN=$1; N=${2:-6}
for i in $(seq $N); do
  c=$(chrt -f 10 /tmp/ipc-baseline --mech memcpy,shm_spin,shm_hybrid --size 1M --iters 300 --duration 0.5 --json 2>/dev/null)
  r=$(chrt -f 10 $BIN bench --mech memcpy,shm,shm-spin,shm-ref,shm-loan --size 1048576 --iters 300 --duration 0.5 --repeat 1 --json 2>/dev/null)
  python3 - "$c" "$r" <<'PY'
import sys,json
def rows(t):
    d={}
    for l in t.splitlines():
        l=l.strip()
        if l.startswith('{'):
            j=json.loads(l); d[j['mech']]=j.get('msgs_per_s') or 0
    return d
c=rows(sys.argv[1]); r=rows(sys.argv[2])
cm=c.get('memcpy',1) or 1; rm=r.get('memcpy',1) or 1
print("C memcpy %6.0f spin %.2f hybrid %.2f | ipckit memcpy %6.0f shm %.2f spin %.2f ref %.2f loan %.1f" % (cm, c.get('shm_spin',0)/cm, c.get('shm_hybrid',0)/cm, rm, r.get('shm',0)/rm, r.get('shm-spin',0)/rm, r.get('shm-ref',0)/rm, r.get('shm-loan',0)/rm))
PY
done
