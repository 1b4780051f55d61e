//! Calibration and evaluation data: `.npz` keyed by input name, folders of `.npy`/`.npz`, folders
//! of images; checked against the graph's inputs; split into calibration and held-out parts;
//! synthetic inputs when the user gives none.

mod images;

pub use images::{ImageOptions, Layout, load_images};

use crate::autodiff::curvature::{batch_size, slice_feeds};
use crate::data::{read_npy, read_npz};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::{Dim, Graph, Op};
use crate::tensor::{DType, Data, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use std::collections::HashMap;
use std::path::Path;

/// Reads calibration inputs from a file or folder: an `.npz` keyed by input name, a `.npy`
/// (single-input models), a folder of `.npz`/`.npy` files (joined along the batch axis), or a
/// folder of images (with `images`).
pub fn load(path: &Path, g: &Graph, images: &ImageOptions) -> Result<Feeds<f32>> {
    let feeds = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let arrays: Vec<_> = files
            .iter()
            .filter(|p| matches!(ext(p).as_deref(), Some("npz" | "npy")))
            .cloned()
            .collect();
        if arrays.is_empty() {
            load_images(path, &files, g, images)?
        } else {
            let mut parts = Vec::new();
            for f in &arrays {
                parts.push(read_file(f, g)?);
            }
            join(parts, path)?
        }
    } else {
        read_file(path, g)?
    };
    check(g, &feeds, path)?;
    Ok(feeds)
}

fn ext(p: &Path) -> Option<String> {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn read_file(path: &Path, g: &Graph) -> Result<Feeds<f32>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    match ext(path).as_deref() {
        Some("npy") => {
            let t = read_npy(path)?;
            if g.inputs.len() != 1 {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(vec![(stem, t)]);
            }
            let input = g.inputs[0];
            // One sample without the batch axis gets one.
            let rank = g.values[input].shape.as_ref().map(|s| s.len());
            let t = if rank == Some(t.shape().len() + 1) {
                let mut s = vec![1];
                s.extend_from_slice(t.shape());
                t.reshape(&s)
            } else {
                t
            };
            Ok(vec![(g.name(input).to_string(), t)])
        }
        _ => read_npz(path),
    }
}

