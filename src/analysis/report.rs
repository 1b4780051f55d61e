//! `inspect --groups`: the dependency groups of a model, as text or JSON.

use super::groups::{Analysis, Role};
use crate::ir::Graph;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct MemberSummary {
    pub weight: String,
    pub axis: usize,
    pub role: Role,
    /// Slices of this weight per unit (more than 1 for heads and flattened channels).
    pub per_unit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub id: usize,
    pub name: String,
    pub kind: super::GroupKind,
    pub units: usize,
    pub prunable: usize,
    pub params: usize,
    pub flops: u64,
    pub producers: Vec<String>,
    pub members: Vec<MemberSummary>,
    /// Why units are frozen, with counts.
    pub frozen: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupsReport {
    pub groups: Vec<GroupSummary>,
    pub prunable_units: usize,
    pub frozen_units: usize,
    pub prunable_params: usize,
    pub model_params: usize,
    pub rewrites: usize,
}

pub fn summarize(g: &Graph, a: &Analysis) -> GroupsReport {
    let mut groups = Vec::new();
    for grp in &a.groups {
        let mut members: BTreeMap<(String, usize), (Role, usize)> = BTreeMap::new();
        if let Some(u) = grp.units.first() {
            for s in &u.slices {
                let e = members
                    .entry((g.name(s.weight).to_string(), s.axis))
                    .or_insert((s.role, 0));
                e.1 += 1;
            }
        }
        let mut frozen = BTreeMap::new();
        for u in &grp.units {
            if let Some(r) = &u.frozen {
                *frozen.entry(r.clone()).or_insert(0) += 1;
            }
        }
        groups.push(GroupSummary {
            id: grp.id,
            name: a.group_name(g, grp.id),
            kind: grp.kind,
            units: grp.units.len(),
            prunable: grp.prunable(),
            params: grp.units.iter().map(|u| u.params).sum(),
            flops: grp.units.iter().map(|u| u.flops).sum(),
            producers: grp
                .producers
                .iter()
                .map(|&n| super::groups::node_name(g, n))
                .collect(),
            members: members
                .into_iter()
                .map(|((weight, axis), (role, per_unit))| MemberSummary {
                    weight,
                    axis,
                    role,
                    per_unit,
                })
                .collect(),
            frozen,
        });
    }
    let model_params = g
        .weights
        .values()
        .filter(|w| w.tensor.dtype.is_float())
        .map(|w| w.tensor.len())
        .sum();
    GroupsReport {
        prunable_units: groups.iter().map(|g| g.prunable).sum(),
        frozen_units: groups.iter().map(|g| g.units - g.prunable).sum(),
        prunable_params: a
            .groups
            .iter()
            .flat_map(|g| &g.units)
            .filter(|u| u.frozen.is_none())
            .map(|u| u.params)
            .sum(),
        model_params,
        rewrites: a.fixes.len(),
        groups,
    }
}

impl GroupsReport {
    pub fn render(&self, members: bool) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} groups: {} prunable units ({} params of {}), {} frozen units; {} dependent attributes/shape constants",
            self.groups.len(),
            self.prunable_units,
            self.prunable_params,
            self.model_params,
            self.frozen_units,
            self.rewrites
        );
        let _ = writeln!(
            o,
            "{:>4}  {:<11} {:>6} {:>8} {:>10}  group",
            "id", "kind", "units", "prunable", "params"
        );
        for grp in &self.groups {
            let kind = serde_json::to_value(grp.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "{:>4}  {:<11} {:>6} {:>8} {:>10}  {}",
                grp.id, kind, grp.units, grp.prunable, grp.params, grp.name
            );
            if members {
                for m in &grp.members {
                    let role = match m.role {
                        Role::Out => "out",
                        Role::In => "in",
                        Role::Param => "param",
                    };
                    let per = if m.per_unit > 1 {
                        format!(" ×{} per unit", m.per_unit)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        o,
                        "{:>26} {:<5} {} axis {}{}",
                        "", role, m.weight, m.axis, per
                    );
                }
            }
            for (r, k) in &grp.frozen {
                let _ = writeln!(o, "{:>26} frozen {k}: {r}", "");
            }
        }
        o
    }
}
