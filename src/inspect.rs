//! Model summaries for `onnx-prune inspect`: inputs/outputs, op histogram, parameters, FLOPs
//! per layer (from a probe run at concrete shapes) and unsupported ops.

use crate::error::{Error, Result};
use crate::interp::{Engine, fmt_shape, zero_tensor};
use crate::ir::{Dim, Graph, Model, Op};
use crate::tensor::{DType, Tensor};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct IoInfo {
    pub name: String,
    pub dtype: String,
    pub shape: String,
}

#[derive(Debug, Serialize)]
pub struct Layer {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub flops: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub producer: String,
    pub ir_version: i64,
    pub opset: i64,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    pub nodes: usize,
    pub ops: BTreeMap<String, usize>,
    /// Float weight elements (initializers and Constant outputs).
    pub params: usize,
    pub file_bytes: usize,
    pub unsupported: Vec<String>,
    /// Weights with NaN/Inf values (no pass accepts them).
    pub non_finite: Vec<String>,
    /// Input shapes the FLOPs were counted at.
    pub probe_shapes: BTreeMap<String, Vec<usize>>,
    pub flops: Option<u64>,
    /// Why FLOPs are missing, when they are.
    pub flops_note: Option<String>,
    pub layers: Vec<Layer>,
    /// This process's peak resident memory when the summary was made (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// Concrete shapes for the graph inputs: declared fixed dims, `overrides` for the rest, and 1
/// for a leading symbolic (batch) dim. Errors name every dim left unknown.
pub fn probe_shapes(
    g: &Graph,
    overrides: &HashMap<String, Vec<usize>>,
) -> Result<Vec<(String, DType, Vec<usize>)>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for &id in &g.inputs {
        let v = &g.values[id];
        let dtype = v.dtype.unwrap_or(DType::F32);
        if let Some(s) = overrides.get(&v.name) {
            if let Some(decl) = &v.shape {
                let fits = decl.len() == s.len()
                    && decl
                        .iter()
                        .zip(s)
                        .all(|(d, &x)| !matches!(d, Dim::Fixed(f) if *f != x));
                if !fits {
                    return Err(Error::Usage(format!(
                        "--shape {}={:?} does not fit the declared shape {}",
                        v.name,
                        s,
                        fmt_shape(decl)
                    )));
                }
            }
            out.push((v.name.clone(), dtype, s.clone()));
            continue;
        }
        let Some(decl) = &v.shape else {
            missing.push(format!("{} (no declared shape)", v.name));
            continue;
        };
        let mut shape = Vec::with_capacity(decl.len());
        for (i, d) in decl.iter().enumerate() {
            match d {
                Dim::Fixed(x) => shape.push(*x),
                _ if i == 0 => shape.push(1),
                _ => {
                    missing.push(format!("{} {}", v.name, fmt_shape(decl)));
                    break;
                }
            }
        }
        if shape.len() == decl.len() {
            out.push((v.name.clone(), dtype, shape));
        }
    }
    // Declared sizes are checked before anything is allocated: a corrupt or hostile dim would
    // otherwise ask for terabytes of zeros.
    for (name, _, shape) in &out {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= PROBE_ELEMENTS);
        if n.is_none() {
            return Err(Error::Usage(format!(
                "input {name:?}: shape {shape:?} holds more than {PROBE_ELEMENTS} elements per sample, too many to run (give a smaller --shape)"
            )));
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(Error::Usage(format!(
            "dynamic input dimensions need a concrete shape: {} (give --shape NAME=D1,D2,…)",
            missing.join(", ")
        )))
    }
}

/// Elements one input of a probe or synthetic sample may hold (2²⁸: 1 GiB of f32).
pub const PROBE_ELEMENTS: usize = 1 << 28;

/// Parses `NAME=D1,D2,…`.
pub fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>)> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| Error::Usage(format!("--shape {s:?}: expected NAME=D1,D2,…")))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| {
            Error::Usage(format!(
                "--shape {s:?}: dimensions must be non-negative integers"
            ))
        })?;
    Ok((name.to_string(), dims))
}

/// Runs the model once on zeros to learn every value's shape (shape subgraphs included).
pub fn infer_shapes(
    g: &Graph,
    inputs: &[(String, DType, Vec<usize>)],
) -> Result<Vec<Option<Vec<usize>>>> {
    let engine = Engine::<f32>::exact(g)?;
    let feeds = inputs
        .iter()
        .map(|(n, dt, s)| (n.clone(), zero_tensor::<f32>(*dt, s)))
        .collect();
    engine.run_shapes(feeds)
}

/// `infer_shapes` through onnxruntime, for graphs the interpreter cannot run.
pub fn infer_shapes_ort(
    model: &Model,
    inputs: &[(String, DType, Vec<usize>)],
) -> Result<Vec<Option<Vec<usize>>>> {
    let feeds: Vec<(String, Tensor<f32>)> = inputs
        .iter()
        .map(|(n, dt, s)| (n.clone(), zero_tensor::<f32>(*dt, s)))
        .collect();
    Ok(crate::analysis::probe_ort::values(model, &feeds)?
        .iter()
        .map(|v| v.as_ref().map(|t| t.shape().to_vec()))
        .collect())
}

