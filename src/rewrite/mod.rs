//! IR + removal plan → a new ModelProto: weights physically shrink (in their own form:
//! initializer or Constant node), every dependent attribute and shape constant follows
//! (Conv `group`, Reshape targets, Split sizes, Slice bounds, Resize sizes, Expand shapes),
//! value_info follows the new sizes, and everything else is written back as it came.

mod shape_consts;
pub mod tensors;

use crate::analysis::{Analysis, Fix, Probe, Role, UnitRef};
use crate::error::{Error, Result};
use crate::ir::{Model, Op, ValueId};
use crate::onnx::proto::{
    AttributeProto, attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto,
};
use crate::onnx::{ModelProto, NodeProto};
use crate::tensor::{Data, Tensor};
use shape_consts::{IntEdits, resolve};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What to change: removed units (per group, per unit) and new full-size values for weights
/// (compensation refits), applied before slicing.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub removed: Vec<Vec<bool>>,
    pub replace: HashMap<ValueId, Tensor<f32>>,
    /// Units kept but recomputed by a 1×1 conv implant (their producer rows in `replace` are
    /// centre-tap-only filters).
    pub implants: Vec<crate::prune::implant::Implant>,
}

impl Edit {
    pub fn none(a: &Analysis) -> Edit {
        Edit {
            removed: a
                .groups
                .iter()
                .map(|g| vec![false; g.units.len()])
                .collect(),
            replace: HashMap::new(),
            implants: Vec::new(),
        }
    }

    pub fn is_implanted(&self, u: UnitRef) -> bool {
        self.implants
            .iter()
            .any(|i| i.group == u.0 && i.units.contains(&u.1))
    }

    pub fn is_removed(&self, u: UnitRef) -> bool {
        self.removed
            .get(u.0)
            .and_then(|g| g.get(u.1))
            .copied()
            .unwrap_or(false)
    }
}

/// Indices removed from each weight, per axis.
pub fn removed_indices(
    a: &Analysis,
    edit: &Edit,
) -> BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>> {
    let mut out: BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>> = BTreeMap::new();
    for (gi, grp) in a.groups.iter().enumerate() {
        for (ui, u) in grp.units.iter().enumerate() {
            if !edit.is_removed((gi, ui)) {
                continue;
            }
            for s in &u.slices {
                out.entry(s.weight)
                    .or_default()
                    .entry(s.axis)
                    .or_default()
                    .insert(s.index);
            }
        }
    }
    out
}

struct Ctx<'a> {
    model: &'a Model,
    a: &'a Analysis,
    probe: &'a Probe,
    edit: &'a Edit,
    producer: Vec<Option<usize>>,
    removed: BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>>,
}

impl Ctx<'_> {
    /// Kept positions of a tracked value in `range` of its channel axis.
    fn kept(&self, v: ValueId, range: std::ops::Range<usize>) -> usize {
        match &self.a.tracks[v] {
            Some(t) => t.pos[range]
                .iter()
                .filter(|p| p.is_none_or(|u| !self.edit.is_removed(u)))
                .count(),
            None => range.len(),
        }
    }

    fn old_shape(&self, v: ValueId) -> Result<Vec<usize>> {
        self.probe.shape(v).map(|s| s.to_vec()).ok_or_else(|| {
            Error::graph(
                format!("value {:?}", self.model.graph.name(v)),
                "has no known shape",
            )
        })
    }

    fn new_shape(&self, v: ValueId) -> Result<Vec<usize>> {
        let mut s = self.old_shape(v)?;
        if let Some((w, map)) = self.a.derived.get(&v) {
            for (k, src) in map.iter().enumerate() {
                if let Some(r) = src.and_then(|a| self.removed.get(w).and_then(|r| r.get(&a))) {
                    s[k] -= r.len();
                }
            }
        } else if let Some(t) = &self.a.tracks[v] {
            s[t.axis] = self.kept(v, 0..t.pos.len());
        }
        Ok(s)
    }

    fn input(&self, node: usize, k: usize) -> Option<ValueId> {
        self.model.graph.nodes[node]
            .inputs
            .get(k)
            .copied()
            .flatten()
    }

    fn output(&self, node: usize, k: usize) -> Option<ValueId> {
        self.model.graph.nodes[node]
            .outputs
            .get(k)
            .copied()
            .flatten()
    }

    fn ints(&self, v: Option<ValueId>) -> Option<Vec<i64>> {
        v.and_then(|v| self.probe.int(v)).map(|s| s.to_vec())
    }

    /// Asks for entry `k` of integer value `v` to become `value`; entries computed at run time
    /// follow by themselves.
    fn request(&self, edits: &mut IntEdits, node: usize, v: ValueId, k: usize, value: i64) {
        if let Some((c, idx)) = resolve(&self.model.graph, &self.producer, self.probe, v, k) {
            edits.request(c, node, idx, value);
        }
    }
}

