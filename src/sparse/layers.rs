//! Which weights the unstructured pass prunes: Conv, Gemm and MatMul weights held by the model
//! (initializers or Constant nodes), read by that one node, filtered by `--skip-first-last` and
//! `--include/--exclude` name patterns.

use crate::analysis::groups::node_name;
use crate::ir::{Graph, Op, ValueId};
use serde::Serialize;

/// A prunable layer: its weight seen as rows × cols (outputs × inputs·taps).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub node: usize,
    #[serde(skip)]
    pub weight: ValueId,
    pub name: String,
    pub weight_name: String,
    pub op_type: String,
    pub rows: usize,
    pub cols: usize,
    /// Kernel taps per input channel (1 for Gemm/MatMul).
    pub taps: usize,
    /// Grouped/depthwise convs: statistics and solves per group.
    pub grouped: bool,
    /// Stored as [outputs, inputs…] (Conv, Gemm with transB) rather than [inputs, outputs].
    pub out_major: bool,
}

/// `*` matches any run of characters; a pattern without `*` matches as a substring.
pub fn matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut at = 0;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            continue;
        }
        if i == 0 {
            if !name.starts_with(p) {
                return false;
            }
            at = p.len();
        } else if i == parts.len() - 1 {
            return name.len() >= at + p.len() && name[at..].ends_with(p);
        } else {
            match name[at..].find(p) {
                Some(k) => at += k + p.len(),
                None => return false,
            }
        }
    }
    true
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub skip_first_last: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// The prunable layers in graph order, and the weight-bearing layers left out with the reason.
pub fn select(g: &Graph, s: &Selection) -> (Vec<Target>, Vec<(String, String)>) {
    let mut uses = vec![0usize; g.values.len()];
    for n in &g.nodes {
        for v in n.inputs.iter().flatten() {
            uses[*v] += 1;
        }
    }
    let mut all = Vec::new();
    let mut skipped = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Ok(op) = &n.op else { continue };
        if !matches!(op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul) {
            continue;
        }
        let Some(w) = n.inputs.get(1).copied().flatten() else {
            continue;
        };
        let Some(wt) = g.weights.get(&w) else {
            continue;
        };
        let name = node_name(g, i);
        let shape = wt.tensor.shape().to_vec();
        if wt.tensor.as_float().is_none() {
            skipped.push((name, "weight is not floating point".into()));
            continue;
        }
        if uses[w] != 1 || g.outputs.contains(&w) {
            skipped.push((name, "weight shared with other nodes".into()));
            continue;
        }
        let (rows, cols, taps, grouped, out_major) = match op {
            Op::Conv { group, .. } if shape.len() >= 3 => (
                shape[0],
                shape[1..].iter().product::<usize>(),
                shape[2..].iter().product::<usize>(),
                *group != 1,
                true,
            ),
            Op::Gemm {
                trans_a: false,
                trans_b,
                ..
            } if shape.len() == 2 => {
                if *trans_b {
                    (shape[0], shape[1], 1, false, true)
                } else {
                    (shape[1], shape[0], 1, false, false)
                }
            }
            Op::MatMul if shape.len() == 2 => (shape[1], shape[0], 1, false, false),
            _ => {
                skipped.push((
                    name,
                    format!("weight of shape {shape:?} is not a 2-D matrix or conv kernel"),
                ));
                continue;
            }
        };
        all.push(Target {
            node: i,
            weight: w,
            name,
            weight_name: g.name(w).to_string(),
            op_type: n.op_type.clone(),
            rows,
            cols,
            taps,
            grouped,
            out_major,
        });
    }
    let last = all.len().saturating_sub(1);
    let mut out = Vec::new();
    for (k, t) in all.into_iter().enumerate() {
        let hit = |p: &String| matches(p, &t.name) || matches(p, &t.weight_name);
        if s.skip_first_last && (k == 0 || k == last) {
            skipped.push((t.name, "first or last layer (--skip-first-last)".into()));
        } else if !s.include.is_empty() && !s.include.iter().any(hit) {
            skipped.push((t.name, "not matched by --include".into()));
        } else if s.exclude.iter().any(hit) {
            skipped.push((t.name, "matched by --exclude".into()));
        } else {
            out.push(t);
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches("fc", "/blocks.0/fc1/MatMul"));
        assert!(matches("*/fc1/*", "/blocks.0/fc1/MatMul"));
        assert!(matches("/blocks.0/*", "/blocks.0/fc1/MatMul"));
        assert!(!matches("/blocks.1/*", "/blocks.0/fc1/MatMul"));
        assert!(matches("*MatMul", "/blocks.0/fc1/MatMul"));
        assert!(!matches("*Conv", "/blocks.0/fc1/MatMul"));
        assert!(matches("*", "anything"));
    }
}