/// FLOPs of one node given the shapes of its inputs and outputs (2 per multiply-add for
/// Conv/ConvTranspose/Gemm/MatMul, one per output element otherwise).
pub fn node_flops(op: &Op, ins: &[Option<&Vec<usize>>], outs: &[Option<&Vec<usize>>]) -> u64 {
    let prod = |s: &[usize]| s.iter().product::<usize>() as u64;
    let out0 = outs.first().copied().flatten();
    match (op, out0) {
        // Weight [M, C/group, k…]: each output element costs C/group·k… multiply-adds.
        (Op::Conv { .. }, Some(o)) => {
            let w = ins
                .get(1)
                .copied()
                .flatten()
                .map(|w| prod(&w[1..]))
                .unwrap_or(0);
            2 * prod(o) * w
        }
        (Op::ConvTranspose(_), Some(_)) => {
            let x = ins.first().copied().flatten();
            let w = ins.get(1).copied().flatten();
            match (x, w) {
                (Some(x), Some(w)) => 2 * prod(x) * prod(&w[1..]),
                _ => 0,
            }
        }
        (Op::Gemm { trans_a, .. }, Some(o)) => {
            let k = ins
                .first()
                .copied()
                .flatten()
                .map(|a| if *trans_a { a[0] } else { a[a.len() - 1] })
                .unwrap_or(0);
            2 * prod(o) * k as u64
        }
        (Op::MatMul, Some(o)) => {
            let k = ins
                .first()
                .copied()
                .flatten()
                .map(|a| a[a.len() - 1])
                .unwrap_or(0);
            2 * prod(o) * k as u64
        }
        (Op::Constant { .. } | Op::Shape { .. } | Op::Size | Op::Identity, _) => 0,
        (_, Some(o)) => prod(o),
        _ => 0,
    }
}

/// The summary from the interpreter alone: a model with nodes it cannot run gets no FLOPs or
/// layer table (this is the form the fuzz target exercises: no onnxruntime involved).
pub fn summarize(model: &Model, overrides: &HashMap<String, Vec<usize>>) -> Summary {
    summarize_impl(model, overrides, false)
}

/// The summary, with shapes from onnxruntime where the interpreter cannot run the model; the
/// nodes it cannot run add no FLOPs (said in the FLOPs note).
pub fn summarize_with_runtime(model: &Model, overrides: &HashMap<String, Vec<usize>>) -> Summary {
    summarize_impl(model, overrides, true)
}

fn summarize_impl(
    model: &Model,
    overrides: &HashMap<String, Vec<usize>>,
    runtime: bool,
) -> Summary {
    let mut s = summary_of(model, overrides, runtime);
    s.peak_rss_bytes = crate::memory::peak_rss_bytes();
    s
}

fn summary_of(model: &Model, overrides: &HashMap<String, Vec<usize>>, runtime: bool) -> Summary {
    let g = &model.graph;
    let p = &model.source.proto;
    let io = |ids: &[usize]| -> Vec<IoInfo> {
        ids.iter()
            .map(|&id| {
                let v = &g.values[id];
                IoInfo {
                    name: v.name.clone(),
                    dtype: v.dtype.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                    shape: v
                        .shape
                        .as_ref()
                        .map(|s| fmt_shape(s))
                        .unwrap_or_else(|| "?".into()),
                }
            })
            .collect()
    };
    let mut ops = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let params: usize = g
        .weights
        .keys()
        .chain(g.lazy.keys())
        .filter_map(|&id| g.float_params(id))
        .sum();
    let unsupported = match g.check_supported() {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    };
    let non_finite = g
        .non_finite_weights()
        .iter()
        .map(|(n, a, b)| crate::ir::graph::non_finite_note(n, *a, *b))
        .collect();
    let mut s = Summary {
        model: model.source.path.display().to_string(),
        producer: format!("{} {}", p.producer_name(), p.producer_version())
            .trim()
            .to_string(),
        ir_version: p.ir_version(),
        opset: g.opset,
        inputs: io(&g.inputs),
        outputs: io(&g.outputs),
        nodes: g.nodes.len(),
        ops,
        params,
        file_bytes: model.source.file_len,
        unsupported,
        non_finite,
        probe_shapes: BTreeMap::new(),
        flops: None,
        flops_note: None,
        layers: Vec::new(),
        peak_rss_bytes: None,
    };
    let partial = !s.unsupported.is_empty();
    if partial && !runtime {
        s.flops_note = Some("the interpreter cannot run this model".into());
        return s;
    }
    let shapes = match probe_shapes(g, overrides).and_then(|inputs| {
        s.probe_shapes = inputs
            .iter()
            .map(|(n, _, sh)| (n.clone(), sh.clone()))
            .collect();
        if partial {
            infer_shapes_ort(model, &inputs)
        } else {
            infer_shapes(g, &inputs)
        }
    }) {
        Ok(v) => v,
        Err(e) => {
            s.flops_note = Some(e.to_string());
            return s;
        }
    };
    let mut total = 0u64;
    let mut uncounted: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.nodes {
        let Ok(op) = n.op.as_ref() else {
            *uncounted.entry(n.op_type.as_str()).or_default() += 1;
            continue;
        };
        let ins: Vec<Option<&Vec<usize>>> = n
            .inputs
            .iter()
            .map(|v| v.and_then(|v| shapes[v].as_ref()))
            .collect();
        let outs: Vec<Option<&Vec<usize>>> = n
            .outputs
            .iter()
            .map(|v| v.and_then(|v| shapes[v].as_ref()))
            .collect();
        let flops = node_flops(op, &ins, &outs);
        total += flops;
        let params: usize = n
            .inputs
            .iter()
            .flatten()
            .filter_map(|&v| g.float_params(v))
            .sum();
        if params > 0 && !matches!(op, Op::Constant { .. }) {
            s.layers.push(Layer {
                name: if n.name.is_empty() {
                    n.outputs
                        .iter()
                        .flatten()
                        .next()
                        .map(|&o| g.name(o).to_string())
                        .unwrap_or_default()
                } else {
                    n.name.clone()
                },
                op: n.op_type.clone(),
                output_shape: outs.first().copied().flatten().cloned().unwrap_or_default(),
                params,
                flops,
            });
        }
    }
    s.flops = Some(total);
    if !uncounted.is_empty() {
        let list: Vec<String> = uncounted
            .iter()
            .map(|(op, n)| format!("{n} {op}"))
            .collect();
        s.flops_note = Some(format!(
            "shapes from onnxruntime; not counted: {} (nodes the interpreter does not run)",
            list.join(", ")
        ));
    }
    s
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n}")
    }
}

