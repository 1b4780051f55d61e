//! Coverage-guided fuzzing of the loader, the IR builder, `inspect`'s summary and the
//! dependency analysis: any bytes must give Ok or a clean error. Seeded with the fixtures
//! (`fuzz/seed.sh`); run by `.ci/run` for a bounded time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = onnx_prune::inspect::inspect_bytes(data, Path::new("fuzz-input.onnx"));
});
