#!/usr/bin/env bash
# The test suite, from a fresh clone: fetches what the tests need (scripts/setup.sh), then runs
# every test in release mode (the interpreter runs real models; debug builds are ~30x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# tee and grep hide cargo's status: take it from the pipeline itself (an `|| true` here would
# replace PIPESTATUS with true's and turn a failing suite green).
# A fresh clone has no target/ before cargo creates it: tee would drop the log.
mkdir -p target
set +e
cargo test --release -- --nocapture 2>&1 | tee target/test-output.log | grep -E '^(test |test result|ONNX node tests|[a-z0-9_]+ +(max\||[0-9]+ bytes|FLOPs))|error|panicked|FAILED'
status=("${PIPESTATUS[@]}")
set -e
exit "${status[0]}"