impl Summary {
    /// The human-readable report.
    pub fn render(&self, layers: bool) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "model     {}", self.model);
        let _ = writeln!(
            o,
            "producer  {}   ir {}   opset {}",
            self.producer, self.ir_version, self.opset
        );
        for i in &self.inputs {
            let _ = writeln!(o, "input     {} {} {}", i.name, i.dtype, i.shape);
        }
        for i in &self.outputs {
            let _ = writeln!(o, "output    {} {} {}", i.name, i.dtype, i.shape);
        }
        let _ = writeln!(o, "nodes     {}", self.nodes);
        let ops: Vec<String> = self.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "ops       {}", ops.join(", "));
        let _ = writeln!(
            o,
            "params    {} ({})   file {} bytes",
            self.params,
            human(self.params as f64),
            self.file_bytes
        );
        match (self.flops, &self.flops_note) {
            (Some(f), _) => {
                let shapes: Vec<String> = self
                    .probe_shapes
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                let _ = writeln!(
                    o,
                    "FLOPs     {} ({}) at {}",
                    f,
                    human(f as f64),
                    shapes.join(" ")
                );
                if let Some(n) = &self.flops_note {
                    let _ = writeln!(o, "          {n}");
                }
            }
            (None, Some(n)) => {
                let _ = writeln!(o, "FLOPs     not counted: {n}");
            }
            _ => {}
        }
        for w in &self.non_finite {
            let _ = writeln!(
                o,
                "weights   non-finite values in {w}: no pass accepts this model"
            );
        }
        if self.unsupported.is_empty() {
            let _ = writeln!(o, "support   every op is supported by the interpreter");
        } else {
            for u in &self.unsupported {
                let _ = writeln!(o, "support   {u}");
            }
        }
        if let Some(b) = self.peak_rss_bytes {
            let _ = writeln!(o, "memory    peak resident {} MB", b >> 20);
        }
        if layers && !self.layers.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<40} {:<20} {:>22} {:>12} {:>14}",
                "layer", "op", "output", "params", "FLOPs"
            );
            for l in &self.layers {
                let _ = writeln!(
                    o,
                    "{:<40} {:<20} {:>22} {:>12} {:>14}",
                    l.name,
                    l.op,
                    format!("{:?}", l.output_shape),
                    l.params,
                    l.flops
                );
            }
        }
        o
    }
}

/// Everything `inspect --groups` does, from bytes in memory: decode, build the IR, summarise
/// (probe shapes, FLOPs) and, when the interpreter can run it, the dependency analysis on two
/// synthetic samples. The fuzz targets drive this: any input must give Ok or Err, never a panic,
/// hang or unbounded allocation. External data is looked up beside `path`.
pub fn inspect_bytes(bytes: &[u8], path: &Path) -> Result<(Summary, Option<usize>)> {
    let loaded = crate::onnx::decode_model(bytes::Bytes::copy_from_slice(bytes), path)?;
    let m = Model::from_loaded(loaded)?;
    let s = summarize(&m, &HashMap::new());
    if !s.unsupported.is_empty() {
        return Ok((s, None));
    }
    let feeds = crate::calib::synthetic(&m.graph, &HashMap::new(), 2, 0)?;
    let probe = crate::analysis::Probe::run(&m.graph, feeds)?;
    let a = crate::analysis::analyze(&m.graph, &probe, Default::default());
    Ok((s, Some(a.groups.len())))
}
