#!/usr/bin/env bash
# Runs the libFuzzer target on the loader + IR + inspect for SECONDS (default 60), seeded with
# every fixture model; prints the executions run and any crash. Needs a nightly toolchain.
# Exit 0 when no crash was found.
#
# Built the way `cargo fuzz build -s none` builds it (libfuzzer-sys compiles libFuzzer itself;
# these are cargo-fuzz's coverage flags), without installing cargo-fuzz and without its
# `-Ccodegen-units=1`, which serialises every crate's code generation: on 2 cores the build is
# most of the job, and 60 s of fuzzing needs coverage more than the last 2× of speed.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; skipped (tests/suite/fuzz_loader.rs covers the stable side)"
  exit 0
fi
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
mkdir -p corpus/inspect artifacts/inspect
for f in ../fixtures/*.onnx; do cp "$f" "corpus/inspect/$(basename "$f")"; done
for f in ../fixtures/coupling/*.onnx; do cp "$f" "corpus/inspect/coupling-$(basename "$f")"; done
# --target: the flags reach the fuzzed crates, not build scripts or proc macros.
# -Cdebug-assertions: integer overflow panics, so it is found.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions" \
  cargo +nightly build --release --quiet --target "$triple" --bin inspect
# -rss_limit_mb: an unbounded allocation is a finding; -timeout: so is a hang.
set +e
"target/$triple/release/inspect" corpus/inspect -artifact_prefix=artifacts/inspect/ \
  -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >fuzz.log 2>&1
rc=$?
set -e
grep -E "^stat::number_of_executed_units|^stat::peak_rss|SUMMARY|crash-|^#[0-9]+.*DONE" fuzz.log || true
if ls artifacts/inspect/crash-* artifacts/inspect/oom-* artifacts/inspect/timeout-* >/dev/null 2>&1; then
  grep -m1 -A3 "panicked" fuzz.log || true
  echo "fuzz: findings in fuzz/artifacts/inspect/"
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  tail -n 30 fuzz.log
  echo "fuzz: the fuzzer failed (exit $rc); log in fuzz/fuzz.log"
  exit "$rc"
fi
