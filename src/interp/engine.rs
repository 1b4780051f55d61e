//! Runs a graph: feeds checked against the declared inputs, steps evaluated in order, each
//! intermediate value dropped after its last use.
//!
//! Two plans: `Engine::exact` runs node by node and can keep every value (shape inference, the
//! differentiable passes); `Engine::new` is for forward-only inference and fuses what
//! onnxruntime fuses too (BatchNormalization folded into the Conv before it, an activation into
//! the Conv's epilogue) and reuses dead buffers for elementwise ops.

use super::ops;
use super::ops::conv::{ConvShape, conv_raw, conv_shape};
use super::ops::elementwise::Act;
use crate::error::{Error, Result};
use crate::ir::op::{Binary, Unary, Window};
use crate::ir::{Dim, Graph, Op, ValueId};
use crate::tensor::{DType, Data, Real, Storage, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Graph inputs by name.
pub type Feeds<S> = Vec<(String, Tensor<S>)>;

enum StepKind<'g, S> {
    Node(&'g Op),
    /// Conv with folded BatchNormalization and/or a fused activation; weights prepared.
    Conv {
        window: &'g Window,
        group: usize,
        w: Vec<S>,
        w_shape: Vec<usize>,
        b: Option<Vec<S>>,
        act: Option<Act>,
    },
}

struct Step<'g, S> {
    /// The graph node this step starts from (for error messages).
    node: usize,
    kind: StepKind<'g, S>,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<Option<ValueId>>,
}

pub struct Engine<'g, S: Real> {
    pub graph: &'g Graph,
    /// Weights (initializers and Constant outputs) converted to the compute type, by value id.
    consts: Vec<Option<Tensor<S>>>,
    steps: Vec<Step<'g, S>>,
    /// Index of the last step reading each value (`usize::MAX`: a graph output, never freed).
    last_use: Vec<usize>,
    fused: bool,
}

impl<'g, S: Real> Engine<'g, S> {
    /// A forward-only plan with fusions; intermediate values of fused nodes are not computed.
    pub fn new(graph: &'g Graph) -> Result<Self> {
        Self::build(graph, true)
    }

    /// Node-by-node execution: every value of the graph is computed, from the current weights.
    pub fn exact(graph: &'g Graph) -> Result<Self> {
        Self::build(graph, false)
    }

    fn build(graph: &'g Graph, fuse: bool) -> Result<Self> {
        graph.check_supported()?;
        let mut consts: Vec<Option<Tensor<S>>> = vec![None; graph.values.len()];
        for (&id, w) in &graph.weights {
            consts[id] = Some(w.tensor.convert());
        }
        // Only the inference plan folds: the exact plan must recompute everything from the
        // weights, which the differentiable passes replace (perturbed or dual-valued).
        let folded = if fuse {
            fold_constants(graph, &mut consts)
        } else {
            vec![false; graph.nodes.len()]
        };
        let steps = if fuse {
            plan_fused(graph, &consts, &folded)
        } else {
            plan_exact(graph, &folded)
        };
        let mut last_use = vec![0usize; graph.values.len()];
        for (i, s) in steps.iter().enumerate() {
            for &v in s.inputs.iter().flatten() {
                last_use[v] = i;
            }
        }
        for &o in &graph.outputs {
            last_use[o] = usize::MAX;
        }
        Ok(Engine {
            graph,
            consts,
            steps,
            last_use,
            fused: fuse,
        })
    }

    /// Replaces a weight (initializer or Constant output) for the following runs.
    pub fn set_const(&mut self, id: ValueId, t: Tensor<S>) {
        self.consts[id] = Some(t);
    }

    /// The weight a run would use for `id`.
    pub fn constant(&self, id: ValueId) -> Option<&Tensor<S>> {
        self.consts.get(id).and_then(|c| c.as_ref())
    }

