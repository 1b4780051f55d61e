//! The sub-graph runner: a region of the network between chosen intermediate values and chosen
//! targets, with those values captured once from a full forward pass. Layer-wise and
//! K-ops-ahead objectives (OBS, SNOWS) then differentiate the region alone, on the cached
//! activations, instead of rerunning the whole network for every product.

use super::curvature::{batch_size, slice_feeds};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, ValueId};
use crate::tensor::{Data, Real, Tensor};
use ndarray::Axis;

/// Runs the whole graph (node by node, `micro_batch` samples at a time) and returns the values
/// `ids` over all samples, keyed by name: ready to feed a sub-graph that starts at them.
pub fn capture<S: Real>(
    g: &Graph,
    feeds: &Feeds<S>,
    ids: &[ValueId],
    micro_batch: usize,
) -> Result<Feeds<S>> {
    let engine = Engine::<S>::exact(g)?;
    let n = batch_size(feeds)?;
    let mb = micro_batch.max(1);
    let mut parts: Vec<Vec<Tensor<S>>> = vec![Vec::new(); ids.len()];
    for start in (0..n).step_by(mb) {
        let f = if n <= mb {
            feeds.clone()
        } else {
            slice_feeds(feeds, start..(start + mb).min(n))
        };
        let mut values = engine.run_all(f)?;
        for (slot, &id) in parts.iter_mut().zip(ids) {
            let t = values[id].take().ok_or_else(|| {
                Error::graph(format!("value {:?}", g.name(id)), "was not computed")
            })?;
            slot.push(t);
        }
    }
    ids.iter()
        .zip(parts)
        .map(|(&id, ts)| Ok((g.name(id).to_string(), concat_batch(g, id, ts)?)))
        .collect()
}

fn concat_batch<S: Real>(g: &Graph, id: ValueId, mut ts: Vec<Tensor<S>>) -> Result<Tensor<S>> {
    if ts.len() == 1 {
        return Ok(ts.pop().expect("one"));
    }
    let dtype = ts[0].dtype;
    let err = |e: ndarray::ShapeError| {
        Error::graph(
            format!("value {:?}", g.name(id)),
            format!("cannot join micro-batches: {e}"),
        )
    };
    macro_rules! join {
        ($variant:ident) => {{
            let views: Vec<_> = ts
                .iter()
                .map(|t| match &t.data {
                    Data::$variant(a) => Ok(a.view()),
                    _ => Err(Error::graph(
                        format!("value {:?}", g.name(id)),
                        "changes type between micro-batches",
                    )),
                })
                .collect::<Result<_>>()?;
            Data::$variant(
                ndarray::concatenate(Axis(0), &views)
                    .map_err(err)?
                    .into_shared(),
            )
        }};
    }
    let data = match &ts[0].data {
        Data::Float(_) => join!(Float),
        Data::Int(_) => join!(Int),
        Data::Bool(_) => join!(Bool),
    };
    Ok(Tensor { dtype, data })
}

/// A region of a graph with its inputs captured: `graph` is the sub-graph from `sources` to
/// `targets` (value ids shared with the parent), `feeds` its inputs over the calibration set.
pub struct Region {
    pub graph: Graph,
    pub sources: Vec<ValueId>,
    pub targets: Vec<ValueId>,
}

impl Region {
    /// The sub-graph of `g` that computes `targets` from `sources`.
    pub fn new(g: &Graph, sources: &[ValueId], targets: &[ValueId]) -> Result<Region> {
        Ok(Region {
            graph: g.subgraph(sources, targets)?,
            sources: sources.to_vec(),
            targets: targets.to_vec(),
        })
    }

    /// The region's feeds from the full graph's feeds: its sources captured by one full
    /// forward, plus the graph inputs the region reads directly (e.g. an attention mask).
    pub fn feeds<S: Real>(
        &self,
        full: &Graph,
        feeds: &Feeds<S>,
        micro_batch: usize,
    ) -> Result<Feeds<S>> {
        let mut out = capture(full, feeds, &self.sources, micro_batch)?;
        for &i in &self.graph.inputs[self.sources.len()..] {
            let name = full.name(i);
            let t = feeds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::Data(format!("input {name:?} is missing")))?;
            out.push((name.to_string(), t));
        }
        Ok(out)
    }
}
