#!/usr/bin/env bash
# Runs integration-test binaries three at once, ROUNDS times each, to shake out rare
# interleavings that a single run on an idle machine does not hit. Prints each failure's
# first panic line; keeps failing output in $OUT/stress.TEST.ROUND.K.log.
#
#   scripts/stress-tests.sh 10                     # every ipckit integration test
#   scripts/stress-tests.sh 20 shm_channel rpc     # some of them
#
# The tenth session found a lost message in shm+mpsc's lock takeover this way (7 of 45
# runs of shm_channel), and see scripts/queue-crash-stress.sh for the queue. Only the
# library's tests: two of ipckit-cli's cannot run beside a copy of themselves (bench_report
# shares one report directory, and resources' `ipckit rm --stale` removes the other copy's
# stale segment); its cli and queue_cli passed 9 of 9 runs three at once.
set -euo pipefail
rounds=${1:-10}
shift || true
out=${OUT:-/tmp}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  mapfile -t tests < <(ls ipckit/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')
fi
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
mapfile -t bins < <(cargo test -p ipckit --features tokio "${args[@]}" --no-run 2>&1 |
  grep -o '/[^ ]*/deps/[a-z_]*-[0-9a-f]*)' | tr -d ')')
cd ipckit
total=0 fails=0
for bin in "${bins[@]}"; do
  name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
  for r in $(seq "$rounds"); do
    for k in 1 2 3; do
      log="$out/stress.$name.$r.$k.log"
      (timeout 900 "$bin" >"$log" 2>&1; echo "rc=$?" >>"$log") &
    done
    wait
    for k in 1 2 3; do
      log="$out/stress.$name.$r.$k.log"
      total=$((total + 1))
      if grep -q "^rc=0$" "$log"; then
        rm "$log"
      else
        fails=$((fails + 1))
        echo "$name round $r #$k: $(grep -m1 -A1 panicked "$log" | tail -1 | cut -c1-200)"
      fi
    done
  done
  echo "$name: done"
done
echo "$fails failures in $total runs"
[ "$fails" -eq 0 ]