    /// Checks feeds against the graph's inputs: every input given once, storage and declared
    /// fixed dimensions respected. Returns them in value-id slots.
    pub fn check_feeds(&self, feeds: Feeds<S>) -> Result<Vec<Option<Tensor<S>>>> {
        let g = self.graph;
        let mut slots: Vec<Option<Tensor<S>>> = vec![None; g.values.len()];
        for (name, t) in feeds {
            let id = g
                .id(&name)
                .filter(|id| g.inputs.contains(id))
                .ok_or_else(|| {
                    let names: Vec<&str> = g.inputs.iter().map(|&i| g.name(i)).collect();
                    Error::Data(format!(
                        "{name:?} is not an input of the model (inputs: {names:?})"
                    ))
                })?;
            let info = &g.values[id];
            if let Some(dt) = info.dtype
                && dt.storage() != t.dtype.storage()
            {
                return Err(Error::Data(format!(
                    "input {name:?} must be {dt}, got {}",
                    t.dtype
                )));
            }
            if let Some(shape) = &info.shape {
                let got = t.shape();
                let fits = shape.len() == got.len()
                    && shape
                        .iter()
                        .zip(got)
                        .all(|(d, &g)| !matches!(d, Dim::Fixed(f) if *f != g));
                if !fits {
                    return Err(Error::Data(format!(
                        "input {name:?} must have shape {}, got {got:?}",
                        fmt_shape(shape)
                    )));
                }
            }
            // Declared non-f32 floats keep their tag so outputs report the model's dtype.
            let t = match info.dtype {
                Some(dt) if dt.storage() == Storage::Float && dt != t.dtype => Tensor {
                    dtype: dt,
                    data: t.data,
                },
                _ => t,
            };
            if slots[id].replace(t).is_some() {
                return Err(Error::Data(format!("input {name:?} given twice")));
            }
        }
        if let Some(&missing) = g.inputs.iter().find(|&&i| slots[i].is_none()) {
            return Err(Error::Data(format!(
                "input {:?} is missing",
                g.name(missing)
            )));
        }
        Ok(slots)
    }

    /// Runs the graph and returns its outputs in declaration order.
    pub fn run(&self, feeds: Feeds<S>) -> Result<Vec<Tensor<S>>> {
        let mut values = self.execute(feeds, false, None)?;
        self.graph
            .outputs
            .iter()
            .map(|&o| {
                values[o]
                    .take()
                    .or_else(|| self.consts[o].clone())
                    .ok_or_else(|| {
                        Error::graph(
                            format!("output {:?}", self.graph.name(o)),
                            "was not computed",
                        )
                    })
            })
            .collect()
    }

    /// Runs the graph keeping every value (indexed by value id), weights included. On a fused
    /// engine (`Engine::new`) the values inside fused groups are absent.
    pub fn run_all(&self, feeds: Feeds<S>) -> Result<Vec<Option<Tensor<S>>>> {
        let mut values = self.execute(feeds, true, None)?;
        for (slot, c) in values.iter_mut().zip(&self.consts) {
            if slot.is_none() {
                slot.clone_from(c);
            }
        }
        Ok(values)
    }

