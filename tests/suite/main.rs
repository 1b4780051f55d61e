//! Every integration test in one binary: each file was its own test crate, and linking 13
//! binaries of the library with onnxruntime's bindings and tract took most of a test build.
//! `cargo test --release --test suite MODULE::` runs one file's tests.

mod common;

mod cli;
mod cli_prune;
mod compensation;
mod conformance;
mod coupling;
mod derivatives;
mod fuzz_loader;
mod hostile;
mod interp_vs_ort;
mod reference;
mod roundtrip;
mod structured;
mod unstructured;
