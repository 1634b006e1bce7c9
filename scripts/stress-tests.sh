#!/usr/bin/env bash
# Runs integration-test binaries three at once, ROUNDS times each, to shake out rare
# interleavings that a single run on an idle machine does not hit. Prints each failure's
# first panic line; keeps failing output in $OUT/stress.TEST.ROUND.K.log.
#
#   scripts/stress-tests.sh 10                     # every ipckit integration test
#   scripts/stress-tests.sh 20 shm_channel rpc     # some of them
#   PKG=ipckit-cli scripts/stress-tests.sh 5       # the CLI's integration tests
#
# The tenth session found a lost message in shm+mpsc's lock takeover this way (7 of 45
# runs of shm_channel), and see scripts/queue-crash-stress.sh for the queue. Every test can
# run beside a copy of itself (ipckit-cli's bench_report writes a report directory per
# process, and resources removes stale segments by a prefix of its own since the twelfth
# session).
set -euo pipefail
rounds=${1:-10}
shift || true
out=${OUT:-/tmp}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}
pkg=${PKG:-ipckit}
features=()
[ "$pkg" = ipckit ] && features=(--features tokio)
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  mapfile -t tests < <(ls "$pkg"/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')
fi
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
mapfile -t bins < <(cargo test -p "$pkg" "${features[@]}" "${args[@]}" --no-run 2>&1 |
  grep -o '/[^ ]*/deps/[a-z_]*-[0-9a-f]*)' | tr -d ')')
cd "$pkg"
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
