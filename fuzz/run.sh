#!/usr/bin/env bash
# Runs the libFuzzer target on the loader + IR + inspect for SECONDS (default 60), seeded with
# every fixture model; prints the executions run and any crash. Needs a nightly toolchain and
# cargo-fuzz (installed from crates.io when missing). Exit 0 when no crash was found.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; skipped (tests/fuzz_loader.rs covers the stable side)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1 && ! cargo install cargo-fuzz --locked --quiet; then
  echo "fuzz: cargo-fuzz could not be installed (no registry access?); skipped"
  exit 0
fi
mkdir -p corpus/inspect
for f in ../fixtures/*.onnx; do cp "$f" "corpus/inspect/$(basename "$f")"; done
for f in ../fixtures/coupling/*.onnx; do cp "$f" "corpus/inspect/coupling-$(basename "$f")"; done
# -rss_limit_mb: an unbounded allocation is a finding; -timeout: so is a hang.
# -s none: no AddressSanitizer (the crate's unsafe code is the interrupt handler alone; panics,
# OOMs and hangs are what is looked for) and a much shorter build.
set +e
cargo +nightly fuzz run -s none inspect corpus/inspect -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >fuzz.log 2>&1
rc=$?
set -e
grep -E "^stat::number_of_executed_units|^stat::peak_rss|SUMMARY|crash-|^#[0-9]+.*DONE" fuzz.log || true
if ls artifacts/inspect/crash-* artifacts/inspect/oom-* artifacts/inspect/timeout-* >/dev/null 2>&1; then
  echo "fuzz: findings in fuzz/artifacts/inspect/"
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  tail -n 30 fuzz.log
  echo "fuzz: cargo fuzz failed (exit $rc); log in fuzz/fuzz.log"
  exit "$rc"
fi
