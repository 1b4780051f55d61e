//! How each operator moves, couples or blocks channel elements (see `groups`).

use super::groups::{Analysis, Fix, Group, GroupKind, Options, Role, Slice, Track, Unit};
use super::probe::Probe;
use super::union_find::UnionFind;
use crate::ir::{Graph, Op, ValueId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

type Elem = usize;

/// A track under construction: positions hold elements, not yet units.
#[derive(Debug, Clone)]
struct T {
    axis: usize,
    pos: Vec<Option<Elem>>,
}

pub(crate) struct Builder<'a> {
    g: &'a Graph,
    p: &'a Probe,
    opts: Options,
    uf: UnionFind,
    /// Producer node of each element.
    origin: Vec<usize>,
    tracks: Vec<Option<T>>,
    slices: Vec<(Elem, Slice)>,
    /// (node, weight) pairs whose every use of the weight is described by slices.
    registered: HashSet<(usize, ValueId)>,
    /// Values that are a weight under another name or shape (Identity/Cast, or a Reshape /
    /// Unsqueeze / Squeeze / Flatten that only adds or drops size-1 axes: a bias reshaped to
    /// [1, C, 1, 1]): (weight, the weight's axis for each of the value's axes, producer).
    alias: HashMap<ValueId, (ValueId, Vec<Option<usize>>, usize)>,
    fixes: Vec<Fix>,
    /// Elements coupled in blocks by a reshape to heads / whole conv groups.
    heads: HashSet<Elem>,
    conv_groups: HashSet<Elem>,
    approximate: HashSet<Elem>,
    derived: BTreeMap<ValueId, (ValueId, Vec<Option<usize>>)>,
}

fn rank_axis(a: i64, rank: usize) -> Option<usize> {
    let v = if a < 0 { a + rank as i64 } else { a };
    (0..rank as i64).contains(&v).then_some(v as usize)
}

impl<'a> Builder<'a> {
    pub fn new(g: &'a Graph, p: &'a Probe, opts: Options) -> Self {
        Builder {
            g,
            p,
            opts,
            uf: UnionFind::new(),
            origin: Vec::new(),
            tracks: vec![None; g.values.len()],
            slices: Vec::new(),
            registered: HashSet::new(),
            alias: HashMap::new(),
            fixes: Vec::new(),
            heads: HashSet::new(),
            conv_groups: HashSet::new(),
            approximate: HashSet::new(),
            derived: BTreeMap::new(),
        }
    }

    // ----- helpers -------------------------------------------------------------------------

    fn weight(&self, v: ValueId) -> Option<ValueId> {
        if self.g.weights.contains_key(&v) {
            return Some(v);
        }
        self.alias.get(&v).map(|a| a.0)
    }

    /// The weight behind `v` and the weight's axis that `v`'s `axis` is.
    fn weight_axis(&self, v: ValueId, axis: usize) -> Option<(ValueId, usize)> {
        if self.g.weights.contains_key(&v) {
            return Some((v, axis));
        }
        let (w, map, _) = self.alias.get(&v)?;
        Some((*w, (*map.get(axis)?)?))
    }

    /// Slices the weight behind `v` (possibly reshaped) along `v`'s `axis`; a reshaped
    /// weight's Reshape gets its shape constant rewritten.
    fn slice_value(
        &mut self,
        node: usize,
        v: ValueId,
        axis: usize,
        pos: &[Option<Elem>],
        role: Role,
    ) -> bool {
        let Some((w, wa)) = self.weight_axis(v, axis) else {
            let reason = format!(
                "{:?} read by {} cannot be sliced along axis {axis}",
                self.g.name(v),
                self.label(node)
            );
            self.freeze(
                &T {
                    axis,
                    pos: pos.to_vec(),
                },
                &reason,
            );
            return false;
        };
        if let Some((_, map, producer)) = self.alias.get(&v).cloned() {
            self.registered.insert((producer, w));
            if matches!(self.g.nodes[producer].op, Ok(Op::Reshape { .. })) {
                self.fixes.push(Fix::Reshape { node: producer });
            }
            self.derived.insert(v, (w, map));
        }
        self.slice(node, w, wa, pos, role);
        true
    }

    /// Records `out` = `input` of the same values under another shape, when only size-1 axes
    /// differ.
    fn derive(&mut self, node: usize) {
        let (Some(x), Some(o)) = (self.input(node, 0), self.output(node, 0)) else {
            return;
        };
        let Some(w) = self.weight(x) else { return };
        let (Some(xs), Some(os)) = (self.shape(x), self.shape(o)) else {
            return;
        };
        let big = |s: &[usize]| {
            s.iter()
                .enumerate()
                .filter(|(_, d)| **d > 1)
                .map(|(a, d)| (a, *d))
                .collect::<Vec<_>>()
        };
        let (bx, bo) = (big(xs), big(os));
        if bx.len() != bo.len() || bx.iter().zip(&bo).any(|(a, b)| a.1 != b.1) {
            return;
        }
        let mut map = vec![None; os.len()];
        for ((ax, _), (ao, _)) in bx.iter().zip(&bo) {
            let src = if self.g.weights.contains_key(&x) {
                Some(*ax)
            } else {
                self.alias
                    .get(&x)
                    .and_then(|a| a.1.get(*ax).copied().flatten())
            };
            map[*ao] = src;
        }
        self.alias.insert(o, (w, map, node));
    }