    /// The shape of every value a run computes (weights, lazy ones included), freeing each
    /// value after its last use: shape inference at the memory of an ordinary run.
    pub fn run_shapes(&self, feeds: Feeds<S>) -> Result<Vec<Option<Vec<usize>>>> {
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; self.graph.values.len()];
        for (slot, c) in shapes.iter_mut().zip(&self.consts) {
            *slot = c.as_ref().map(|t| t.shape().to_vec());
        }
        for (&id, l) in &self.graph.lazy {
            shapes[id] = Some(l.shape.clone());
        }
        for &id in &self.graph.inputs {
            if let Some((_, t)) = feeds.iter().find(|(n, _)| n == self.graph.name(id)) {
                shapes[id] = Some(t.shape().to_vec());
            }
        }
        self.execute(feeds, false, Some(&mut shapes))?;
        Ok(shapes)
    }

    /// Whether this engine fuses nodes (see `Engine::new`).
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    fn execute(
        &self,
        feeds: Feeds<S>,
        keep: bool,
        mut shapes: Option<&mut Vec<Option<Vec<usize>>>>,
    ) -> Result<Vec<Option<Tensor<S>>>> {
        let mut values = self.check_feeds(feeds)?;
        // Buffers of dead values, handed to the next conv output: fresh allocations of this
        // size come from the OS as zero pages, and faulting them in costs more than the conv.
        let mut pool: Vec<Vec<S>> = Vec::new();
        let profile = std::env::var_os("ONNX_PRUNE_PROFILE").is_some();
        for (i, step) in self.steps.iter().enumerate() {
            let t0 = profile.then(std::time::Instant::now);
            let _report = Report(t0, &self.graph.nodes[step.node].name);
            let node = &self.graph.nodes[step.node];
            let fail = |m: String| Error::graph(node.label(), m);
            // Lazy weights live only for the step that reads them.
            let mut decoded: Vec<ValueId> = Vec::new();
            for &v in step.inputs.iter().flatten() {
                if values[v].is_none()
                    && self.consts[v].is_none()
                    && let Some(l) = self.graph.lazy.get(&v)
                {
                    values[v] = Some(l.decode::<S>()?);
                    decoded.push(v);
                }
            }
            if let Some(k) = step
                .inputs
                .iter()
                .position(|v| v.is_some_and(|v| values[v].is_none() && self.consts[v].is_none()))
            {
                return Err(fail(format!(
                    "input {:?} has no value",
                    self.graph.name(step.inputs[k].expect("some"))
                )));
            }
            // Elementwise steps write over their first input when nothing else needs it.
            if !keep
                && let StepKind::Node(op) = &step.kind
                && let Some(Some(first)) = step.inputs.first()
                && self.last_use[*first] == i
                && self.consts[*first].is_none()
                && !decoded.contains(first)
                && step.inputs.iter().skip(1).all(|v| *v != Some(*first))
                && let Some(Some(out)) = step.outputs.first()
                && step.outputs.len() == 1
            {
                let mut x = values[*first].take().expect("checked above");
                let rest: Vec<Option<&Tensor<S>>> = step.inputs[1..]
                    .iter()
                    .map(|v| v.and_then(|v| values[v].as_ref().or(self.consts[v].as_ref())))
                    .collect();
                if ops::eval_inplace(op, &mut x, &rest).map_err(fail)? {
                    if let Some(s) = shapes.as_deref_mut() {
                        s[*out] = Some(x.shape().to_vec());
                    }
                    values[*out] = Some(x);
                    for &v in &decoded {
                        values[v] = None;
                    }
                    self.free(i, step, &mut values, &mut pool);
                    continue;
                }
                values[*first] = Some(x);
            }
            let outs = {
                let inputs: Vec<Option<&Tensor<S>>> = step
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| values[v].as_ref().or(self.consts[v].as_ref())))
                    .collect();
                match &step.kind {
                    StepKind::Node(op) => {
                        ops::eval(op, &inputs, step.outputs.len()).map_err(fail)?
                    }
                    StepKind::Conv {
                        window,
                        group,
                        w,
                        w_shape,
                        b,
                        act,
                    } => {
                        let x = ops::util::req(&inputs, 0).map_err(fail)?;
                        let buf = take_buffer(&mut pool);
                        vec![
                            fused_conv(x, window, *group, w, w_shape, b.as_deref(), *act, buf)
                                .map_err(fail)?,
                        ]
                    }
                }
            };
            for (k, slot) in step.outputs.iter().enumerate() {
                let Some(id) = slot else { continue };
                let t = outs.get(k).cloned().ok_or_else(|| {
                    fail(format!("output {k} is not produced by this implementation"))
                })?;
                if let Some(s) = shapes.as_deref_mut() {
                    s[*id] = Some(t.shape().to_vec());
                }
                values[*id] = Some(t);
            }
            for v in decoded {
                values[v] = None;
            }
            if !keep {
                self.free(i, step, &mut values, &mut pool);
            }
        }
        Ok(values)
    }

    fn free(
        &self,
        i: usize,
        step: &Step<'g, S>,
        values: &mut [Option<Tensor<S>>],
        pool: &mut Vec<Vec<S>>,
    ) {
        for &v in step.inputs.iter().flatten() {
            if self.last_use[v] == i
                && let Some(t) = values[v].take()
                && let Data::Float(a) = t.data
                && let Ok(a) = a.try_into_owned_nocopy()
                && pool.len() < POOL_SIZE
            {
                pool.push(a.into_raw_vec_and_offset().0);
            }
        }
    }
}

const POOL_SIZE: usize = 4;

/// The largest recycled buffer (conv outputs are the big allocations).
fn take_buffer<S>(pool: &mut Vec<Vec<S>>) -> Vec<S> {
    let best = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
    best.map(|i| pool.swap_remove(i)).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn fused_conv<S: Real>(
    x: &Tensor<S>,
    window: &Window,
    group: usize,
    w: &[S],
    w_shape: &[usize],
    b: Option<&[S]>,
    act: Option<Act>,
    buf: Vec<S>,
) -> std::result::Result<Tensor<S>, String> {
    let xa = ops::util::standard(ops::util::float(x, "X")?);
    let sh: ConvShape = conv_shape(xa.shape(), w_shape, window, group)?;
    let out = conv_raw(xa.as_slice().expect("standard"), w, b, &sh, act, buf);
    Ok(Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&sh.out_shape), out).expect("sized"),
    ))
}

