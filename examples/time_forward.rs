//! Times the interpreter on a model and an .npz input (for profiling with perf):
//! `cargo run --release --example time_forward -- MODEL INPUT.npz [ITERS]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use onnx_prune::data::read_npz;
use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use onnx_prune::runtime::{Device, OrtSession};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(args[1].as_ref()).unwrap();
    let feeds = read_npz(args[2].as_ref()).unwrap();
    let iters: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(20);
    let engine = Engine::<f32>::new(&model.graph).unwrap();
    let threads = rayon::current_num_threads();
    let mut ort = OrtSession::from_file(args[1].as_ref(), Device::Cpu, threads).unwrap();
    engine.run(feeds.clone()).unwrap();
    ort.run(&feeds).unwrap();
    // Interleaved, so both see the same machine state.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        engine.run(feeds.clone()).unwrap();
        ours.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        if std::env::var_os("ONLY_OURS").is_none() {
            ort.run(&feeds).unwrap();
        }
        theirs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let (a, b) = (ours[iters / 2], theirs[iters / 2]);
    println!(
        "{threads} threads: ours {a:.3} ms, onnxruntime {b:.3} ms, ratio {:.2}",
        a / b
    );
}
