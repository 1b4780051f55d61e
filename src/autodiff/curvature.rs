//! Derivative products over calibration data, in micro-batches: gradients, JVPs, exact HVPs,
//! Gauss-Newton products, per-sample gradients, Hutchinson trace/diagonal estimates and layer
//! input second moments (the layer-wise OBS Hessian X·Xᵀ).

use super::backward::{Diff, Tape};
use super::objective::Objective;
use super::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::interp::ops::conv::{conv_shape, im2col};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::{Data, Dual, MatRef, Real, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use serde::Serialize;

/// Peak memory and work of the passes run so far.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// Largest forward tape held at once (bytes): bounded by the micro-batch size.
    pub peak_tape_bytes: usize,
    pub micro_batches: usize,
}

/// A mean and its standard error over probes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub stderr: f64,
    pub probes: usize,
}

impl Estimate {
    fn from_samples(v: &[f64]) -> Estimate {
        let k = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / k;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0)
        } else {
            0.0
        };
        Estimate {
            mean,
            stderr: (var / k).sqrt(),
            probes: v.len(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HutchinsonOptions {
    pub seed: u64,
    pub min_probes: usize,
    pub max_probes: usize,
    /// Stop once the running estimate of the total trace moves by less than this (relative).
    pub tol: f64,
}

impl Default for HutchinsonOptions {
    fn default() -> Self {
        HutchinsonOptions {
            seed: 0,
            min_probes: 3,
            max_probes: 50,
            tol: 1e-2,
        }
    }
}

/// Hutchinson estimates per parameter tensor: Tr(H_bb) and diag(H_bb) for each `wrt` block.
#[derive(Debug, Clone)]
pub struct Hutchinson {
    pub traces: Vec<Estimate>,
    pub diagonals: Vec<ArrayD<f64>>,
    pub total: Estimate,
}

/// (2/n)·Σ x·xᵀ over the n input vectors of a layer (one matrix per group of a grouped conv).
#[derive(Debug, Clone)]
pub struct LayerHessian {
    pub blocks: Vec<ArrayD<f64>>,
    pub samples: usize,
}

/// A micro-batch: its feeds, the objective restricted to it, its share of the batch.
type Chunk<S> = (Feeds<S>, Option<Objective>, f64);

/// The result of a Hessian-vector product pass.
#[derive(Debug, Clone)]
pub struct Hvp<S> {
    pub loss: f64,
    pub gradient: Vec<ArrayD<S>>,
    /// H·v, one array per `wrt` block.
    pub hv: Vec<ArrayD<S>>,
}

pub struct Curvature<'g, S: Real> {
    pub graph: &'g Graph,
    plain: Diff<'g, S>,
    dual: Diff<'g, Dual<S>>,
    /// Samples per forward pass.
    pub micro_batch: usize,
    stats: std::cell::Cell<Stats>,
}

/// Samples `r` of `a` (axis 0), sharing its storage.
fn rows<T: Clone>(
    a: &ndarray::ArcArray<T, IxDyn>,
    r: std::ops::Range<usize>,
) -> ndarray::ArcArray<T, IxDyn> {
    a.clone().slice_axis_move(Axis(0), Slice::from(r))
}

/// `0..n` cut into ⌈n / most⌉ consecutive ranges whose sizes differ by at most one.
pub fn balanced_ranges(n: usize, most: usize) -> Vec<std::ops::Range<usize>> {
    let k = n.div_ceil(most.max(1)).max(1);
    (0..k).map(|i| i * n / k..(i + 1) * n / k).collect()
}

/// Samples [r) of every feed (axis 0), sharing the feeds' storage.
pub fn slice_feeds<S: Real>(feeds: &Feeds<S>, r: std::ops::Range<usize>) -> Feeds<S> {
    feeds
        .iter()
        .map(|(n, t)| {
            let data = match &t.data {
                Data::Float(a) => Data::Float(rows(a, r.clone())),
                Data::Int(a) => Data::Int(rows(a, r.clone())),
                Data::Bool(a) => Data::Bool(rows(a, r.clone())),
            };
            (
                n.clone(),
                Tensor {
                    dtype: t.dtype,
                    data,
                },
            )
        })
        .collect()
}

/// The batch size shared by every feed (axis 0).
pub fn batch_size<S: Real>(feeds: &Feeds<S>) -> Result<usize> {
    let sizes: Vec<usize> = feeds
        .iter()
        .map(|(_, t)| t.shape().first().copied().unwrap_or(1))
        .collect();
    match sizes.first() {
        Some(&n) if sizes.iter().all(|&s| s == n) => Ok(n),
        Some(_) => Err(Error::Data(format!(
            "inputs disagree on the batch size (axis 0): {sizes:?}"
        ))),
        None => Err(Error::Data("no inputs".into())),
    }
}

fn to_dual<S: Real>(t: &Tensor<S>, tangent: Option<&ArrayD<S>>) -> Result<Tensor<Dual<S>>> {
    Ok(match (&t.data, tangent) {
        (Data::Float(a), Some(v)) => {
            if v.shape() != a.shape() {
                return Err(Error::Usage(format!(
                    "direction of shape {:?} for a value of shape {:?}",
                    v.shape(),
                    a.shape()
                )));
            }
            let d = ndarray::Zip::from(a)
                .and(v)
                .map_collect(|&x, &t| Dual::new(x, t));
            Tensor::float(t.dtype, d)
        }
        _ => t.convert::<Dual<S>>(),
    })
}

fn primal<S: Real>(t: &Tensor<Dual<S>>) -> Tensor<S> {
    match &t.data {
        Data::Float(a) => Tensor::float(t.dtype, a.mapv(|d| d.v)),
        Data::Int(a) => Tensor {
            dtype: t.dtype,
            data: Data::Int(a.clone()),
        },
        Data::Bool(a) => Tensor {
            dtype: t.dtype,
            data: Data::Bool(a.clone()),
        },
    }
}

fn split<S: Real>(a: ndarray::ArrayViewD<'_, Dual<S>>) -> (ArrayD<S>, ArrayD<S>) {
    (a.mapv(|d| d.v), a.mapv(|d| d.t))
}

fn add_scaled<S: Real>(acc: &mut Option<Vec<ArrayD<S>>>, part: Vec<ArrayD<S>>, w: f64) {
    let w = S::from_f64(w);
    match acc {
        None => *acc = Some(part.into_iter().map(|p| p.mapv(|v| v * w)).collect()),
        Some(a) => {
            for (x, p) in a.iter_mut().zip(part) {
                ndarray::Zip::from(x).and(&p).for_each(|x, &p| *x += p * w);
            }
        }
    }
}

impl<'g, S: Real> Curvature<'g, S> {
    pub fn new(graph: &'g Graph, micro_batch: usize) -> Result<Self> {
        Ok(Curvature {
            graph,
            plain: Diff::new(graph)?,
            dual: Diff::new(graph)?,
            micro_batch: micro_batch.max(1),
            stats: Default::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    fn record(&self, tape_bytes: usize) {
        let mut s = self.stats.get();
        s.peak_tape_bytes = s.peak_tape_bytes.max(tape_bytes);
        s.micro_batches += 1;
        self.stats.set(s);
    }

    /// Micro-batches: (feeds, objective restricted to them, their share of the batch), of
    /// near-equal sizes (48 samples at 32 per micro-batch: 24 + 24, not 32 + 16) so that the
    /// passes that run them in parallel are balanced. The split depends on the sample count
    /// and `micro_batch` only, never on the thread count: results are the same on every machine.
    fn chunks(&self, feeds: &Feeds<S>, obj: Option<&Objective>) -> Result<Vec<Chunk<S>>> {
        let n = batch_size(feeds)?;
        if n <= self.micro_batch {
            return Ok(vec![(feeds.clone(), obj.cloned(), 1.0)]);
        }
        Ok(balanced_ranges(n, self.micro_batch)
            .into_iter()
            .map(|r| {
                let w = r.len() as f64 / n as f64;
                (slice_feeds(feeds, r.clone()), obj.map(|o| o.slice(r)), w)
            })
            .collect())
    }

    /// Replaces a weight (for both the plain and the dual passes).
    pub fn set_weight(&mut self, id: ValueId, t: Tensor<S>) -> Result<()> {
        self.dual.set_weight(id, t.convert())?;
        self.plain.set_weight(id, t)
    }

    /// One recorded forward pass (no micro-batching).
    pub fn forward(&self, feeds: Feeds<S>) -> Result<Tape<S>> {
        let t = self.plain.forward(feeds)?;
        self.record(t.bytes());
        Ok(t)
    }

    /// The objective's value and its gradient with respect to each of `wrt` (weights or any
    /// value of the graph).
    pub fn gradient(
        &self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
    ) -> Result<(f64, Vec<ArrayD<S>>)> {
        use rayon::prelude::*;
        // Micro-batches in parallel, summed in their order afterwards (the same sums as a
        // sequential loop).
        // The fields, not `self`: its statistics cell stays on this thread.
        let (plain, graph) = (&self.plain, self.graph);
        let parts = self
            .chunks(feeds, Some(obj))?
            .into_par_iter()
            .map(|(f, o, w)| {
                let o = o.expect("objective");
                let tape = plain.forward(f)?;
                let bytes = tape.bytes();
                let (l, seeds) = o.evaluate(graph, &tape)?;
                let g = plain.backward(&tape, seeds, wrt)?;
                Ok((w * l.to_f64(), g, w, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut loss = 0.0;
        let mut acc = None;
        for (l, g, w, bytes) in parts {
            self.record(bytes);
            loss += l;
            add_scaled(&mut acc, g, w);
        }
        Ok((loss, acc.unwrap_or_default()))
    }

    /// Points the dual pass at direction `v` on `wrt` (weights); graph inputs among `wrt` get
    /// their tangents from `input_tangents`.
    fn set_direction(
        &mut self,
        wrt: &[ValueId],
        v: &[ArrayD<S>],
    ) -> Result<Vec<(String, ArrayD<S>)>> {
        if wrt.len() != v.len() {
            return Err(Error::Usage(format!(
                "{} directions for {} values",
                v.len(),
                wrt.len()
            )));
        }
        let mut input_tangents = Vec::new();
        for (&id, d) in wrt.iter().zip(v) {
            if self.graph.inputs.contains(&id) {
                input_tangents.push((self.graph.name(id).to_string(), d.clone()));
                continue;
            }
            let w = self.plain.weight(id).ok_or_else(|| {
                Error::graph(
                    format!("value {:?}", self.graph.name(id)),
                    "is neither a weight nor a graph input",
                )
            })?;
            let t = to_dual(w, Some(d))?;
            self.dual.set_weight(id, t)?;
        }
        Ok(input_tangents)
    }

    fn clear_direction(&mut self, wrt: &[ValueId]) -> Result<()> {
        for &id in wrt {
            if let Some(w) = self.plain.weight(id) {
                let t = w.convert();
                self.dual.set_weight(id, t)?;
            }
        }
        Ok(())
    }

    fn dual_feeds(
        feeds: &Feeds<S>,
        tangents: &[(String, ArrayD<S>)],
        range: Option<std::ops::Range<usize>>,
    ) -> Result<Feeds<Dual<S>>> {
        feeds
            .iter()
            .map(|(n, t)| {
                let tan = tangents
                    .iter()
                    .find(|(m, _)| m == n)
                    .map(|(_, d)| match &range {
                        Some(r) => d.slice_axis(Axis(0), Slice::from(r.clone())).to_owned(),
                        None => d.clone(),
                    });
                Ok((n.clone(), to_dual(t, tan.as_ref())?))
            })
            .collect()
    }

    /// Forward-mode derivative of every graph output along direction `v` on `wrt` (weights or
    /// graph inputs): (outputs, J·v), concatenated over micro-batches.
    pub fn jvp(
        &mut self,
        feeds: &Feeds<S>,
        wrt: &[ValueId],
        v: &[ArrayD<S>],
    ) -> Result<Vec<(ArrayD<S>, ArrayD<S>)>> {
        let tangents = self.set_direction(wrt, v)?;
        let n = batch_size(feeds)?;
        let mut parts: Vec<Vec<(ArrayD<S>, ArrayD<S>)>> = Vec::new();
        let ranges: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(self.micro_batch)
            .map(|s| s..(s + self.micro_batch).min(n))
            .collect();
        let whole = ranges.len() == 1;
        let res = (|| {
            for r in ranges {
                let f = if whole {
                    feeds.clone()
                } else {
                    slice_feeds(feeds, r.clone())
                };
                let df = Self::dual_feeds(&f, &tangents, (!whole).then_some(r))?;
                let tape = self.dual.forward(df)?;
                self.record(tape.bytes());
                let outs = self
                    .graph
                    .outputs
                    .iter()
                    .map(|&o| tape.float_view(self.graph, o).map(split))
                    .collect::<Result<Vec<_>>>()?;
                parts.push(outs);
            }
            Ok::<(), Error>(())
        })();
        self.clear_direction(wrt)?;
        res?;
        let k = self.graph.outputs.len();
        (0..k)
            .map(|i| {
                let vals: Vec<_> = parts.iter().map(|p| p[i].0.view()).collect();
                let tans: Vec<_> = parts.iter().map(|p| p[i].1.view()).collect();
                Ok((
                    ndarray::concatenate(Axis(0), &vals).map_err(|e| Error::Data(e.to_string()))?,
                    ndarray::concatenate(Axis(0), &tans).map_err(|e| Error::Data(e.to_string()))?,
                ))
            })
            .collect()
    }

    /// Exact Hessian-vector product of the objective with respect to `wrt` (weights), by
    /// forward-over-reverse: the backward pass runs on dual numbers whose tangents carry `v`.
    /// Returns (objective, gradient, H·v).
    pub fn hvp(
        &mut self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
        v: &[ArrayD<S>],
    ) -> Result<Hvp<S>> {
        let tangents = self.set_direction(wrt, v)?;
        if !tangents.is_empty() {
            self.clear_direction(wrt)?;
            return Err(Error::Usage(
                "Hessian-vector products are taken with respect to weights".into(),
            ));
        }
        let chunks = self.chunks(feeds, Some(obj))?;
        let (dual, graph) = (&self.dual, self.graph);
        let res = (|| {
            use rayon::prelude::*;
            let parts = chunks
                .into_par_iter()
                .map(|(f, o, w)| {
                    let o = o.expect("objective");
                    let tape = dual.forward(Self::dual_feeds(&f, &[], None)?)?;
                    let bytes = tape.bytes();
                    let (l, seeds) = o.evaluate(graph, &tape)?;
                    let g = dual.backward(&tape, seeds, wrt)?;
                    let (gv, gt): (Vec<_>, Vec<_>) = g.iter().map(|a| split(a.view())).unzip();
                    Ok((w * l.v.to_f64(), gv, gt, w, bytes))
                })
                .collect::<Result<Vec<_>>>()?;
            let (mut loss, mut grad, mut hv) = (0.0, None, None);
            for (l, gv, gt, w, bytes) in parts {
                self.record(bytes);
                loss += l;
                add_scaled(&mut grad, gv, w);
                add_scaled(&mut hv, gt, w);
            }
            Ok::<_, Error>(Hvp {
                loss,
                gradient: grad.unwrap_or_default(),
                hv: hv.unwrap_or_default(),
            })
        })();
        self.clear_direction(wrt)?;
        res
    }

    /// Gauss-Newton product G·v = Jᵀ·Λ·J·v (Λ: the objective's Hessian in its value).
    pub fn gnvp(
        &mut self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
        v: &[ArrayD<S>],
    ) -> Result<Vec<ArrayD<S>>> {
        let tangents = self.set_direction(wrt, v)?;
        if !tangents.is_empty() {
            self.clear_direction(wrt)?;
            return Err(Error::Usage(
                "Gauss-Newton products are taken with respect to weights".into(),
            ));
        }
        let chunks = self.chunks(feeds, Some(obj))?;
        let (plain, dual, graph) = (&self.plain, &self.dual, self.graph);
        let res = (|| {
            use rayon::prelude::*;
            let parts = chunks
                .into_par_iter()
                .map(|(f, o, w)| {
                    let o = o.expect("objective");
                    let dtape = dual.forward(Self::dual_feeds(&f, &[], None)?)?;
                    let bytes = dtape.bytes();
                    let vals = o.values();
                    let jv = vals
                        .iter()
                        .map(|&v| dtape.float(graph, v).map(|y| y.mapv(|d| d.t)))
                        .collect::<Result<Vec<_>>>()?;
                    let tape = Tape {
                        values: dtape
                            .values
                            .iter()
                            .map(|v| v.as_ref().map(primal))
                            .collect(),
                    };
                    drop(dtape);
                    let ljv = o.output_hessian(graph, &tape, &jv)?;
                    let g = plain.backward(&tape, vals.into_iter().zip(ljv).collect(), wrt)?;
                    Ok((g, w, bytes))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut acc = None;
            for (g, w, bytes) in parts {
                self.record(bytes);
                add_scaled(&mut acc, g, w);
            }
            Ok::<_, Error>(acc.unwrap_or_default())
        })();
        self.clear_direction(wrt)?;
        res
    }

    /// The gradient of the objective on each sample alone (for the empirical Fisher and
    /// WoodFisher).
    pub fn per_sample_gradients(
        &self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
    ) -> Result<Vec<Vec<ArrayD<S>>>> {
        let n = batch_size(feeds)?;
        (0..n)
            .map(|i| {
                let (_, g) =
                    self.gradient(&slice_feeds(feeds, i..i + 1), &obj.slice(i..i + 1), wrt)?;
                Ok(g)
            })
            .collect()
    }

    /// Hutchinson estimates of Tr(H_bb) and diag(H_bb) for each `wrt` block b, with Rademacher
    /// probes z over all blocks at once: Tr(H_bb) ≈ mean z_bᵀ(Hz)_b, diag ≈ mean z ⊙ Hz.
    pub fn hutchinson(
        &mut self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
        opts: HutchinsonOptions,
    ) -> Result<Hutchinson> {
        self.hutchinson_observed(feeds, obj, wrt, opts, &mut |_| {})
    }

    /// `hutchinson`, calling `on_probe(done)` after each probe (for progress bars).
    pub fn hutchinson_observed(
        &mut self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
        opts: HutchinsonOptions,
        on_probe: &mut dyn FnMut(usize),
    ) -> Result<Hutchinson> {
        let shapes: Vec<Vec<usize>> = wrt
            .iter()
            .map(|&id| {
                self.plain
                    .weight(id)
                    .map(|t| t.shape().to_vec())
                    .ok_or_else(|| {
                        Error::graph(
                            format!("value {:?}", self.graph.name(id)),
                            "is not a weight",
                        )
                    })
            })
            .collect::<Result<_>>()?;
        let mut rng = SplitMix64::new(opts.seed);
        let mut per_block: Vec<Vec<f64>> = vec![Vec::new(); wrt.len()];
        let mut totals: Vec<f64> = Vec::new();
        let mut diag_sum: Vec<ArrayD<f64>> =
            shapes.iter().map(|s| ArrayD::zeros(IxDyn(s))).collect();
        let max = opts.max_probes.max(1);
        for j in 0..max {
            let z: Vec<ArrayD<S>> = shapes
                .iter()
                .map(|s| ArrayD::from_shape_fn(IxDyn(s), |_| S::from_f64(rng.rademacher())))
                .collect();
            let hz = self.hvp(feeds, obj, wrt, &z)?.hv;
            let mut total = 0.0;
            for (b, (zb, hb)) in z.iter().zip(&hz).enumerate() {
                let mut tr = 0.0;
                ndarray::Zip::from(&mut diag_sum[b])
                    .and(zb)
                    .and(hb)
                    .for_each(|d, &z, &h| {
                        let p = (z * h).to_f64();
                        *d += p;
                        tr += p;
                    });
                per_block[b].push(tr);
                total += tr;
            }
            totals.push(total);
            on_probe(totals.len());
            let k = totals.len() as f64;
            if j + 1 >= opts.min_probes.max(2) {
                let mean = totals.iter().sum::<f64>() / k;
                let prev = totals[..totals.len() - 1].iter().sum::<f64>() / (k - 1.0);
                if (mean - prev).abs() <= opts.tol * mean.abs().max(f64::MIN_POSITIVE) {
                    break;
                }
            }
        }
        let k = totals.len() as f64;
        Ok(Hutchinson {
            traces: per_block
                .iter()
                .map(|v| Estimate::from_samples(v))
                .collect(),
            diagonals: diag_sum.into_iter().map(|d| d.mapv(|v| v / k)).collect(),
            total: Estimate::from_samples(&totals),
        })
    }

    /// Nonnegative estimates of diag(G) (G = Jᵀ·Λ·J, the Gauss-Newton matrix) for each of `wrt`:
    /// the mean over `probes` of (Jᵀ·L·u)², u Rademacher in output space and L·Lᵀ = Λ. Each
    /// probe costs one backward pass (the forward tape of a micro-batch is reused by all
    /// probes), and any sum of the estimate over a block is ≥ 0, unlike z ⊙ Hz.
    pub fn gauss_newton_diagonal(
        &mut self,
        feeds: &Feeds<S>,
        obj: &Objective,
        wrt: &[ValueId],
        probes: usize,
        seed: u64,
        on_chunk: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<ArrayD<f64>>> {
        let probes = probes.max(1);
        let mut rng = SplitMix64::new(seed);
        let chunks = self.chunks(feeds, Some(obj))?;
        let total = chunks.len();
        // Σ_chunks √w·Jᵀ·L·u per probe: the chunks' probes are independent, so the cross terms
        // vanish in expectation and w (the chunk's share of the mean) scales Λ once.
        let mut acc: Vec<Vec<ArrayD<f64>>> = Vec::with_capacity(probes);
        for (ci, (f, o, w)) in chunks.into_iter().enumerate() {
            let o = o.expect("objective");
            let tape = self.forward(f)?;
            let vals = o.values();
            for j in 0..probes {
                let u: Vec<ArrayD<S>> = vals
                    .iter()
                    .map(|&v| {
                        let y = tape.float(self.graph, v)?;
                        Ok(ArrayD::from_shape_fn(y.raw_dim(), |_| {
                            S::from_f64(rng.rademacher())
                        }))
                    })
                    .collect::<Result<_>>()?;
                let lu = o.output_hessian_sqrt(self.graph, &tape, &u)?;
                let gr = self
                    .plain
                    .backward(&tape, vals.iter().copied().zip(lu).collect(), wrt)?;
                let sw = w.sqrt();
                let gr: Vec<ArrayD<f64>> = gr.iter().map(|a| a.mapv(|v| v.to_f64() * sw)).collect();
                match acc.get_mut(j) {
                    Some(a) => a.iter_mut().zip(&gr).for_each(|(a, b)| *a += b),
                    None => acc.push(gr),
                }
            }
            on_chunk(ci + 1, total);
        }
        let k = probes as f64;
        let Some(first) = acc.first() else {
            return Err(Error::Usage(
                "no samples to estimate the Gauss-Newton diagonal on".into(),
            ));
        };
        let mut out: Vec<ArrayD<f64>> = first.iter().map(|a| ArrayD::zeros(a.raw_dim())).collect();
        for a in &acc {
            for (o, g) in out.iter_mut().zip(a) {
                ndarray::Zip::from(o)
                    .and(g)
                    .for_each(|o, &g| *o += g * g / k);
            }
        }
        Ok(out)
    }

    /// The layer-wise OBS Hessian of node `node`'s weight: (2/n)·Σ x·xᵀ over its n input vectors
    /// (Gemm/MatMul rows of the input; Conv im2col columns, one block per group).
    pub fn layer_hessian(&self, feeds: &Feeds<S>, node: usize) -> Result<LayerHessian> {
        let n = &self.graph.nodes[node];
        let op =
            n.op.as_ref()
                .map_err(|_| Error::graph(n.label(), "is not supported"))?;
        let x_id = n
            .inputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::graph(n.label(), "has no input"))?;
        let mut blocks: Vec<Vec<f64>> = Vec::new();
        let mut dim = 0;
        let mut samples = 0usize;
        for (f, _, _) in self.chunks(feeds, None)? {
            let tape = self.forward(f)?;
            let x = tape
                .float(self.graph, x_id)?
                .mapv(|v| v.to_f64())
                .as_standard_layout()
                .into_owned();
            let xs = x.as_slice().expect("std");
            match op {
                Op::Gemm { trans_a: false, .. } | Op::MatMul => {
                    let k = *x
                        .shape()
                        .last()
                        .ok_or_else(|| Error::graph(n.label(), "scalar input"))?;
                    let rows = xs.len() / k.max(1);
                    if blocks.is_empty() {
                        dim = k;
                        blocks = vec![vec![0.0; k * k]];
                    }
                    // H += Xᵀ·X over rows.
                    f64::gemm(
                        k,
                        k,
                        rows,
                        MatRef::row_major(xs, k, true),
                        MatRef::row_major(xs, k, false),
                        &mut blocks[0],
                        k,
                        true,
                        1.0,
                        true,
                    );
                    samples += rows;
                }
                Op::Gemm { trans_a: true, .. } => {
                    // transA: A is [K, M], columns are the input vectors.
                    let (k, m) = (x.shape()[0], x.shape()[1]);
                    if blocks.is_empty() {
                        dim = k;
                        blocks = vec![vec![0.0; k * k]];
                    }
                    f64::gemm(
                        k,
                        k,
                        m,
                        MatRef::row_major(xs, m, false),
                        MatRef::row_major(xs, m, true),
                        &mut blocks[0],
                        k,
                        true,
                        1.0,
                        true,
                    );
                    samples += m;
                }
                Op::Conv { window, group } => {
                    let w_id =
                        n.inputs[1].ok_or_else(|| Error::graph(n.label(), "has no weight"))?;
                    let ws = tape
                        .get(w_id)
                        .map(|t| t.shape().to_vec())
                        .unwrap_or_default();
                    let sh = conv_shape(x.shape(), &ws, window, *group)
                        .map_err(|m| Error::graph(n.label(), m))?;
                    let cg = sh.c / group;
                    let kk = cg * sh.g.kh * sh.g.kw;
                    let (hw, ohw) = (sh.g.h * sh.g.w, sh.g.out_len());
                    if blocks.is_empty() {
                        dim = kk;
                        blocks = vec![vec![0.0; kk * kk]; *group];
                    }
                    let mut col = vec![0.0f64; kk * ohw];
                    for img in 0..sh.n {
                        for (gi, blk) in blocks.iter_mut().enumerate() {
                            let xg =
                                &xs[(img * sh.c + gi * cg) * hw..(img * sh.c + (gi + 1) * cg) * hw];
                            im2col(xg, cg, &sh.g, &mut col);
                            f64::gemm(
                                kk,
                                kk,
                                ohw,
                                MatRef::row_major(&col, ohw, false),
                                MatRef::row_major(&col, ohw, true),
                                blk,
                                kk,
                                true,
                                1.0,
                                true,
                            );
                        }
                    }
                    samples += sh.n * ohw;
                }
                _ => {
                    return Err(Error::graph(
                        n.label(),
                        "layer Hessians are defined for Conv, Gemm and MatMul",
                    ));
                }
            }
        }
        let scale = 2.0 / samples.max(1) as f64;
        Ok(LayerHessian {
            blocks: blocks
                .into_iter()
                .map(|b| {
                    ArrayD::from_shape_vec(
                        IxDyn(&[dim, dim]),
                        b.into_iter().map(|v| v * scale).collect(),
                    )
                    .expect("square")
                })
                .collect(),
            samples,
        })
    }
}