/// Evaluates, once, every node whose inputs are all constants (Identity or Unsqueeze of a
/// weight, shape arithmetic on fixed shapes, …) and adds its outputs to `consts`. Returns which
/// nodes were folded. A node that fails here is left to fail at run time, with its context.
fn fold_constants<S: Real>(graph: &Graph, consts: &mut [Option<Tensor<S>>]) -> Vec<bool> {
    let mut folded = vec![false; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        let op = n.op.as_ref().expect("checked supported");
        let mut inputs = n.inputs.iter().flatten();
        if matches!(op, Op::Constant { .. })
            || inputs.clone().next().is_none()
            || !inputs.all(|&v| consts[v].is_some())
        {
            continue;
        }
        let ins: Vec<Option<&Tensor<S>>> = n
            .inputs
            .iter()
            .map(|v| v.and_then(|v| consts[v].as_ref()))
            .collect();
        let Ok(outs) = ops::eval(op, &ins, n.outputs.len()) else {
            continue;
        };
        for (k, o) in n.outputs.iter().enumerate() {
            if let (Some(o), Some(t)) = (o, outs.get(k)) {
                consts[*o] = Some(t.clone());
            }
        }
        folded[i] = true;
    }
    folded
}

fn plan_exact<'g, S>(graph: &'g Graph, folded: &[bool]) -> Vec<Step<'g, S>> {
    graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let op = n.op.as_ref().expect("checked supported");
            (!matches!(op, Op::Constant { .. }) && !folded[i]).then(|| Step {
                node: i,
                kind: StepKind::Node(op),
                inputs: n.inputs.clone(),
                outputs: n.outputs.clone(),
            })
        })
        .collect()
}

/// Activations that can run in a Conv's epilogue.
fn fusable_act<S: Real>(
    op: &Op,
    inputs: &[Option<ValueId>],
    consts: &[Option<Tensor<S>>],
) -> Option<Act> {
    match op {
        Op::Unary(u) => match u {
            Unary::Relu
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::HardSwish
            | Unary::LeakyRelu { .. }
            | Unary::Elu { .. }
            | Unary::HardSigmoid { .. }
            | Unary::Gelu { .. }
            | Unary::Selu { .. }
            | Unary::Softplus => Some(Act::Unary(*u)),
            _ => None,
        },
        Op::Clip {
            min,
            max,
            attr_form,
        } => {
            let bounds: Vec<Option<&Tensor<S>>> = inputs[1..]
                .iter()
                .map(|v| match v {
                    None => Some(None),
                    Some(v) => consts[*v].as_ref().map(Some),
                })
                .collect::<Option<Vec<_>>>()?;
            let all: Vec<Option<&Tensor<S>>> = std::iter::once(None).chain(bounds).collect();
            let (lo, hi) = ops::args::clip_bounds(*min, *max, *attr_form, &all).ok()?;
            Some(Act::Clip {
                lo: lo.unwrap_or(f64::NEG_INFINITY),
                hi: hi.unwrap_or(f64::INFINITY),
            })
        }
        _ => None,
    }
}

fn const_floats<S: Real>(consts: &[Option<Tensor<S>>], v: Option<ValueId>) -> Option<Vec<S>> {
    let t = consts[v?].as_ref()?;
    match &t.data {
        Data::Float(a) => Some(a.iter().copied().collect()),
        _ => None,
    }
}

