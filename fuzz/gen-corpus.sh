#!/usr/bin/env bash
# Regenerates the seed corpora fuzz/corpus/<target>/ from real traffic (see src/gen_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${IPCKIT_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}-fuzz}"
cargo +nightly run --quiet --release --bin gen_corpus -- corpus
