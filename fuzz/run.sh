#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each and prints the executions per target.
#   fuzz/run.sh 30            # as .ci/run does
#   fuzz/run.sh 600 shm_ring  # one target, longer
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds come from
# fuzz/corpus/<target>/ (read-only here; regenerate with fuzz/gen-corpus.sh); inputs the
# fuzzer finds go to a scratch corpus under $IPCKIT_FUZZ_WORK (kept between runs), crashes
# to fuzz/artifacts/<target>/. Exit status 1 if any target crashed, hung or leaked.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
export CARGO_TARGET_DIR="${IPCKIT_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}-fuzz}"
work="${IPCKIT_FUZZ_WORK:-/var/tmp/ipckit-fuzz-work}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(endpoint_url framing_decode frame_reader typed_decode shm_ring queue_recovery rpc_wire)
fi

mkdir -p "$work"
echo "== building fuzz targets (cargo +nightly fuzz build, target dir $CARGO_TARGET_DIR)"
if ! cargo +nightly fuzz build -O >"$work.build.log" 2>&1; then
  tail -40 "$work.build.log"
  exit 1
fi

failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  log="$work/$t.log"
  echo "== $t: ${secs}s"
  if cargo +nightly fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
    grep -E "ERROR|panicked|SUMMARY|Test unit written" "$log" | head -20 || true
  fi
  runs=$(grep -Eo "Done [0-9]+ runs in [0-9]+ second" "$log" | grep -Eo "[0-9]+ runs" | grep -Eo "[0-9]+" | tail -1 || true)
  [ -n "$runs" ] || runs=$(grep -Eo "stat::number_of_executed_units: *[0-9]+" "$log" | grep -Eo "[0-9]+$" | tail -1 || true)
  cov=$(grep -Eo "cov: [0-9]+" "$log" | tail -1 || true)
  corpus_n=$(find "$work/$t" -type f | wc -l)
  line=$(printf "%-16s %-6s executions %-10s %s, corpus %s" "$t" "$status" "${runs:-?}" "${cov:-}" "$corpus_n")
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
