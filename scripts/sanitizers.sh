#!/usr/bin/env bash
# The library's unit tests under AddressSanitizer (with LeakSanitizer) and ThreadSanitizer
# (issue 9). Needs the nightly toolchain; TSan also needs its rust-src component (std is
# rebuilt with the sanitizer, or every atomic in std would look like a race):
#   rustup component add rust-src --toolchain nightly
#
#   scripts/sanitizers.sh            # both
#   scripts/sanitizers.sh asan       # one of them
#   scripts/sanitizers.sh tsan -- queue::   # extra arguments go to the test binary
#   scripts/sanitizers.sh asan-tests         # ASan over every test of ipckit, the
#                                            # multi-process integration tests included
#   scripts/sanitizers.sh tsan-tests         # TSan over the same tests
#
# asan-tests builds the helper binaries the integration tests spawn with ASan too; every
# process writes its reports to a directory (log_path), and any report fails the run, so a
# child's error cannot hide in output a test captured.
#
# Each sanitizer has its own target directory ($CARGO_TARGET_DIR-asan, -tsan), so the
# instrumented builds never replace the normal ones. Suppressions (each one explained) are in
# scripts/sanitizers/. Exit status 1 if any sanitizer reported something or a test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
shift || true
[ "${1:-}" = "--" ] && shift
base="${CARGO_TARGET_DIR:-/var/tmp/ipckit-target}"
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
supp="$PWD/scripts/sanitizers"
# Property tests: fewer cases (each is ~5-20x slower instrumented).
export PROPTEST_CASES="${PROPTEST_CASES:-64}"

run() {
  local name="$1" flag="$2"
  shift 2
  local started=$SECONDS
  echo "== $name: cargo +nightly test -p ipckit --lib --all-features (target dir $base-$name)"
  if CARGO_TARGET_DIR="$base-$name" RUSTFLAGS="-Zsanitizer=$flag -Cdebuginfo=1" \
      RUSTDOCFLAGS="-Zsanitizer=$flag" \
      cargo +nightly test "$@" --target "$host" -p ipckit --lib --all-features \
      -- "${test_args[@]}"; then
    echo "== $name: clean ($((SECONDS - started)) s)"
  else
    echo "== $name: FAILED ($((SECONDS - started)) s)"
    failed=1
  fi
}

test_args=("$@")
failed=0
case "$which" in
  asan | all)
    # detect_leaks: LeakSanitizer at exit; the suppressions name the leaks tests make on
    # purpose (a process "dying" with a lock held is simulated by forgetting its guard).
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1" \
      LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0" \
      run asan address
    ;;&
  tsan | all)
    TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=0:second_deadlock_stack=1" \
      run tsan thread -Zbuild-std
    ;;
  asan-tests)
    reports=$(mktemp -d /tmp/ipckit-asan-reports.XXXXXX)
    started=$SECONDS
    echo "== asan-tests: cargo +nightly test -p ipckit --tests --all-features (reports in $reports)"
    if ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:log_path=$reports/asan" \
        LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0" \
        CARGO_TARGET_DIR="$base-asan" RUSTFLAGS="-Zsanitizer=address -Cdebuginfo=1" \
        RUSTDOCFLAGS="-Zsanitizer=address" \
        cargo +nightly test --target "$host" -p ipckit --tests --all-features -- "${test_args[@]}" &&
      [ -z "$(ls -A "$reports")" ]; then
      echo "== asan-tests: clean ($((SECONDS - started)) s)"
      rmdir "$reports"
    else
      echo "== asan-tests: FAILED ($((SECONDS - started)) s); reports: $(ls "$reports" | wc -l) in $reports"
      failed=1
    fi
    ;;
  tsan-tests)
    # TSan over the integration tests too: their client and server threads share rings,
    # queues and buses inside one process, where TSan can see both sides.
    reports=$(mktemp -d /tmp/ipckit-tsan-reports.XXXXXX)
    started=$SECONDS
    echo "== tsan-tests: cargo +nightly test -p ipckit --tests --all-features (reports in $reports)"
    if TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=0:second_deadlock_stack=1:log_path=$reports/tsan" \
        CARGO_TARGET_DIR="$base-tsan" RUSTFLAGS="-Zsanitizer=thread -Cdebuginfo=1" \
        RUSTDOCFLAGS="-Zsanitizer=thread" \
        cargo +nightly test -Zbuild-std --target "$host" -p ipckit --tests --all-features \
        -- "${test_args[@]}" &&
      [ -z "$(ls -A "$reports")" ]; then
      echo "== tsan-tests: clean ($((SECONDS - started)) s)"
      rmdir "$reports"
    else
      echo "== tsan-tests: FAILED ($((SECONDS - started)) s); reports: $(ls "$reports" | wc -l) in $reports"
      failed=1
    fi
    ;;
  asan | tsan | all) ;;
  *)
    echo "usage: $0 [asan|tsan|all|asan-tests|tsan-tests] [-- TEST ARGS]" >&2
    exit 2
    ;;
esac
exit "$failed"