fn set_ints(n: &mut NodeProto, name: &str, v: &[i64]) {
    n.attribute.retain(|a| a.name() != name);
    n.attribute.push(AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    });
}

fn set_int(n: &mut NodeProto, name: &str, v: i64) {
    if let Some(a) = n.attribute.iter_mut().find(|a| a.name() == name) {
        a.i = Some(v);
        return;
    }
    n.attribute.push(AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    });
}

/// Applies `edit` to `model`: the pruned ModelProto.
pub fn apply(model: &Model, a: &Analysis, probe: &Probe, edit: &Edit) -> Result<ModelProto> {
    let g = &model.graph;
    let mut producer = vec![None; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &o in n.outputs.iter().flatten() {
            producer[o] = Some(i);
        }
    }
    let removed = removed_indices(a, edit);
    let cx = Ctx {
        model,
        a,
        probe,
        edit,
        producer,
        removed: removed.clone(),
    };
    let mut m = model.source.proto.clone();
    let mut nodes: Vec<NodeProto> = g.nodes.iter().map(|n| n.proto.clone()).collect();

    // Weights: refit values first, then the removed slices.
    // Implanted units move to the end of their group's channels (after the producer's k×k
    // outputs, see `implant`): every slice of theirs is ordered after the others on its axis,
    // and the producer itself no longer computes them.
    let mut implanted: BTreeMap<(ValueId, usize), BTreeSet<usize>> = BTreeMap::new();
    let mut producer_rows: BTreeMap<(ValueId, usize), BTreeSet<usize>> = BTreeMap::new();
    for imp in &edit.implants {
        let pw = g.nodes[imp.producer].inputs[1].expect("producer weight");
        let pb = g.nodes[imp.producer].inputs.get(2).copied().flatten();
        let out_axis = out_axis(&g.nodes[imp.producer].op);
        for &u in &imp.units {
            for s in &a.groups[imp.group].units[u].slices {
                // A Gemm bias may be [1, N]: its unit axis is its only long one.
                let own = (s.weight == pw && s.axis == out_axis) || Some(s.weight) == pb;
                if own {
                    producer_rows
                        .entry((s.weight, s.axis))
                        .or_default()
                        .insert(s.index);
                } else {
                    implanted
                        .entry((s.weight, s.axis))
                        .or_default()
                        .insert(s.index);
                }
            }
        }
    }
    let mut touched: BTreeSet<ValueId> = removed.keys().copied().collect();
    touched.extend(edit.replace.keys().copied());
    touched.extend(producer_rows.keys().map(|k| k.0));
    touched.extend(implanted.keys().map(|k| k.0));
    for &w in &touched {
        let base = edit.replace.get(&w).unwrap_or(&g.weights[&w].tensor);
        let shape = base.shape().to_vec();
        let mut orders: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (axis, &d) in shape.iter().enumerate() {
            let gone = removed.get(&w).and_then(|r| r.get(&axis));
            let own = producer_rows.get(&(w, axis));
            let late = implanted.get(&(w, axis));
            if gone.is_none() && own.is_none() && late.is_none() {
                continue;
            }
            let mut keep: Vec<usize> = (0..d)
                .filter(|i| {
                    !gone.is_some_and(|s| s.contains(i)) && !own.is_some_and(|s| s.contains(i))
                })
                .collect();
            keep.sort_by_key(|i| (late.is_some_and(|s| s.contains(i)), *i));
            orders.insert(axis, keep);
        }
        let t = tensors::select(base, &orders);
        tensors::set_weight(&mut m, g, &mut nodes, w, &t);
    }
    let mut implant_nodes: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    for imp in &edit.implants {
        implant_nodes.push((
            imp.producer,
            if imp.rank.is_some() {
                linear_implant_surgery(model, edit, &removed, &implanted, imp, &mut m, &mut nodes)?
            } else {
                implant_surgery(model, edit, &removed, &implanted, imp, &mut m, &mut nodes)?
            },
        ));
    }

    let mut edits = IntEdits::default();
    for fix in &a.fixes {
        match *fix {
            Fix::ConvGroup { node } => {
                let x = cx.input(node, 0).expect("conv input");
                let (old, new) = (cx.old_shape(x)?[1], cx.new_shape(x)?[1]);
                let Ok(Op::Conv { group, .. }) = &g.nodes[node].op else {
                    continue;
                };
                let per = (old / group).max(1);
                if new != old {
                    set_int(&mut nodes[node], "group", (new / per) as i64);
                }
            }
            Fix::Reshape { node } => {
                let (Some(shape_v), Some(o)) = (cx.input(node, 1), cx.output(node, 0)) else {
                    continue;
                };
                let (old_out, new_out) = (cx.old_shape(o)?, cx.new_shape(o)?);
                let Some(target) = cx.ints(Some(shape_v)) else {
                    continue;
                };
                for k in 0..old_out.len().min(target.len()) {
                    if old_out[k] != new_out[k] && target[k] != -1 && target[k] != 0 {
                        cx.request(&mut edits, node, shape_v, k, new_out[k] as i64);
                    }
                }
            }
            Fix::Split { node } => split_fix(&cx, &mut edits, &mut m, &mut nodes, node)?,
            Fix::Slice { node, axis } => slice_fix(&cx, &mut edits, &mut nodes, node, axis)?,
            Fix::Resize { node } => {
                let (Some(x), Some(sizes)) = (cx.input(node, 0), cx.input(node, 3)) else {
                    continue;
                };
                let new_c = cx.new_shape(x)?[1];
                if cx.ints(Some(sizes)).is_some_and(|s| s.len() > 1) {
                    cx.request(&mut edits, node, sizes, 1, new_c as i64);
                }
            }
            Fix::Expand { node } => {
                let (Some(shape_v), Some(o)) = (cx.input(node, 1), cx.output(node, 0)) else {
                    continue;
                };
                let (old_out, new_out) = (cx.old_shape(o)?, cx.new_shape(o)?);
                let Some(target) = cx.ints(Some(shape_v)) else {
                    continue;
                };
                let off = old_out.len() - target.len();
                for (k, &t) in target.iter().enumerate() {
                    if old_out[k + off] != new_out[k + off] && t as usize == old_out[k + off] {
                        cx.request(&mut edits, node, shape_v, k, new_out[k + off] as i64);
                    }
                }
            }
        }
    }
    let mut inserts = edits.apply(&mut m, g, &mut nodes)?;
    // Implant convs and their Concat go right after their producer.
    for (p, ns) in implant_nodes {
        for (k, n) in ns.into_iter().enumerate().rev() {
            let _ = k;
            inserts.push((p + 1, n));
        }
    }
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, n) in inserts {
        nodes.insert(at, n);
    }

    // value_info follows the new sizes: values on a pruned axis, and weights whose shape
    // changed (IR < 4 lists initializers among the graph inputs, with their shapes).
    let gp = m.graph.as_mut().expect("graph");
    let new_weight_shape: HashMap<String, Vec<i64>> = gp
        .initializer
        .iter()
        .map(|t| (t.name().to_string(), t.dims.clone()))
        .filter(|(n, dims)| {
            g.id(n).and_then(|id| g.weights.get(&id)).is_some_and(|w| {
                w.tensor
                    .shape()
                    .iter()
                    .map(|&d| d as i64)
                    .collect::<Vec<_>>()
                    != *dims
            })
        })
        .collect();
    for vi in gp.input.iter_mut().chain(gp.value_info.iter_mut()) {
        let Some(dims) = new_weight_shape.get(vi.name()) else {
            continue;
        };
        if let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = tt.shape.as_mut()
            && shape.dim.len() == dims.len()
        {
            for (d, &v) in shape.dim.iter_mut().zip(dims) {
                d.value = Some(dimension::Value::DimValue(v));
            }
        }
    }
    for vi in gp.value_info.iter_mut().chain(gp.output.iter_mut()) {
        let Some(id) = g.id(vi.name()) else { continue };
        let Some(t) = &a.tracks[id] else { continue };
        let new_len = cx.kept(id, 0..t.pos.len()) as i64;
        if let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(d) = tt.shape.as_mut().and_then(|s| s.dim.get_mut(t.axis))
            && matches!(d.value, Some(dimension::Value::DimValue(_)))
        {
            d.value = Some(dimension::Value::DimValue(new_len));
        }
    }
    gp.node = nodes;
    list_initializers_as_inputs(&mut m);
    Ok(m)
}