fn plan_fused<'g, S: Real>(
    graph: &'g Graph,
    consts: &[Option<Tensor<S>>],
    folded: &[bool],
) -> Vec<Step<'g, S>> {
    let mut uses = vec![0usize; graph.values.len()];
    let mut consumer = vec![usize::MAX; graph.values.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            uses[v] += 1;
            consumer[v] = i;
        }
    }
    for &o in &graph.outputs {
        uses[o] += 1;
    }
    // The node that alone reads `v` (and `v` is no graph output), if any.
    let sole = |v: ValueId| (uses[v] == 1 && consumer[v] != usize::MAX).then_some(consumer[v]);
    let mut absorbed = vec![false; graph.nodes.len()];
    let mut steps = Vec::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if absorbed[i] || folded[i] {
            continue;
        }
        let op = n.op.as_ref().expect("checked supported");
        if matches!(op, Op::Constant { .. }) {
            continue;
        }
        if let Op::Conv { window, group } = op
            && n.outputs.len() == 1
            && let Some(w) = const_floats(consts, n.inputs.get(1).copied().flatten())
            && let Some(w_shape) = n.inputs[1]
                .and_then(|v| consts[v].as_ref())
                .map(|t| t.shape().to_vec())
            && !w_shape.is_empty()
            && (n.inputs.get(2).copied().flatten().is_none()
                || const_floats(consts, n.inputs[2]).is_some())
        {
            let m = w_shape[0];
            let mut w = w;
            let mut b = const_floats(consts, n.inputs.get(2).copied().flatten());
            let mut out = n.outputs[0].expect("conv output");
            let mut changed = false;
            // Fold a BatchNormalization whose statistics are constants.
            if let Some(j) = sole(out)
                && let Ok(Op::BatchNorm { epsilon }) = &graph.nodes[j].op
                && graph.nodes[j].inputs.first() == Some(&Some(out))
                && graph.nodes[j].outputs.len() == 1
                && let [Some(sc), Some(bi), Some(mu), Some(var)] = [1, 2, 3, 4]
                    .map(|k| const_floats(consts, graph.nodes[j].inputs.get(k).copied().flatten()))
                && [&sc, &bi, &mu, &var].iter().all(|v| v.len() == m)
            {
                let per = w.len() / m;
                let mut bias = b.take().unwrap_or_else(|| vec![S::zero(); m]);
                for c in 0..m {
                    let s = sc[c] / (var[c] + S::from_f64(*epsilon as f64)).sqrt();
                    w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
                    bias[c] = (bias[c] - mu[c]) * s + bi[c];
                }
                b = Some(bias);
                absorbed[j] = true;
                out = graph.nodes[j].outputs[0].expect("bn output");
                changed = true;
            }
            let mut act = None;
            if let Some(j) = sole(out)
                && graph.nodes[j].outputs.len() == 1
                && graph.nodes[j].inputs.first() == Some(&Some(out))
                && let Ok(op_j) = &graph.nodes[j].op
                && let Some(a) = fusable_act(op_j, &graph.nodes[j].inputs, consts)
            {
                act = Some(a);
                absorbed[j] = true;
                out = graph.nodes[j].outputs[0].expect("act output");
                changed = true;
            }
            if changed {
                steps.push(Step {
                    node: i,
                    kind: StepKind::Conv {
                        window,
                        group: *group,
                        w,
                        w_shape,
                        b,
                        act,
                    },
                    inputs: vec![n.inputs[0]],
                    outputs: vec![Some(out)],
                });
                continue;
            }
        }
        let mut inputs = n.inputs.clone();
        // Add(const, x) → Add(x, const): the in-place path writes over the first input.
        if matches!(op, Op::Binary(Binary::Add | Binary::Mul))
            && let [Some(a), Some(b)] = inputs[..]
            && consts[a].is_some()
            && consts[b].is_none()
        {
            inputs.swap(0, 1);
        }
        steps.push(Step {
            node: i,
            kind: StepKind::Node(op),
            inputs,
            outputs: n.outputs.clone(),
        });
    }
    steps
}

pub fn fmt_shape(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Sym(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A zero-filled tensor of a declared input's dtype (for shape probes).
pub fn zero_tensor<S: Real>(dtype: DType, shape: &[usize]) -> Tensor<S> {
    match dtype.storage() {
        Storage::Int => Tensor::int(dtype, ArrayD::from_elem(IxDyn(shape), 0)),
        Storage::Bool => Tensor::bool(ArrayD::from_elem(IxDyn(shape), false)),
        _ => Tensor::float(
            if dtype.is_float() { dtype } else { DType::F32 },
            ArrayD::from_elem(IxDyn(shape), S::zero()),
        ),
    }
}

struct Report<'a>(Option<std::time::Instant>, &'a str);
impl Drop for Report<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            eprintln!("{:>9.3} ms  {}", t.elapsed().as_secs_f64() * 1e3, self.1);
        }
    }
}