/// Joins per-file feeds along the batch axis (every file must hold the same inputs).
fn join(parts: Vec<Feeds<f32>>, dir: &Path) -> Result<Feeds<f32>> {
    let Some(first) = parts.first() else {
        return Err(Error::Data(format!(
            "{}: no .npz/.npy files",
            dir.display()
        )));
    };
    let names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
    let mut out = Vec::new();
    for name in names {
        let ts: Vec<&Tensor<f32>> = parts
            .iter()
            .map(|p| {
                p.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| {
                        Error::Data(format!(
                            "{}: not every file holds input {name:?}",
                            dir.display()
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        out.push((
            name.clone(),
            concat(&ts)
                .map_err(|m| Error::Data(format!("{}: input {name:?}: {m}", dir.display())))?,
        ));
    }
    Ok(out)
}

fn concat(ts: &[&Tensor<f32>]) -> std::result::Result<Tensor<f32>, String> {
    let dtype = ts[0].dtype;
    macro_rules! cat {
        ($v:ident) => {{
            let views = ts
                .iter()
                .map(|t| match &t.data {
                    Data::$v(a) => Ok(a.view()),
                    _ => Err("element types differ between files".to_string()),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Data::$v(
                ndarray::concatenate(Axis(0), &views)
                    .map_err(|e| e.to_string())?
                    .into_shared(),
            )
        }};
    }
    let data = match &ts[0].data {
        Data::Float(_) => cat!(Float),
        Data::Int(_) => cat!(Int),
        Data::Bool(_) => cat!(Bool),
    };
    Ok(Tensor { dtype, data })
}

/// Checks feeds against the graph's inputs: every input present, no unknown name, element
/// types that fit, declared fixed dims respected, one batch size, finite values.
pub fn check(g: &Graph, feeds: &Feeds<f32>, source: &Path) -> Result<()> {
    let at = |m: String| Error::Data(format!("{}: {m}", source.display()));
    let inputs: Vec<&str> = g.inputs.iter().map(|&i| g.name(i)).collect();
    for (n, _) in feeds {
        if !inputs.contains(&n.as_str()) {
            return Err(at(format!(
                "{n:?} is not an input of the model (inputs: {inputs:?})"
            )));
        }
    }
    let mut batch = None;
    for &id in &g.inputs {
        let info = &g.values[id];
        let Some((_, t)) = feeds.iter().find(|(n, _)| *n == info.name) else {
            return Err(at(format!(
                "input {:?} is missing (inputs: {inputs:?})",
                info.name
            )));
        };
        if let Some(dt) = info.dtype
            && dt.storage() != t.dtype.storage()
        {
            return Err(at(format!(
                "input {:?} must be {dt}, got {}",
                info.name, t.dtype
            )));
        }
        if let Some(shape) = &info.shape {
            let got = t.shape();
            let fits = shape.len() == got.len()
                && shape
                    .iter()
                    .zip(got)
                    .all(|(d, &x)| !matches!(d, Dim::Fixed(f) if *f != x));
            if !fits {
                return Err(at(format!(
                    "input {:?} has shape {got:?}; the model declares {}",
                    info.name,
                    crate::interp::fmt_shape(shape)
                )));
            }
        }
        let n = t.shape().first().copied().unwrap_or(1);
        if *batch.get_or_insert(n) != n {
            return Err(at(format!(
                "inputs disagree on the number of samples (axis 0): {} vs {n}",
                batch.unwrap_or(0)
            )));
        }
        if let Some(a) = t.as_float()
            && let Some(k) = a.iter().position(|v| !v.is_finite())
        {
            return Err(at(format!(
                "input {:?} holds a non-finite value ({}) at flat index {k}",
                info.name,
                a.iter().nth(k).copied().unwrap_or(f32::NAN)
            )));
        }
    }
    if batch == Some(0) {
        return Err(at("no samples".into()));
    }
    Ok(())
}

/// Synthetic inputs for `n` samples: float inputs N(0, 1); integer inputs that index a table
/// (Gather on a weight) uniform over its rows; inputs named like a mask all ones; other
/// integers zero. Dynamic dims other than the batch need `overrides`.
pub fn synthetic(
    g: &Graph,
    overrides: &HashMap<String, Vec<usize>>,
    n: usize,
    seed: u64,
) -> Result<Feeds<f32>> {
    let shapes = crate::inspect::probe_shapes(g, overrides)?;
    let mut rng = crate::autodiff::rng::SplitMix64::new(seed);
    let mut out = Vec::new();
    for (name, dtype, mut shape) in shapes {
        let id = g.id(&name).expect("input");
        let leading_sym = g.values[id]
            .shape
            .as_ref()
            .and_then(|s| s.first())
            .is_some_and(|d| !matches!(d, Dim::Fixed(_)));
        if leading_sym && !overrides.contains_key(&name) && !shape.is_empty() {
            shape[0] = n;
        }
        let len: usize = shape.iter().product();
        let t = match dtype.storage() {
            crate::tensor::Storage::Float => Tensor::float(
                dtype,
                ArrayD::from_shape_vec(
                    IxDyn(&shape),
                    (0..len).map(|_| rng.normal() as f32).collect(),
                )
                .expect("sized"),
            ),
            crate::tensor::Storage::Int => {
                let rows = table_rows(g, id);
                let mask = name.to_ascii_lowercase().contains("mask");
                let v: Vec<i64> = (0..len)
                    .map(|_| match rows {
                        _ if mask => 1,
                        Some(r) => (rng.next_u64() % r as u64) as i64,
                        None => 0,
                    })
                    .collect();
                Tensor::int(
                    dtype,
                    ArrayD::from_shape_vec(IxDyn(&shape), v).expect("sized"),
                )
            }
            crate::tensor::Storage::Bool => Tensor::bool(ArrayD::from_elem(IxDyn(&shape), true)),
            crate::tensor::Storage::None => {
                return Err(Error::Usage(format!(
                    "input {name:?} has element type {dtype}, which has no synthetic values"
                )));
            }
        };
        out.push((name, t));
    }
    Ok(out)
}

/// Rows of the weight table an integer input indexes (Gather(table, input)), if any.
fn table_rows(g: &Graph, input: usize) -> Option<usize> {
    g.nodes.iter().find_map(|n| match &n.op {
        Ok(Op::Gather { axis: 0 }) if n.inputs.get(1) == Some(&Some(input)) => {
            let t = n.inputs[0]?;
            g.weights.get(&t).map(|w| w.tensor.shape()[0])
        }
        _ => None,
    })
}

/// Splits samples into (calibration, held-out): the last `held_out` samples are held out.
pub fn split(feeds: &Feeds<f32>, held_out: usize) -> Result<(Feeds<f32>, Feeds<f32>)> {
    let n = batch_size(feeds)?;
    let k = held_out.min(n.saturating_sub(1));
    Ok((slice_feeds(feeds, 0..n - k), slice_feeds(feeds, n - k..n)))
}

/// The first `n` samples.
pub fn head(feeds: &Feeds<f32>, n: usize) -> Result<Feeds<f32>> {
    let total = batch_size(feeds)?;
    Ok(if n >= total {
        feeds.clone()
    } else {
        slice_feeds(feeds, 0..n)
    })
}

/// Integer class labels from an `.npy`.
pub fn load_labels(path: &Path) -> Result<Vec<i64>> {
    let t = read_npy(path)?;
    if t.dtype.storage() != crate::tensor::Storage::Int && t.dtype != DType::F32 {
        return Err(Error::Data(format!(
            "{}: labels must be integers",
            path.display()
        )));
    }
    Ok(t.to_i64_vec())
}