/// Splits an implant's producer: its output is renamed, a 1×1 Conv computes the implanted
/// channels from the same input (the centre taps of their filters), a Concat joins both under
/// the original name. Returns the two new nodes (to go after the producer).
fn implant_surgery(
    model: &Model,
    edit: &Edit,
    removed: &BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>>,
    implanted: &BTreeMap<(ValueId, usize), BTreeSet<usize>>,
    imp: &crate::prune::implant::Implant,
    m: &mut ModelProto,
    nodes: &mut [NodeProto],
) -> Result<Vec<NodeProto>> {
    let g = &model.graph;
    let p = &g.nodes[imp.producer];
    let Ok(Op::Conv { window, .. }) = &p.op else {
        return Err(Error::graph(
            p.label(),
            "an implant's producer must be a Conv",
        ));
    };
    let pw = p.inputs[1].expect("weight");
    let w = edit.replace.get(&pw).unwrap_or(&g.weights[&pw].tensor);
    let ws = w.shape().to_vec();
    let spatial = ws.len() - 2;
    let taps: usize = ws[2..].iter().product();
    let center: usize = {
        let mut c = 0;
        for d in 0..spatial {
            let stride: usize = ws[3 + d..].iter().product();
            c += (ws[2 + d] / 2) * stride;
        }
        c
    };
    let wa = w.as_float().expect("float");
    let flat = wa.as_standard_layout();
    let flat = flat.as_slice().expect("std");
    let keep_in = kept_inputs(removed, implanted, pw, 1, ws[1]);
    let cin = ws[1];
    let mut iw = Vec::with_capacity(imp.units.len() * keep_in.len());
    for &c in &imp.units {
        for &i in &keep_in {
            iw.push(flat[(c * cin + i) * taps + center]);
        }
    }
    let mut shape = vec![imp.units.len(), keep_in.len()];
    shape.extend(std::iter::repeat_n(1, spatial));
    let dtype = w.dtype;
    let iw = Tensor::float(
        dtype,
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), iw).expect("sized"),
    );
    let base = if p.name.is_empty() {
        g.name(p.outputs[0].expect("output")).to_string()
    } else {
        p.name.clone()
    };
    let out_name = nodes[imp.producer].output[0].clone();
    let (kxk, imp_out) = (format!("{out_name}__kxk"), format!("{out_name}__implant"));
    let wname = format!("{base}/implant.weight");
    let gp = m.graph.as_mut().expect("graph");
    gp.initializer
        .push(crate::tensor::tensor_to_proto(&iw, &wname));
    let mut inputs = vec![nodes[imp.producer].input[0].clone(), wname];
    if let Some(b) = p.inputs.get(2).copied().flatten() {
        let bt = edit
            .replace
            .get(&b)
            .unwrap_or(&g.weights[&b].tensor)
            .to_f64_vec();
        let bv: Vec<f32> = imp.units.iter().map(|&c| bt[c] as f32).collect();
        let n = bv.len();
        let t = Tensor::float(
            dtype,
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[n]), bv).expect("sized"),
        );
        let bname = format!("{base}/implant.bias");
        gp.initializer
            .push(crate::tensor::tensor_to_proto(&t, &bname));
        inputs.push(bname);
    }
    nodes[imp.producer].output[0] = kxk.clone();
    let strides: Vec<i64> = if window.strides.is_empty() {
        vec![1; spatial]
    } else {
        window.strides.iter().map(|&s| s as i64).collect()
    };
    let mut conv = NodeProto {
        name: Some(format!("{base}/implant")),
        op_type: Some("Conv".into()),
        input: inputs,
        output: vec![imp_out.clone()],
        ..Default::default()
    };
    set_ints(&mut conv, "kernel_shape", &vec![1; spatial]);
    set_ints(&mut conv, "strides", &strides);
    if !p.proto.domain().is_empty() {
        conv.domain = p.proto.domain.clone();
    }
    let mut concat = NodeProto {
        name: Some(format!("{base}/implant_concat")),
        op_type: Some("Concat".into()),
        input: vec![kxk, imp_out],
        output: vec![out_name],
        ..Default::default()
    };
    set_int(&mut concat, "axis", 1);
    Ok(vec![conv, concat])
}

