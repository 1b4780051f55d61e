//! Prunable groups: the result of the dependency analysis.
//!
//! Every producer of channels (Conv/ConvTranspose output channels, Gemm/MatMul output features)
//! allocates one element per channel. A pass in topological order follows each element through
//! the graph, position by position along the value's channel axis ([`Track`]), and couples
//! elements that must go together (residual adds, Mul of an SE gate, Concat along another axis,
//! depthwise and grouped convs, attention heads split by a Reshape, weights shared by two
//! nodes) in a union-find. Each class of coupled elements is one prunable [`Unit`] (a channel,
//! a head, an MLP unit) with every tensor slice that is removed with it; classes whose
//! producers share elements form one [`Group`] (e.g. a whole residual stream). Whatever the
//! pass cannot prove safe (a reduction over channels, an op it does not model, a graph output)
//! freezes the elements involved, with the reason.

use super::probe::Probe;
use super::rules::Builder;
use crate::ir::{Graph, ValueId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which side of a layer a slice belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Produces the unit: output rows of a conv/linear layer and its bias.
    Out,
    /// Consumes the unit: input columns of a conv/linear layer. Zeroing these slices has exactly
    /// the effect of removing the unit.
    In,
    /// A per-channel parameter on the way (BatchNorm, PRelu, a decomposed-BN constant).
    Param,
}

/// One slice of a weight tensor: `index` along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Slice {
    pub weight: ValueId,
    pub axis: usize,
    pub index: usize,
    pub role: Role,
}

/// A prunable structure: removed or kept as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub slices: Vec<Slice>,
    /// Why this unit cannot be removed, when it cannot.
    pub frozen: Option<String>,
    /// Parameters removed with it.
    pub params: usize,
    /// FLOPs per sample removed with it (multiply-adds × 2 of the layers it is sliced from).
    pub flops: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Convolution output channels.
    Channels,
    /// Output features of Gemm/MatMul layers (MLP hidden units).
    Features,
    /// Attention heads (features coupled in blocks by a Reshape to heads).
    Heads,
    /// Whole groups of a grouped convolution.
    ConvGroups,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: usize,
    pub kind: GroupKind,
    /// Producer nodes whose outputs make up the group, in graph order.
    pub producers: Vec<usize>,
    pub units: Vec<Unit>,
}

impl Group {
    pub fn prunable(&self) -> usize {
        self.units.iter().filter(|u| u.frozen.is_none()).count()
    }
}

/// (group, unit) of a position.
pub type UnitRef = (usize, usize);

/// Along which axis a value carries units, and which unit each position belongs to (`None`: a
/// position no producer owns, e.g. an input channel; it always stays).
#[derive(Debug, Clone, Serialize)]
pub struct Track {
    pub axis: usize,
    pub pos: Vec<Option<UnitRef>>,
}

/// A node whose attributes or shape inputs depend on the pruned sizes; the rewrite recomputes
/// them from the new shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    /// Conv `group` (depthwise or grouped) follows its input channels.
    ConvGroup { node: usize },
    /// The target shape of a Reshape.
    Reshape { node: usize },
    /// Split sizes along the pruned axis.
    Split { node: usize },
    /// Slice bounds along the pruned axis.
    Slice { node: usize, axis: usize },
    /// Resize `sizes` (channel entry).
    Resize { node: usize },
    /// Expand's target shape.
    Expand { node: usize },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also prune the width normalised over by LayerNormalization (the residual stream of a
    /// transformer); the removal is then not exact.
    pub prune_hidden: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub groups: Vec<Group>,
    /// Per value id: its channel axis and the unit of each position.
    pub tracks: Vec<Option<Track>>,
    pub fixes: Vec<Fix>,
    /// Units whose removal changes the function beyond zeroing their consumers (LayerNorm'd
    /// widths under `prune_hidden`).
    pub approximate: Vec<UnitRef>,
    /// FLOPs per sample that each element of a layer weight costs (2 × output positions).
    pub flops_per_weight: std::collections::HashMap<ValueId, f64>,
    /// Sliced values that are a weight reshaped (a bias as [1, C, 1, 1]): the weight, and the
    /// weight's axis for each of the value's axes. Their Reshape targets follow the weight.
    pub derived: BTreeMap<ValueId, (ValueId, Vec<Option<usize>>)>,
}

impl Analysis {
    pub fn prunable_units(&self) -> usize {
        self.groups.iter().map(|g| g.prunable()).sum()
    }

    /// Frozen units by reason, with their count: what the report lists as unprunable.
    pub fn frozen_reasons(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for g in &self.groups {
            for u in &g.units {
                if let Some(r) = &u.frozen {
                    *out.entry(r.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// A readable name of a group: its first producer, and how many more.
    pub fn group_name(&self, g: &Graph, id: usize) -> String {
        let grp = &self.groups[id];
        let first = grp
            .producers
            .first()
            .map(|&n| node_name(g, n))
            .unwrap_or_default();
        match grp.producers.len() {
            0 | 1 => first,
            k => format!("{first} (+{} coupled)", k - 1),
        }
    }
}

pub fn node_name(g: &Graph, n: usize) -> String {
    let node = &g.nodes[n];
    if node.name.is_empty() {
        node.outputs
            .first()
            .copied()
            .flatten()
            .map(|o| g.name(o).to_string())
            .unwrap_or_else(|| node.op_type.clone())
    } else {
        node.name.clone()
    }
}

/// Runs the dependency analysis on a graph whose shapes and integer values `probe` holds.
pub fn analyze(g: &Graph, probe: &Probe, opts: Options) -> Analysis {
    let mut b = Builder::new(g, probe, opts);
    for i in 0..g.nodes.len() {
        b.node(i);
    }
    b.finish()
}
