#!/usr/bin/env bash
# Valgrind (memcheck) over every transport across real processes (issue 9): builds
# `ipckit-smoke` and runs it, and the peers it re-executes, under valgrind. Passes when the
# smoke passes with zero errors and nothing definitely lost in any process.
#   scripts/valgrind-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}"
if ! command -v valgrind >/dev/null; then
  echo "valgrind-smoke: valgrind is not installed (apt-get install valgrind)" >&2
  exit 1
fi
cargo build --quiet -p ipckit --bin ipckit-smoke
bin="$CARGO_TARGET_DIR/debug/ipckit-smoke"
log="$(mktemp -d /tmp/ipckit-valgrind.XXXXXX)"
status=0
valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --trace-children=yes --log-file="$log/vg.%p.log" "$bin" smoke || status=$?

# One log per process: sum what memcheck says.
procs=$(ls "$log" | wc -l)
errors=$(grep -h "ERROR SUMMARY:" "$log"/vg.*.log | awk '{s += $4} END {print s + 0}')
definite=$(grep -h "definitely lost:" "$log"/vg.*.log | awk '{gsub(",", "", $4); s += $4} END {print s + 0}')
echo "valgrind-smoke: $procs processes, $errors errors, $definite bytes definitely lost (logs in $log)"
if [ "$status" -ne 0 ] || [ "$errors" -ne 0 ] || [ "$definite" -ne 0 ]; then
  grep -l -E "ERROR SUMMARY: [1-9]|definitely lost: [1-9]" "$log"/vg.*.log | head -3 | xargs -r cat
  echo "valgrind-smoke: FAILED (exit $status)" >&2
  exit 1
fi
rm -rf "$log"
echo "valgrind-smoke: ok"