/// IR versions below 4 require every initializer to be a graph input too (onnx.checker:
/// "in initializer but not in graph input"): the tensors a rewrite adds (implant weights, new
/// shape constants) are listed there, typed and shaped like the tensor.
fn list_initializers_as_inputs(m: &mut ModelProto) {
    use crate::onnx::proto::{TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto};
    if m.ir_version() >= 4 {
        return;
    }
    let Some(gp) = m.graph.as_mut() else { return };
    let listed: BTreeSet<String> = gp.input.iter().map(|i| i.name().to_string()).collect();
    let missing: Vec<ValueInfoProto> = gp
        .initializer
        .iter()
        .filter(|t| !listed.contains(t.name()))
        .map(|t| ValueInfoProto {
            name: Some(t.name().to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: t.data_type,
                    shape: Some(TensorShapeProto {
                        dim: t
                            .dims
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    gp.input.extend(missing);
}

/// The producer's output units on its weight: axis 0 ([out, in…]: Conv, Gemm with transB) or
/// 1 ([in, out]: MatMul, Gemm).
fn out_axis(op: &std::result::Result<Op, crate::ir::ParseError>) -> usize {
    match op {
        Ok(Op::MatMul | Op::Gemm { trans_b: false, .. }) => 1,
        _ => 0,
    }
}

/// The inputs of weight `w` on `axis` that the rewritten model keeps, in its order (units of
/// implanted groups last, as every slice of theirs is reordered).
fn kept_inputs(
    removed: &BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>>,
    implanted: &BTreeMap<(ValueId, usize), BTreeSet<usize>>,
    w: ValueId,
    axis: usize,
    n: usize,
) -> Vec<usize> {
    let gone = removed.get(&w).and_then(|r| r.get(&axis));
    let late = implanted.get(&(w, axis));
    let mut keep: Vec<usize> = (0..n)
        .filter(|i| !gone.is_some_and(|s| s.contains(i)))
        .collect();
    keep.sort_by_key(|i| (late.is_some_and(|s| s.contains(i)), *i));
    keep
}

/// Splits a linear implant's producer: its output is renamed, `MatMul(x, Bᵀ)` then
/// `MatMul(·, Aᵀ)` (a Gemm adding the bias when the producer has its own) compute the implanted
/// units from the same input, a Concat on the last axis joins both under the original name.
/// A·B are the rank-r rows the compensation fitted, factored again by SVD.
fn linear_implant_surgery(
    model: &Model,
    edit: &Edit,
    removed: &BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>>,
    implanted: &BTreeMap<(ValueId, usize), BTreeSet<usize>>,
    imp: &crate::prune::implant::Implant,
    m: &mut ModelProto,
    nodes: &mut [NodeProto],
) -> Result<Vec<NodeProto>> {
    use crate::prune::implant_linear::{at, factor};
    let g = &model.graph;
    let p = &g.nodes[imp.producer];
    let op =
        p.op.clone()
            .map_err(|_| Error::graph(p.label(), "an implant's producer must run"))?;
    let pw = p.inputs[1].expect("weight");
    let w = edit.replace.get(&pw).unwrap_or(&g.weights[&pw].tensor);
    let ws = w.shape().to_vec();
    let in_axis = 1 - out_axis(&p.op);
    let keep_in = kept_inputs(removed, implanted, pw, in_axis, ws[in_axis]);
    let flat = w.to_f64_vec();
    let (s, k) = (imp.units.len(), keep_in.len());
    let mut rows = Vec::with_capacity(s * k);
    for &c in &imp.units {
        rows.extend(keep_in.iter().map(|&i| flat[at(&op, &ws, c, i)]));
    }
    let r = imp.rank.unwrap_or(1).max(1).min(s).min(k);
    let (fa, fb) = factor(&rows, s, k, r)?;
    let dtype = w.dtype;
    let tensor = |shape: [usize; 2], v: Vec<f32>| {
        Tensor::float(
            dtype,
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v).expect("sized"),
        )
    };
    // Bᵀ [k, r] and Aᵀ [r, s]: x·Bᵀ·Aᵀ = (A·B·xᵀ)ᵀ.
    let down: Vec<f32> = (0..k * r).map(|q| fb[(q % r) * k + q / r] as f32).collect();
    let up: Vec<f32> = (0..r * s).map(|q| fa[(q % s) * r + q / s] as f32).collect();
    let base = if p.name.is_empty() {
        g.name(p.outputs[0].expect("output")).to_string()
    } else {
        p.name.clone()
    };
    let out_name = nodes[imp.producer].output[0].clone();
    let (kept_out, mid, imp_out) = (
        format!("{out_name}__kept"),
        format!("{out_name}__implant_low"),
        format!("{out_name}__implant"),
    );
    let (dname, uname) = (format!("{base}/implant.down"), format!("{base}/implant.up"));
    let gp = m.graph.as_mut().expect("graph");
    gp.initializer.push(crate::tensor::tensor_to_proto(
        &tensor([k, r], down),
        &dname,
    ));
    gp.initializer
        .push(crate::tensor::tensor_to_proto(&tensor([r, s], up), &uname));
    let own_bias = matches!(op, Op::Gemm { .. })
        .then(|| p.inputs.get(2).copied().flatten())
        .flatten();
    let domain = (!p.proto.domain().is_empty())
        .then(|| p.proto.domain.clone())
        .flatten();
    let low = NodeProto {
        name: Some(format!("{base}/implant_down")),
        op_type: Some("MatMul".into()),
        input: vec![nodes[imp.producer].input[0].clone(), dname],
        output: vec![mid.clone()],
        domain: domain.clone(),
        ..Default::default()
    };
    let mut high = NodeProto {
        name: Some(format!("{base}/implant_up")),
        op_type: Some("MatMul".into()),
        input: vec![mid, uname],
        output: vec![imp_out.clone()],
        domain: domain.clone(),
        ..Default::default()
    };
    if let Some(b) = own_bias {
        let bt = edit
            .replace
            .get(&b)
            .unwrap_or(&g.weights[&b].tensor)
            .to_f64_vec();
        let bv: Vec<f32> = imp.units.iter().map(|&c| bt[c] as f32).collect();
        let t = Tensor::float(
            dtype,
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[s]), bv).expect("sized"),
        );
        let bname = format!("{base}/implant.bias");
        gp.initializer
            .push(crate::tensor::tensor_to_proto(&t, &bname));
        high.op_type = Some("Gemm".into());
        high.input.push(bname);
    }
    nodes[imp.producer].output[0] = kept_out.clone();
    let mut concat = NodeProto {
        name: Some(format!("{base}/implant_concat")),
        op_type: Some("Concat".into()),
        input: vec![kept_out, imp_out],
        output: vec![out_name],
        ..Default::default()
    };
    set_int(&mut concat, "axis", -1);
    Ok(vec![low, high, concat])
}

fn split_fix(
    cx: &Ctx,
    edits: &mut IntEdits,
    m: &mut ModelProto,
    nodes: &mut [NodeProto],
    node: usize,
) -> Result<()> {
    let g = &cx.model.graph;
    let Ok(Op::Split { axis, split }) = &g.nodes[node].op else {
        return Ok(());
    };
    let x = cx.input(node, 0).expect("split input");
    let rank = cx.old_shape(x)?.len();
    let k = crate::interp::ops::util::axis(*axis, rank)
        .map_err(|e| Error::graph(g.nodes[node].label(), e))?;
    let mut sizes = Vec::new();
    for o in g.nodes[node].outputs.iter() {
        let o = o.ok_or_else(|| Error::graph(g.nodes[node].label(), "has an omitted output"))?;
        sizes.push(cx.new_shape(o)?[k] as i64);
    }
    if split.is_some() {
        set_ints(&mut nodes[node], "split", &sizes);
    } else if let Some(sv) = cx.input(node, 1) {
        for (j, &s) in sizes.iter().enumerate() {
            cx.request(edits, node, sv, j, s);
        }
    } else if g.opset >= 13 {
        let name = format!(
            "{}_split_pruned",
            cx.model.graph.nodes[node].outputs[0]
                .map(|o| g.name(o))
                .unwrap_or("split")
        );
        let t = Tensor::<f32>::i64_vec(sizes.clone());
        m.graph
            .as_mut()
            .expect("graph")
            .initializer
            .push(crate::tensor::tensor_to_proto(&t, &name));
        let n = &mut nodes[node];
        n.attribute.retain(|a| a.name() != "num_outputs");
        if n.input.len() < 2 {
            n.input.push(name);
        } else {
            n.input[1] = name;
        }
    } else {
        set_ints(&mut nodes[node], "split", &sizes);
    }
    Ok(())
}

fn slice_fix(
    cx: &Ctx,
    edits: &mut IntEdits,
    nodes: &mut [NodeProto],
    node: usize,
    axis: usize,
) -> Result<()> {
    let g = &cx.model.graph;
    let Ok(Op::Slice { attr }) = &g.nodes[node].op else {
        return Ok(());
    };
    let x = cx.input(node, 0).expect("slice input");
    let s = cx.old_shape(x)?;
    let (starts, ends, axes) = match attr {
        Some((st, en, ax)) => (Some(st.clone()), Some(en.clone()), ax.clone()),
        None => (
            cx.ints(cx.input(node, 1)),
            cx.ints(cx.input(node, 2)),
            cx.ints(cx.input(node, 3)),
        ),
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Ok(());
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| crate::interp::ops::util::axis(a, s.len()).unwrap_or(usize::MAX))
            .collect(),
        None => (0..starts.len()).collect(),
    };
    let Some(j) = axes.iter().position(|&a| a == axis) else {
        return Ok(());
    };
    let d = s[axis] as i64;
    let clamp = |v: i64| if v < 0 { (v + d).clamp(0, d) } else { v.min(d) };
    let (b, e) = (clamp(starts[j]) as usize, clamp(ends[j]) as usize);
    let nb = cx.kept(x, 0..b) as i64;
    let ne = nb + cx.kept(x, b..e.max(b)) as i64;
    let (new_start, new_end) = (
        if starts[j] == 0 { 0 } else { nb },
        if ends[j] >= d { ends[j] } else { ne },
    );
    match attr {
        Some(_) => {
            let mut st = starts.clone();
            let mut en = ends.clone();
            st[j] = new_start;
            en[j] = new_end;
            set_ints(&mut nodes[node], "starts", &st);
            set_ints(&mut nodes[node], "ends", &en);
        }
        None => {
            if new_start != starts[j] {
                cx.request(
                    edits,
                    node,
                    cx.input(node, 1).expect("starts"),
                    j,
                    new_start,
                );
            }
            if new_end != ends[j] {
                cx.request(edits, node, cx.input(node, 2).expect("ends"), j, new_end);
            }
        }
    }
    Ok(())
}

/// The original model with the removed units' consumer slices (Role::In) zeroed: it computes
/// exactly what the pruned model computes when removal is exact.
pub fn zero_consumers(model: &Model, a: &Analysis, edit: &Edit) -> Result<ModelProto> {
    let g = &model.graph;
    let mut m = model.source.proto.clone();
    let mut nodes: Vec<NodeProto> = g.nodes.iter().map(|n| n.proto.clone()).collect();
    let mut zeroed: BTreeMap<ValueId, Tensor<f32>> = BTreeMap::new();
    for (gi, grp) in a.groups.iter().enumerate() {
        for (ui, u) in grp.units.iter().enumerate() {
            if !edit.is_removed((gi, ui)) {
                continue;
            }
            for s in u.slices.iter().filter(|s| s.role == Role::In) {
                let t = zeroed
                    .entry(s.weight)
                    .or_insert_with(|| g.weights[&s.weight].tensor.clone());
                if let Data::Float(arr) = &mut t.data {
                    arr.index_axis_mut(ndarray::Axis(s.axis), s.index).fill(0.0);
                }
            }
        }
    }
    for (w, t) in &zeroed {
        tensors::set_weight(&mut m, g, &mut nodes, *w, t);
    }
    m.graph.as_mut().expect("graph").node = nodes;
    Ok(m)
}
