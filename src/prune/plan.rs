//! The exact plan of a structured run: per group, its members, every unit's score and the
//! removed units. `--plan-out` writes it; `--plan-in` re-applies it to the same model (or a
//! re-export with the same tensor names), checked against a fresh dependency analysis.

use crate::analysis::{Analysis, GroupKind};
use crate::error::{Error, Result};
use crate::ir::Graph;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanGroup {
    pub id: usize,
    pub name: String,
    pub kind: GroupKind,
    /// (weight name, axis) of every tensor the group's units are sliced from: the group's
    /// identity when the plan is re-applied.
    pub members: Vec<(String, usize)>,
    pub units: usize,
    pub scores: Vec<f64>,
    pub removed: Vec<usize>,
    /// Units kept as fitted implants (1×1 convs, or a rank-r factor for linear layers).
    #[serde(default)]
    pub implanted: Vec<usize>,
    /// The rank of a linear implant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implant_rank: Option<usize>,
    /// Tensor indices removed, per member, for auditing.
    pub removed_indices: Vec<(String, usize, Vec<usize>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub model: String,
    pub criterion: String,
    pub groups: Vec<PlanGroup>,
}

const FORMAT: &str = "onnx-prune structured plan v1";

fn members(g: &Graph, a: &Analysis, gi: usize) -> Vec<(String, usize)> {
    let set: BTreeSet<(String, usize)> = a.groups[gi]
        .units
        .iter()
        .flat_map(|u| {
            u.slices
                .iter()
                .map(|s| (g.name(s.weight).to_string(), s.axis))
        })
        .collect();
    set.into_iter().collect()
}

impl Plan {
    pub fn new(
        g: &Graph,
        a: &Analysis,
        model: &str,
        criterion: &str,
        scores: &[Vec<f64>],
        removed: &[Vec<bool>],
        implants: &[super::implant::Implant],
    ) -> Plan {
        let groups = a
            .groups
            .iter()
            .enumerate()
            .map(|(gi, grp)| {
                let mut per: std::collections::BTreeMap<(String, usize), Vec<usize>> =
                    Default::default();
                for (ui, u) in grp.units.iter().enumerate() {
                    if removed[gi][ui] {
                        for s in &u.slices {
                            per.entry((g.name(s.weight).to_string(), s.axis))
                                .or_default()
                                .push(s.index);
                        }
                    }
                }
                PlanGroup {
                    id: gi,
                    name: a.group_name(g, gi),
                    kind: grp.kind,
                    members: members(g, a, gi),
                    units: grp.units.len(),
                    scores: scores[gi].clone(),
                    removed: (0..grp.units.len()).filter(|&u| removed[gi][u]).collect(),
                    implanted: implants
                        .iter()
                        .filter(|i| i.group == gi)
                        .flat_map(|i| i.units.clone())
                        .collect(),
                    implant_rank: implants.iter().find(|i| i.group == gi).and_then(|i| i.rank),
                    removed_indices: per
                        .into_iter()
                        .map(|((w, ax), mut idx)| {
                            idx.sort_unstable();
                            idx.dedup();
                            (w, ax, idx)
                        })
                        .collect(),
                }
            })
            .collect();
        Plan {
            format: FORMAT.into(),
            model: model.into(),
            criterion: criterion.into(),
            groups,
        }
    }

    pub fn read(path: &std::path::Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let p: Plan = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: not a plan: {e}", path.display())))?;
        if p.format != FORMAT {
            return Err(Error::Data(format!(
                "{}: plan format {:?}, expected {FORMAT:?}",
                path.display(),
                p.format
            )));
        }
        Ok(p)
    }

    /// The removal this plan describes, for a fresh analysis of the model: every planned group
    /// must match a group with the same members and unit count, and no removed unit may be
    /// frozen now.
    pub fn removal(
        &self,
        g: &Graph,
        a: &Analysis,
    ) -> Result<(Vec<Vec<bool>>, Vec<super::implant::Implant>)> {
        let mut removed: Vec<Vec<bool>> = a
            .groups
            .iter()
            .map(|g| vec![false; g.units.len()])
            .collect();
        let mut implants = Vec::new();
        for pg in &self.groups {
            if pg.removed.is_empty() && pg.implanted.is_empty() {
                continue;
            }
            let gi = (0..a.groups.len())
                .find(|&gi| a.groups[gi].units.len() == pg.units && members(g, a, gi) == pg.members)
                .ok_or_else(|| {
                    Error::Data(format!(
                        "plan group {} ({:?}) matches no group of this model (its members or size differ)",
                        pg.id, pg.name
                    ))
                })?;
            for &u in &pg.removed {
                let unit = a.groups[gi].units.get(u).ok_or_else(|| {
                    Error::Data(format!("plan group {}: unit {u} out of range", pg.id))
                })?;
                if let Some(r) = &unit.frozen {
                    return Err(Error::Data(format!(
                        "plan group {} removes unit {u}, which cannot be pruned: {r}",
                        pg.id
                    )));
                }
                removed[gi][u] = true;
            }
            if removed[gi].iter().all(|&r| r) {
                return Err(Error::Data(format!(
                    "plan group {} removes every unit",
                    pg.id
                )));
            }
            if !pg.implanted.is_empty() {
                if let Some(why) = super::implant::ineligible(g, a, gi) {
                    return Err(Error::Data(format!(
                        "plan group {} has implants, but here it cannot take them: {why}",
                        pg.id
                    )));
                }
                let mut imp = super::implant::implant_for(g, a, gi, pg.implanted.clone(), None);
                if let (Some(r), Some(_)) = (pg.implant_rank, imp.rank) {
                    imp.rank = Some(r.max(1));
                }
                implants.push(imp);
            }
        }
        Ok((removed, implants))
    }
}