    fn shape(&self, v: ValueId) -> Option<&'a [usize]> {
        self.p.shape(v)
    }

    fn input(&self, node: usize, k: usize) -> Option<ValueId> {
        self.g.nodes[node].inputs.get(k).copied().flatten()
    }

    fn output(&self, node: usize, k: usize) -> Option<ValueId> {
        self.g.nodes[node].outputs.get(k).copied().flatten()
    }

    fn track(&self, v: Option<ValueId>) -> Option<T> {
        v.and_then(|v| self.tracks[v].clone())
    }

    fn set(&mut self, v: Option<ValueId>, t: Option<T>) {
        if let (Some(v), Some(t)) = (v, t) {
            // A track whose positions are all unowned carries nothing.
            if t.pos.iter().any(|p| p.is_some()) {
                self.tracks[v] = Some(t);
            }
        }
    }

    fn alloc(&mut self, n: usize, node: usize) -> Vec<Option<Elem>> {
        (0..n)
            .map(|_| {
                self.origin.push(node);
                Some(self.uf.add())
            })
            .collect()
    }

    fn freeze(&mut self, t: &T, reason: &str) {
        for e in t.pos.iter().flatten() {
            self.uf.freeze(*e, reason);
        }
    }

    fn freeze_inputs(&mut self, node: usize, reason: &str) {
        let ins: Vec<Option<ValueId>> = self.g.nodes[node].inputs.clone();
        for v in ins {
            if let Some(t) = self.track(v) {
                self.freeze(&t, reason);
            }
        }
    }

    fn label(&self, node: usize) -> String {
        super::groups::node_name(self.g, node)
    }

    /// Couples two position lists element by element; an owned element opposite an unowned
    /// position is frozen.
    fn couple(&mut self, a: &[Option<Elem>], b: &[Option<Elem>], reason: &str) {
        for (x, y) in a.iter().zip(b) {
            match (x, y) {
                (Some(x), Some(y)) => self.uf.union(*x, *y),
                (Some(e), None) | (None, Some(e)) => self.uf.freeze(*e, reason),
                (None, None) => {}
            }
        }
    }

    /// Slices `weight` along `axis` at each position that holds an element.
    fn slice(
        &mut self,
        node: usize,
        weight: ValueId,
        axis: usize,
        pos: &[Option<Elem>],
        role: Role,
    ) {
        self.registered.insert((node, weight));
        for (index, e) in pos.iter().enumerate() {
            if let Some(e) = e {
                self.slices.push((
                    *e,
                    Slice {
                        weight,
                        axis,
                        index,
                        role,
                    },
                ));
            }
        }
    }

    /// Registers a weight input whose use carries no channel (a scalar, a size-1 broadcast).
    fn neutral(&mut self, node: usize, v: Option<ValueId>) {
        if let Some(w) = v.and_then(|v| self.weight(v)) {
            self.registered.insert((node, w));
        }
    }

    fn pass(&mut self, node: usize, axis_map: impl Fn(usize) -> Option<usize>) {
        let Some(t) = self.track(self.input(node, 0)) else {
            return;
        };
        match axis_map(t.axis) {
            Some(a) => {
                let out = self.output(node, 0);
                self.set(
                    out,
                    Some(T {
                        axis: a,
                        pos: t.pos,
                    }),
                );
            }
            None => {
                let r = format!("consumed along its channel axis by {}", self.label(node));
                self.freeze(&t, &r);
            }
        }
    }

    // ----- the pass ------------------------------------------------------------------------

    pub fn node(&mut self, i: usize) {
        let n = &self.g.nodes[i];
        let op = match &n.op {
            Ok(op) => op,
            Err(_) => {
                let r = format!(
                    "flows into {} ({}), which the interpreter does not run",
                    self.label(i),
                    n.op_type
                );
                self.freeze_inputs(i, &r);
                return;
            }
        };
        match op {
            Op::Identity | Op::Cast { .. } | Op::CastLike => {
                self.derive(i);
                self.pass(i, Some);
            }
            Op::Unary(_) | Op::Dropout | Op::Not => self.pass(i, Some),
            Op::Clip { .. } => {
                for k in 1..n.inputs.len() {
                    self.neutral(i, self.input(i, k));
                }
                self.pass(i, Some);
            }
            Op::Binary(_)
            | Op::Compare(_)
            | Op::Logic(_)
            | Op::Variadic(_)
            | Op::Where
            | Op::PRelu => self.elementwise(i),
            Op::Softmax { axis, legacy, .. } => {
                let r = self
                    .shape(self.input(i, 0).unwrap_or(0))
                    .map(|s| s.len())
                    .unwrap_or(0);
                let ax = rank_axis(*axis, r);
                let legacy = *legacy;
                self.pass(i, |a| match ax {
                    Some(k) if a == k || (legacy && a > k) => None,
                    _ => Some(a),
                });
            }
            Op::BatchNorm { .. } | Op::InstanceNorm { .. } => self.channel_params(i),
            Op::LayerNorm { axis, .. } => self.layer_norm(i, *axis),
            Op::Lrn { .. } => self.pass(i, |a| (a != 1).then_some(a)),
            Op::Conv { group, .. } => self.conv(i, *group),
            Op::ConvTranspose(a) => self.conv_transpose(i, a.group),
            Op::Gemm {
                trans_a, trans_b, ..
            } => self.gemm(i, *trans_a, *trans_b),
            Op::MatMul => self.matmul(i),
            Op::Pool { .. } | Op::GlobalPool(_) => self.pass(i, |a| (a == 1).then_some(a)),
            Op::Resize(_) => {
                if self.input(i, 3).is_some() && self.track(self.input(i, 0)).is_some() {
                    self.fixes.push(Fix::Resize { node: i });
                }
                self.pass(i, |a| (a == 1).then_some(a));
            }
            Op::Pad { attr, .. } => self.pad(i, attr.as_ref().map(|(p, _)| p.clone())),
            Op::Flatten { axis } => {
                self.derive(i);
                self.flatten(i, *axis)
            }
            Op::Reshape { .. } => {
                self.derive(i);
                self.reshape(i)
            }
            Op::Transpose { perm } => {
                let r = self
                    .shape(self.input(i, 0).unwrap_or(0))
                    .map(|s| s.len())
                    .unwrap_or(0);
                let perm: Vec<usize> = match perm {
                    Some(p) => p.iter().filter_map(|&x| rank_axis(x, r)).collect(),
                    None => (0..r).rev().collect(),
                };
                self.pass(i, |a| perm.iter().position(|&p| p == a));
            }
            Op::Squeeze { axes } => {
                self.derive(i);
                self.squeeze(i, axes.clone())
            }
            Op::Unsqueeze { axes } => {
                self.derive(i);
                self.unsqueeze(i, axes.clone())
            }
            Op::Split { axis, .. } => self.split(i, *axis),
            Op::Slice { attr } => self.slice_op(i, attr.clone()),
            Op::Concat { axis } => self.concat(i, *axis),
            Op::Gather { axis } => self.gather(i, *axis),
            Op::Expand => {
                let (x, o) = (self.input(i, 0), self.output(i, 0));
                if let (Some(t), Some(xs), Some(os)) = (
                    self.track(x),
                    x.and_then(|x| self.shape(x)),
                    o.and_then(|o| self.shape(o)),
                ) {
                    let a = t.axis + os.len() - xs.len();
                    if os[a] != xs[t.axis] {
                        self.freeze(
                            &t,
                            &format!("broadcast along its channel axis by {}", self.label(i)),
                        );
                    } else {
                        self.fixes.push(Fix::Expand { node: i });
                        self.set(
                            o,
                            Some(T {
                                axis: a,
                                pos: t.pos,
                            }),
                        );
                    }
                }
            }
            Op::Tile => {
                let reps = self
                    .input(i, 1)
                    .and_then(|v| self.p.int(v))
                    .map(|r| r.to_vec());
                self.pass(i, |a| match &reps {
                    Some(r) if r.get(a) == Some(&1) => Some(a),
                    _ => None,
                });
            }
            Op::Reduce {
                axes,
                keepdims,
                noop_with_empty_axes,
                ..
            } => self.reduce(i, axes.clone(), *keepdims, *noop_with_empty_axes),
            Op::Shape { .. } | Op::Size => {}
            Op::ArgExtreme { .. } | Op::TopK { .. } | Op::GatherElements { .. } => {
                let r = format!("selects along channel data in {}", self.label(i));
                self.freeze_inputs(i, &r);
            }
            Op::Range | Op::ConstantOfShape { .. } | Op::Constant { .. } => {}
        }
    }

    fn elementwise(&mut self, i: usize) {
        let n = &self.g.nodes[i];
        let Some(out) = self.output(i, 0) else { return };
        let Some(os) = self.shape(out) else { return };
        let r = os.len();
        let mut tracked: Vec<(usize, T)> = Vec::new();
        for (k, v) in n.inputs.iter().enumerate() {
            if let (Some(t), Some(s)) = (self.track(*v), v.and_then(|v| self.shape(v))) {
                tracked.push((
                    k,
                    T {
                        axis: t.axis + r - s.len(),
                        pos: t.pos,
                    },
                ));
            }
        }
        if tracked.is_empty() {
            return;
        }
        let a = tracked[0].1.axis;
        if tracked.iter().any(|(_, t)| t.axis != a) {
            let reason = format!("combined along different axes in {}", self.label(i));
            for (_, t) in &tracked {
                self.freeze(t, &reason);
            }
            return;
        }
        let c = os[a];
        let Some(base) = tracked
            .iter()
            .find(|(_, t)| t.pos.len() == c)
            .map(|(_, t)| t.pos.clone())
        else {
            let reason = format!("broadcast along its channel axis by {}", self.label(i));
            for (_, t) in &tracked {
                self.freeze(t, &reason);
            }
            return;
        };
        let couple_reason = format!(
            "added to a channel that cannot be pruned in {}",
            self.label(i)
        );
        for (_, t) in &tracked {
            if t.pos.len() == c {
                self.couple(&base, &t.pos, &couple_reason);
            } else {
                let reason = format!("broadcast along its channel axis by {}", self.label(i));
                self.freeze(t, &reason);
            }
        }
        let inputs = n.inputs.clone();
        for (k, v) in inputs.iter().enumerate() {
            let Some(v) = *v else { continue };
            if tracked.iter().any(|(j, _)| *j == k) {
                continue;
            }
            let Some(s) = self.shape(v) else { continue };
            // Axis `a` of the output, in this operand's own (right-aligned) axes.
            let Some(ak) = (a + s.len()).checked_sub(r) else {
                self.neutral(i, Some(v));
                continue;
            };
            if s[ak] == 1 {
                self.neutral(i, Some(v));
                continue;
            }
            let sliced = s[ak] == c
                && self.weight(v).is_some()
                && self.slice_value(i, v, ak, &base, Role::Param);
            match sliced {
                true => {}
                false => {
                    let reason = format!(
                        "combined in {} with {:?}, whose channels are not prunable",
                        self.label(i),
                        self.g.name(v)
                    );
                    let t = T {
                        axis: a,
                        pos: base.clone(),
                    };
                    self.freeze(&t, &reason);
                }
            }
        }
        self.set(Some(out), Some(T { axis: a, pos: base }));
    }

    /// BatchNormalization / InstanceNormalization: per-channel parameters on axis 1.
    fn channel_params(&mut self, i: usize) {
        let params: Vec<Option<ValueId>> = self.g.nodes[i].inputs[1..].to_vec();
        let Some(t) = self.track(self.input(i, 0)) else {
            for p in params {
                self.neutral(i, p);
            }
            return;
        };
        if t.axis != 1 {
            let r = format!("normalised along its channel axis by {}", self.label(i));
            self.freeze(&t, &r);
            return;
        }
        for p in params.into_iter().flatten() {
            match self.weight(p) {
                Some(_) => {
                    self.slice_value(i, p, 0, &t.pos, Role::Param);
                }
                None => {
                    let r = format!("{} takes computed per-channel parameters", self.label(i));
                    self.freeze(&t, &r);
                    return;
                }
            }
        }
        self.set(self.output(i, 0), Some(t));
    }

    fn layer_norm(&mut self, i: usize, axis: i64) {
        let params: Vec<Option<ValueId>> = self.g.nodes[i].inputs[1..].to_vec();
        let x = self.input(i, 0);
        let Some(t) = self.track(x) else {
            for p in params {
                self.neutral(i, p);
            }
            return;
        };
        let r = x.and_then(|x| self.shape(x)).map(|s| s.len()).unwrap_or(0);
        let Some(k) = rank_axis(axis, r) else { return };
        if t.axis < k {
            for p in params {
                self.neutral(i, p);
            }
            self.set(self.output(i, 0), Some(t));
            return;
        }
        if !self.opts.prune_hidden {
            let r = format!(
                "normalised over by {} (prunable with --prune-hidden)",
                self.label(i)
            );
            self.freeze(&t, &r);
            return;
        }
        for p in params.into_iter().flatten() {
            match (self.weight(p), self.shape(p)) {
                (Some(_), Some(ps)) if ps.len() == r - k => {
                    self.slice_value(i, p, t.axis - k, &t.pos, Role::Param);
                }
                _ => {
                    let r = format!("{} has parameters the analysis cannot slice", self.label(i));
                    self.freeze(&t, &r);
                    return;
                }
            }
        }
        for e in t.pos.iter().flatten() {
            self.approximate.insert(*e);
        }
        self.set(self.output(i, 0), Some(t));
    }

    fn conv(&mut self, i: usize, group: usize) {
        let (x, wv, b) = (self.input(i, 0), self.input(i, 1), self.input(i, 2));
        let tx = self.track(x);
        let (Some(w), Some(ws), Some(xs)) = (
            wv.and_then(|v| self.weight(v)),
            wv.and_then(|v| self.shape(v)),
            x.and_then(|x| self.shape(x)),
        ) else {
            self.freeze_inputs(i, &format!("{} has a computed weight", self.label(i)));
            return;
        };
        let bias = b.map(|b| self.weight(b));
        if let Some(None) = bias {
            self.freeze_inputs(i, &format!("{} has a computed bias", self.label(i)));
            return;
        }
        let bias = bias.flatten();
        let tx = match tx {
            Some(t) if t.axis != 1 => {
                self.freeze(
                    &t,
                    &format!("{} convolves along its channel axis", self.label(i)),
                );
                None
            }
            t => t,
        };
        let (cout, cin) = (ws[0], xs[1]);
        let wid = wv.expect("weight");
        self.registered.insert((i, w));
        let out_pos: Vec<Option<Elem>>;
        if group == 1 {
            if let Some(t) = &tx {
                self.slice_value(i, wid, 1, &t.pos, Role::In);
            }
            out_pos = self.alloc(cout, i);
        } else if group == cin {
            // Depthwise (channel multiplier m): output channel o reads input channel o / m.
            let m = (cout / cin.max(1)).max(1);
            match &tx {
                Some(t) => {
                    out_pos = (0..cout).map(|o| t.pos[o / m]).collect();
                    self.fixes.push(Fix::ConvGroup { node: i });
                }
                None => return,
            }
        } else {
            // Grouped: only whole groups can go (input block and output block together).
            let (cg, og) = (cin / group, cout / group);
            let Some(t) = &tx else { return };
            let mut reps: Vec<Option<Elem>> = Vec::with_capacity(group);
            let reason = format!(
                "shares a group of {} with a channel that cannot be pruned",
                self.label(i)
            );
            for gi in 0..group {
                let block = &t.pos[gi * cg..(gi + 1) * cg];
                let first = block.iter().flatten().next().copied();
                if let Some(f) = first {
                    for e in block {
                        match e {
                            Some(e) => self.uf.union(f, *e),
                            None => self.uf.freeze(f, &reason),
                        }
                    }
                    self.conv_groups.insert(f);
                }
                reps.push(first);
            }
            out_pos = (0..cout).map(|o| reps[o / og]).collect();
            self.fixes.push(Fix::ConvGroup { node: i });
        }
        self.slice_value(i, wid, 0, &out_pos, Role::Out);
        if bias.is_some() {
            self.slice_value(i, b.expect("bias"), 0, &out_pos, Role::Out);
        }
        self.set(
            self.output(i, 0),
            Some(T {
                axis: 1,
                pos: out_pos,
            }),
        );
    }

    fn conv_transpose(&mut self, i: usize, group: usize) {
        let (wv, b) = (self.input(i, 1), self.input(i, 2));
        let tx = self.track(self.input(i, 0));
        let (Some(w), Some(ws)) = (
            wv.and_then(|v| self.weight(v)),
            wv.and_then(|v| self.shape(v)),
        ) else {
            self.freeze_inputs(i, &format!("{} has a computed weight", self.label(i)));
            return;
        };
        let bias = b.map(|b| self.weight(b));
        if group != 1 || matches!(bias, Some(None)) {
            self.freeze_inputs(
                i,
                &format!("{} is grouped or has a computed bias", self.label(i)),
            );
            return;
        }
        let wid = wv.expect("weight");
        self.registered.insert((i, w));
        if let Some(t) = &tx {
            if t.axis != 1 {
                self.freeze(
                    t,
                    &format!("{} convolves along its channel axis", self.label(i)),
                );
            } else {
                self.slice_value(i, wid, 0, &t.pos, Role::In);
            }
        }
        let out_pos = self.alloc(ws[1], i);
        self.slice_value(i, wid, 1, &out_pos, Role::Out);
        if let Some(Some(_)) = bias {
            self.slice_value(i, b.expect("bias"), 0, &out_pos, Role::Out);
        }
        self.set(
            self.output(i, 0),
            Some(T {
                axis: 1,
                pos: out_pos,
            }),
        );
    }

    fn gemm(&mut self, i: usize, trans_a: bool, trans_b: bool) {
        let (a, bv, c) = (self.input(i, 0), self.input(i, 1), self.input(i, 2));
        let ta = self.track(a);
        let Some(w) = bv.and_then(|v| self.weight(v)) else {
            self.freeze_inputs(i, &format!("{} multiplies two activations", self.label(i)));
            return;
        };
        self.registered.insert((i, w));
        if let Some(t) = &ta {
            if trans_a || t.axis != 1 {
                self.freeze(
                    t,
                    &format!("{} contracts along another axis", self.label(i)),
                );
            } else {
                self.slice_value(
                    i,
                    bv.expect("weight"),
                    if trans_b { 1 } else { 0 },
                    &t.pos,
                    Role::In,
                );
            }
        }
        let Some(n_out) = self.output(i, 0).and_then(|o| self.shape(o)).map(|s| s[1]) else {
            return;
        };
        let out_pos = self.alloc(n_out, i);
        self.slice_value(
            i,
            bv.expect("weight"),
            if trans_b { 0 } else { 1 },
            &out_pos,
            Role::Out,
        );
        if let Some(c) = c {
            let cs = self.shape(c).unwrap_or(&[]);
            match self.weight(c) {
                Some(_) if cs.last() == Some(&n_out) && n_out > 1 => {
                    if !self.slice_value(i, c, cs.len() - 1, &out_pos, Role::Out) {
                        let t = T {
                            axis: 1,
                            pos: out_pos.clone(),
                        };
                        self.freeze(
                            &t,
                            &format!("{} adds a bias the analysis cannot slice", self.label(i)),
                        );
                    }
                }
                Some(_) => self.neutral(i, Some(c)),
                None => {
                    if cs.last() == Some(&n_out) && n_out > 1 {
                        let t = T {
                            axis: 1,
                            pos: out_pos.clone(),
                        };
                        self.freeze(&t, &format!("{} adds a computed bias", self.label(i)));
                    }
                }
            }
        }
        self.set(
            self.output(i, 0),
            Some(T {
                axis: 1,
                pos: out_pos,
            }),
        );
    }

    fn matmul(&mut self, i: usize) {
        let (av, bv, o) = (self.input(i, 0), self.input(i, 1), self.output(i, 0));
        let (Some(av), Some(bv), Some(o)) = (av, bv, o) else {
            return;
        };
        let (Some(as_), Some(bs), Some(os)) = (self.shape(av), self.shape(bv), self.shape(o))
        else {
            return;
        };
        let (ra, rb, r) = (as_.len(), bs.len(), os.len());
        let (ta, tb) = (self.track(Some(av)), self.track(Some(bv)));
        if let Some(w) = self.weight(bv).filter(|_| rb == 2 && ra >= 2) {
            self.registered.insert((i, w));
            if let Some(t) = &ta {
                if t.axis == ra - 1 {
                    self.slice_value(i, bv, 0, &t.pos, Role::In);
                } else {
                    self.freeze(
                        t,
                        &format!(
                            "{} keeps it on a row axis beside new features",
                            self.label(i)
                        ),
                    );
                }
            }
            let out_pos = self.alloc(bs[1], i);
            self.slice_value(i, bv, 1, &out_pos, Role::Out);
            self.set(
                Some(o),
                Some(T {
                    axis: r - 1,
                    pos: out_pos,
                }),
            );
            return;
        }
        if self.weight(av).is_some() || self.weight(bv).is_some() || ra < 2 || rb < 2 {
            self.freeze_inputs(
                i,
                &format!(
                    "{} multiplies by a constant the analysis does not slice",
                    self.label(i)
                ),
            );
            return;
        }
        // Two activations: [..., M, K] × [..., K, N].
        let reason = format!(
            "multiplied in {} along an axis the analysis does not follow",
            self.label(i)
        );
        let mut out: Option<T> = None;
        match (&ta, &tb) {
            (Some(x), Some(y)) if x.axis == ra - 1 && y.axis == rb - 2 => {
                self.couple(&x.pos.clone(), &y.pos.clone(), &reason);
            }
            (Some(x), Some(y))
                if x.axis < ra - 2 && y.axis < rb - 2 && x.axis + r - ra == y.axis + r - rb =>
            {
                if x.pos.len() == y.pos.len() {
                    self.couple(&x.pos.clone(), &y.pos.clone(), &reason);
                    out = Some(T {
                        axis: x.axis + r - ra,
                        pos: x.pos.clone(),
                    });
                } else {
                    self.freeze(x, &reason);
                    self.freeze(y, &reason);
                }
            }
            (Some(x), None) if x.axis < ra - 2 => {
                let ab = x.axis + r - ra;
                match (ab + rb).checked_sub(r).map(|k| bs[k]) {
                    Some(1) | None => {
                        out = Some(T {
                            axis: ab,
                            pos: x.pos.clone(),
                        })
                    }
                    _ => self.freeze(x, &reason),
                }
            }
            (None, Some(y)) if y.axis < rb - 2 => {
                let ab = y.axis + r - rb;
                match (ab + ra).checked_sub(r).map(|k| as_[k]) {
                    Some(1) | None => {
                        out = Some(T {
                            axis: ab,
                            pos: y.pos.clone(),
                        })
                    }
                    _ => self.freeze(y, &reason),
                }
            }
            (Some(x), None) if x.axis == ra - 2 => {
                out = Some(T {
                    axis: r - 2,
                    pos: x.pos.clone(),
                })
            }
            (None, Some(y)) if y.axis == rb - 1 => {
                out = Some(T {
                    axis: r - 1,
                    pos: y.pos.clone(),
                })
            }
            _ => {
                for t in [&ta, &tb].into_iter().flatten() {
                    self.freeze(t, &reason);
                }
            }
        }
        self.set(Some(o), out);
    }

    fn pad(&mut self, i: usize, attr: Option<Vec<i64>>) {
        let Some(t) = self.track(self.input(i, 0)) else {
            return;
        };
        let r = self
            .shape(self.input(i, 0).unwrap_or(0))
            .map(|s| s.len())
            .unwrap_or(0);
        let pads = attr.or_else(|| {
            self.input(i, 1)
                .and_then(|v| self.p.int(v))
                .map(|p| p.to_vec())
        });
        let axes: Vec<usize> = match self.input(i, 3).and_then(|v| self.p.int(v)) {
            Some(ax) => ax.iter().filter_map(|&a| rank_axis(a, r)).collect(),
            None => (0..r).collect(),
        };
        let k = axes.len();
        let touches = match &pads {
            Some(p) => axes
                .iter()
                .enumerate()
                .any(|(j, &ax)| ax == t.axis && (p.get(j) != Some(&0) || p.get(j + k) != Some(&0))),
            None => true,
        };
        if touches {
            self.freeze(
                &t,
                &format!("padded along its channel axis by {}", self.label(i)),
            );
        } else {
            self.set(self.output(i, 0), Some(t));
        }
    }

    fn flatten(&mut self, i: usize, axis: i64) {
        let x = self.input(i, 0);
        let (Some(t), Some(s)) = (self.track(x), x.and_then(|x| self.shape(x))) else {
            return;
        };
        let Some(k) = rank_axis(axis, s.len()).or((axis == s.len() as i64).then_some(s.len()))
        else {
            return;
        };
        if t.axis < k {
            self.freeze(
                &t,
                &format!("flattened into the batch axis by {}", self.label(i)),
            );
            return;
        }
        let inner: usize = s[t.axis + 1..].iter().product();
        let total: usize = s[k..].iter().product();
        let c = s[t.axis];
        let pos = (0..total).map(|f| t.pos[(f / inner) % c]).collect();
        self.set(self.output(i, 0), Some(T { axis: 1, pos }));
    }

    fn reshape(&mut self, i: usize) {
        let (x, o) = (self.input(i, 0), self.output(i, 0));
        let (Some(t), Some(s), Some(os)) = (
            self.track(x),
            x.and_then(|x| self.shape(x)),
            o.and_then(|o| self.shape(o)),
        ) else {
            return;
        };
        let reason = format!(
            "reshaped by {} in a way the analysis does not follow",
            self.label(i)
        );
        let Some((ins, outs)) = reshape_block(s, os, t.axis) else {
            self.freeze(&t, &reason);
            return;
        };
        let big_in: Vec<usize> = ins.clone().filter(|&a| s[a] > 1).collect();
        let big_out: Vec<usize> = outs.clone().filter(|&b| os[b] > 1).collect();
        let c = s[t.axis];
        let inner_a: usize = s[t.axis + 1..ins.end].iter().product();
        let new_t = if big_in == [t.axis] {
            // The channel axis alone is split (or passes): the outermost output axis carries
            // the units; every block under one of its positions is coupled (a head).
            // The carrier is the largest axis but the innermost (that one is the head
            // dimension): [12, 64] → heads; [3, 8, 15] (packed QKV) → the 8 heads, each
            // coupling its Q, K and V blocks.
            let candidates: &[usize] = if big_out.len() > 1 {
                &big_out[..big_out.len() - 1]
            } else {
                &big_out
            };
            let Some(&b) = candidates.iter().rev().max_by_key(|&&b| os[b]) else {
                self.freeze(&t, &reason);
                return;
            };
            let inner_b: usize = os[b + 1..outs.end].iter().product::<usize>() / inner_a.max(1);
            let outer_b: usize = os[outs.start..b].iter().product();
            let mut pos = Vec::with_capacity(os[b]);
            for q in 0..os[b] {
                let block: Vec<Option<Elem>> = (0..outer_b)
                    .flat_map(|o| {
                        let start = (o * os[b] + q) * inner_b;
                        t.pos[start..start + inner_b].to_vec()
                    })
                    .collect();
                let first = block.iter().flatten().next().copied();
                if let Some(f) = first {
                    for e in &block {
                        match e {
                            Some(e) => self.uf.union(f, *e),
                            None => self.uf.freeze(f, &reason),
                        }
                    }
                    if block.len() > 1 {
                        self.heads.insert(f);
                    }
                }
                pos.push(first);
            }
            T { axis: b, pos }
        } else if big_out.len() == 1 {
            // Axes merged into one: each merged position reads the channel at its coordinate.
            let b = big_out[0];
            let total = os[b];
            let pos = (0..total).map(|f| t.pos[(f / inner_a) % c]).collect();
            T { axis: b, pos }
        } else {
            self.freeze(&t, &reason);
            return;
        };
        self.fixes.push(Fix::Reshape { node: i });
        self.set(o, Some(new_t));
    }

    fn squeeze(&mut self, i: usize, attr: Option<Vec<i64>>) {
        let x = self.input(i, 0);
        let Some(s) = x.and_then(|x| self.shape(x)) else {
            return;
        };
        let r = s.len();
        let axes: Vec<usize> = match attr.or_else(|| {
            self.input(i, 1)
                .and_then(|v| self.p.int(v))
                .map(|a| a.to_vec())
        }) {
            Some(a) => a.iter().filter_map(|&a| rank_axis(a, r)).collect(),
            None => (0..r).filter(|&a| s[a] == 1).collect(),
        };
        self.pass(i, |a| {
            (!axes.contains(&a)).then(|| a - axes.iter().filter(|&&x| x < a).count())
        });
    }

    fn unsqueeze(&mut self, i: usize, attr: Option<Vec<i64>>) {
        let Some(os) = self.output(i, 0).and_then(|o| self.shape(o)) else {
            return;
        };
        let r = os.len();
        let Some(axes) = attr.or_else(|| {
            self.input(i, 1)
                .and_then(|v| self.p.int(v))
                .map(|a| a.to_vec())
        }) else {
            return;
        };
        let axes: BTreeSet<usize> = axes.iter().filter_map(|&a| rank_axis(a, r)).collect();
        self.pass(i, |a| (0..r).filter(|b| !axes.contains(b)).nth(a));
    }

    fn split(&mut self, i: usize, axis: i64) {
        let x = self.input(i, 0);
        let (Some(t), Some(s)) = (self.track(x), x.and_then(|x| self.shape(x))) else {
            return;
        };
        let Some(k) = rank_axis(axis, s.len()) else {
            return;
        };
        let outs: Vec<Option<ValueId>> = self.g.nodes[i].outputs.clone();
        if k != t.axis {
            for o in outs {
                self.set(o, Some(t.clone()));
            }
            return;
        }
        let mut at = 0;
        for o in outs {
            let Some(n) = o.and_then(|o| self.shape(o)).map(|s| s[k]) else {
                return;
            };
            self.set(
                o,
                Some(T {
                    axis: k,
                    pos: t.pos[at..at + n].to_vec(),
                }),
            );
            at += n;
        }
        self.fixes.push(Fix::Split { node: i });
    }

    fn slice_op(&mut self, i: usize, attr: Option<crate::ir::op::SliceAttrs>) {
        let x = self.input(i, 0);
        let (Some(t), Some(s)) = (self.track(x), x.and_then(|x| self.shape(x))) else {
            return;
        };
        let r = s.len();
        let ints = |k: usize| {
            self.input(i, k)
                .and_then(|v| self.p.int(v))
                .map(|v| v.to_vec())
        };
        let (starts, ends, axes, steps) = match attr {
            Some((st, en, ax)) => (Some(st), Some(en), ax, None),
            None => (ints(1), ints(2), ints(3), ints(4)),
        };
        let (Some(starts), Some(ends)) = (starts, ends) else {
            self.freeze(
                &t,
                &format!(
                    "sliced by {} with bounds computed at run time",
                    self.label(i)
                ),
            );
            return;
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().filter_map(|&a| rank_axis(a, r)).collect(),
            None => (0..starts.len()).collect(),
        };
        let Some(j) = axes.iter().position(|&a| a == t.axis) else {
            self.set(self.output(i, 0), Some(t));
            return;
        };
        let step = steps.as_ref().and_then(|s| s.get(j).copied()).unwrap_or(1);
        let d = s[t.axis] as i64;
        if step != 1 {
            self.freeze(
                &t,
                &format!(
                    "sliced with step {step} along its channel axis by {}",
                    self.label(i)
                ),
            );
            return;
        }
        let clamp = |v: i64| if v < 0 { (v + d).clamp(0, d) } else { v.min(d) };
        let (b, e) = (clamp(starts[j]), clamp(ends[j]));
        let pos: Vec<Option<Elem>> = if e > b {
            t.pos[b as usize..e as usize].to_vec()
        } else {
            Vec::new()
        };
        self.fixes.push(Fix::Slice {
            node: i,
            axis: t.axis,
        });
        self.set(self.output(i, 0), Some(T { axis: t.axis, pos }));
    }

    fn concat(&mut self, i: usize, axis: i64) {
        let Some(os) = self.output(i, 0).and_then(|o| self.shape(o)) else {
            return;
        };
        let Some(k) = rank_axis(axis, os.len()) else {
            return;
        };
        let inputs: Vec<Option<ValueId>> = self.g.nodes[i].inputs.clone();
        let tracks: Vec<Option<T>> = inputs.iter().map(|v| self.track(*v)).collect();
        if tracks.iter().all(|t| t.is_none()) {
            return;
        }
        if tracks.iter().flatten().any(|t| t.axis == k) {
            let mut pos = Vec::new();
            for (v, t) in inputs.iter().zip(&tracks) {
                match t {
                    Some(t) if t.axis == k => pos.extend(t.pos.iter().copied()),
                    other => {
                        if let Some(t) = other {
                            self.freeze(
                                t,
                                &format!(
                                    "concatenated across its channel axis by {}",
                                    self.label(i)
                                ),
                            );
                        }
                        let n = v.and_then(|v| self.shape(v)).map(|s| s[k]).unwrap_or(0);
                        pos.extend(std::iter::repeat_n(None, n));
                    }
                }
            }
            self.set(self.output(i, 0), Some(T { axis: k, pos }));
            return;
        }
        // Concatenated along another axis: the inputs' channels line up one to one.
        self.elementwise_like_concat(i, &inputs, &tracks);
    }

    fn elementwise_like_concat(
        &mut self,
        i: usize,
        inputs: &[Option<ValueId>],
        tracks: &[Option<T>],
    ) {
        let a = tracks
            .iter()
            .flatten()
            .next()
            .map(|t| t.axis)
            .expect("some track");
        let reason = format!("joined with unprunable channels by {}", self.label(i));
        if tracks.iter().flatten().any(|t| t.axis != a) {
            for t in tracks.iter().flatten() {
                self.freeze(t, &reason);
            }
            return;
        }
        let base = tracks.iter().flatten().next().expect("some").pos.clone();
        for (v, t) in inputs.iter().zip(tracks) {
            match t {
                Some(t) => self.couple(&base, &t.pos.clone(), &reason),
                None => {
                    if !v.is_some_and(|v| self.slice_value(i, v, a, &base, Role::Param)) {
                        let t = T {
                            axis: a,
                            pos: base.clone(),
                        };
                        self.freeze(&t, &reason);
                    }
                }
            }
        }
        self.set(self.output(i, 0), Some(T { axis: a, pos: base }));
    }

    fn gather(&mut self, i: usize, axis: i64) {
        let (x, idx) = (self.input(i, 0), self.input(i, 1));
        let Some(s) = x.and_then(|x| self.shape(x)) else {
            return;
        };
        let Some(k) = rank_axis(axis, s.len()) else {
            return;
        };
        let ir = idx
            .and_then(|v| self.shape(v))
            .map(|s| s.len())
            .unwrap_or(0);
        self.pass(i, |a| {
            if a == k {
                None
            } else if a < k {
                Some(a)
            } else {
                Some(a - 1 + ir)
            }
        });
    }

    fn reduce(&mut self, i: usize, attr: Option<Vec<i64>>, keepdims: bool, noop: bool) {
        let x = self.input(i, 0);
        let Some(s) = x.and_then(|x| self.shape(x)) else {
            return;
        };
        let r = s.len();
        let axes = attr.or_else(|| {
            self.input(i, 1)
                .and_then(|v| self.p.int(v))
                .map(|a| a.to_vec())
        });
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => a.iter().filter_map(|&a| rank_axis(a, r)).collect(),
            _ if noop => Vec::new(),
            _ => (0..r).collect(),
        };
        self.pass(i, |a| {
            if axes.contains(&a) {
                None
            } else if keepdims {
                Some(a)
            } else {
                Some(a - axes.iter().filter(|&&x| x < a).count())
            }
        });
    }

    // ----- results -------------------------------------------------------------------------

    /// Uses of a weight, looking through aliases.
    fn uses(&self, w: ValueId) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![w];
        while let Some(v) = stack.pop() {
            for (ni, n) in self.g.nodes.iter().enumerate() {
                if n.inputs.contains(&Some(v)) {
                    match n.outputs.first().copied().flatten() {
                        Some(o) if self.alias.get(&o).is_some_and(|a| a.0 == w && a.2 == ni) => {
                            stack.push(o)
                        }
                        _ => out.push(ni),
                    }
                }
            }
        }
        out
    }

    pub fn finish(mut self) -> Analysis {
        let g = self.g;
        // Graph outputs keep their shape.
        for &o in &g.outputs {
            if let Some(t) = self.tracks[o].clone() {
                self.freeze(&t, &format!("reaches the graph output {:?}", g.name(o)));
            }
        }
        // A weight slice at the same (axis, index) seen from two nodes couples the two
        // elements (a parameter shared by two layers); any use of a sliced weight that no rule
        // described blocks it.
        let mut at: HashMap<(ValueId, usize, usize), Elem> = HashMap::new();
        let mut axes: HashMap<ValueId, BTreeSet<usize>> = HashMap::new();
        for (e, s) in self.slices.clone() {
            axes.entry(s.weight).or_default().insert(s.axis);
            match at.get(&(s.weight, s.axis, s.index)) {
                Some(&f) => self.uf.union(f, e),
                None => {
                    at.insert((s.weight, s.axis, s.index), e);
                }
            }
        }
        let weights: Vec<ValueId> = axes.keys().copied().collect();
        for w in weights {
            let many_axes = axes[&w].len() > 1 && !self.is_layer_weight(w);
            let unknown = self
                .uses(w)
                .into_iter()
                .find(|n| !self.registered.contains(&(*n, w)));
            if many_axes || unknown.is_some() {
                let reason = match unknown {
                    Some(n) => format!(
                        "its weight {:?} is also read by {}",
                        g.name(w),
                        self.label(n)
                    ),
                    None => format!("its weight {:?} is sliced along two axes", g.name(w)),
                };
                let es: Vec<Elem> = self
                    .slices
                    .iter()
                    .filter(|(_, s)| s.weight == w)
                    .map(|(e, _)| *e)
                    .collect();
                for e in es {
                    self.uf.freeze(e, &reason);
                }
            }
        }
        self.resolve()
    }

    /// A conv/linear weight is sliced along two axes (outputs and inputs) by design.
    fn is_layer_weight(&self, w: ValueId) -> bool {
        self.g.nodes.iter().any(|n| {
            matches!(
                n.op,
                Ok(Op::Conv { .. } | Op::ConvTranspose(_) | Op::Gemm { .. } | Op::MatMul)
            ) && n
                .inputs
                .get(1)
                .copied()
                .flatten()
                .is_some_and(|v| self.weight(v) == Some(w))
        })
    }

    fn resolve(mut self) -> Analysis {
        let g = self.g;
        let n = self.uf.len();
        // Classes (units) and the producer sets (groups) they connect.
        let roots: Vec<usize> = (0..n).map(|e| self.uf.find(e)).collect();
        let mut prod_uf = UnionFind::new();
        let mut prod_id: BTreeMap<usize, usize> = BTreeMap::new();
        for &node in &self.origin {
            prod_id.entry(node).or_insert_with(|| prod_uf.add());
        }
        for e in 0..n {
            let (a, b) = (prod_id[&self.origin[e]], prod_id[&self.origin[roots[e]]]);
            prod_uf.union(a, b);
        }
        let mut group_of_root: BTreeMap<usize, usize> = BTreeMap::new();
        let mut group_index: BTreeMap<usize, usize> = BTreeMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut unit_of_root: HashMap<usize, (usize, usize)> = HashMap::new();
        let flops_per_elem = self.flops_per_weight_element();
        for e in 0..n {
            if roots[e] != e {
                continue;
            }
            let pg = prod_uf.find(prod_id[&self.origin[e]]);
            let gid = *group_index.entry(pg).or_insert_with(|| {
                groups.push(Group {
                    id: groups.len(),
                    kind: GroupKind::Channels,
                    producers: Vec::new(),
                    units: Vec::new(),
                });
                groups.len() - 1
            });
            group_of_root.insert(e, gid);
            let uid = groups[gid].units.len();
            groups[gid].units.push(Unit {
                slices: Vec::new(),
                frozen: self.uf.frozen(e),
                params: 0,
                flops: 0,
            });
            unit_of_root.insert(e, (gid, uid));
        }
        let mut seen: HashSet<(usize, usize, Slice)> = HashSet::new();
        for (e, s) in &self.slices {
            let (gid, uid) = unit_of_root[&roots[*e]];
            if !seen.insert((gid, uid, *s)) {
                continue;
            }
            let shape = g.weights[&s.weight].tensor.shape();
            let size = shape.iter().product::<usize>() / shape[s.axis].max(1);
            let u = &mut groups[gid].units[uid];
            u.params += size;
            u.flops += (size as f64 * flops_per_elem.get(&s.weight).copied().unwrap_or(0.0)) as u64;
            u.slices.push(*s);
        }
        for (e, &node) in self.origin.iter().enumerate() {
            let gid = group_of_root[&roots[e]];
            if !groups[gid].producers.contains(&node) {
                groups[gid].producers.push(node);
            }
        }
        for grp in &mut groups {
            grp.producers.sort_unstable();
            let first = grp.producers.first().copied();
            grp.kind = match first.map(|p| &g.nodes[p].op) {
                Some(Ok(Op::Gemm { .. } | Op::MatMul)) => GroupKind::Features,
                _ => GroupKind::Channels,
            };
        }
        for e in self.heads.iter().chain(&self.conv_groups) {
            let gid = group_of_root[&roots[*e]];
            groups[gid].kind = if self.heads.contains(e) {
                GroupKind::Heads
            } else {
                GroupKind::ConvGroups
            };
        }
        let tracks = self
            .tracks
            .iter()
            .map(|t| {
                t.as_ref().map(|t| Track {
                    axis: t.axis,
                    pos: t
                        .pos
                        .iter()
                        .map(|p| p.map(|e| unit_of_root[&roots[e]]))
                        .collect(),
                })
            })
            .collect();
        let mut approximate: Vec<(usize, usize)> = self
            .approximate
            .iter()
            .map(|e| unit_of_root[&roots[*e]])
            .collect();
        approximate.sort_unstable();
        approximate.dedup();
        let mut fixes = std::mem::take(&mut self.fixes);
        fixes.dedup();
        Analysis {
            groups,
            tracks,
            fixes,
            approximate,
            flops_per_weight: flops_per_elem,
            derived: std::mem::take(&mut self.derived),
        }
    }

    /// FLOPs per sample contributed by each element of a layer weight: 2 × output positions.
    fn flops_per_weight_element(&self) -> HashMap<ValueId, f64> {
        let mut out: HashMap<ValueId, f64> = HashMap::new();
        for n in &self.g.nodes {
            let Ok(op) = &n.op else { continue };
            let (Some(w), Some(o)) = (
                n.inputs.get(1).copied().flatten(),
                n.outputs.first().copied().flatten(),
            ) else {
                continue;
            };
            let Some(w) = self.weight(w) else { continue };
            let Some(os) = self.shape(o) else { continue };
            let batch = self.p.batch.max(1);
            let positions = match op {
                Op::Conv { .. } | Op::ConvTranspose(_) => os.iter().skip(2).product::<usize>(),
                Op::Gemm { .. } => 1,
                Op::MatMul => os.iter().rev().skip(1).product::<usize>() / batch,
                _ => continue,
            };
            *out.entry(w).or_insert(0.0) += 2.0 * positions as f64;
        }
        out
    }
}

/// The block of axes a Reshape maps onto each other around input axis `a`: (input axes,
/// output axes) with equal products, size-1 axes attached to their neighbours.
fn reshape_block(
    s: &[usize],
    o: &[usize],
    a: usize,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let (mut i, mut j) = (0usize, 0usize);
    while i < s.len() || j < o.len() {
        let (i0, j0) = (i, j);
        let (mut pi, mut pj) = (1usize, 1usize);
        if i < s.len() {
            pi = s[i];
            i += 1;
        }
        if j < o.len() {
            pj = o[j];
            j += 1;
        }
        while pi != pj {
            if pi < pj && i < s.len() {
                pi *= s[i];
                i += 1;
            } else if pj < pi && j < o.len() {
                pj *= o[j];
                j += 1;
            } else {
                return None;
            }
        }
        // Trailing size-1 axes belong to this block.
        while i < s.len() && s[i] == 1 && (j >= o.len() || o[j] != 1) {
            i += 1;
        }
        while j < o.len() && o[j] == 1 && (i >= s.len() || s[i] != 1) {
            j += 1;
        }
        if (i0..i).contains(&a) {
            return Some((i0..i, j0..j));
        }
    }
    None
}
