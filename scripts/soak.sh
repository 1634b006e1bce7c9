#!/usr/bin/env bash
# Soak (issue 9): every transport under continuous traffic for MINUTES (default 2), a random
# peer process SIGKILLed every few seconds and restarted. Prints, per transport, the
# acknowledged messages and the lost ones (must be 0), then descriptors, /dev/shm entries
# and resident memory before and after. Exit status 1 on any loss, corruption or leak.
#   scripts/soak.sh 2
#   KILL_MS=1000 scripts/soak.sh 30
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}"
cargo build --quiet --release -p ipckit --bin ipckit-smoke
secs=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
exec "$CARGO_TARGET_DIR/release/ipckit-smoke" soak "$secs" "${KILL_MS:-2500}"
