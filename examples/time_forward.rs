//! Times the interpreter on a model and an .npz input: `cargo run --release --example
//! time_forward -- MODEL INPUT.npz [ITERS]` (for profiling with perf).

use onnx_prune::data::read_npz;
use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(args[1].as_ref()).unwrap();
    let feeds = read_npz(args[2].as_ref()).unwrap();
    let iters: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(20);
    let engine = Engine::<f32>::new(&model.graph).unwrap();
    engine.run(feeds.clone()).unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        engine.run(feeds.clone()).unwrap();
    }
    println!("{:.3} ms per run", t.elapsed().as_secs_f64() * 1e3 / iters as f64);
}
