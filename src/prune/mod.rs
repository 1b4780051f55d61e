//! Pruning passes: criteria (scores per unit), allocation (what to remove for a target),
//! plans (what was removed, re-appliable), and the structured pass that ties them to the
//! analysis, the rewrite and the validation.

pub mod allocate;
pub mod compensate;
pub mod criteria;
pub mod implant;
pub mod implant_linear;
pub mod latency;
pub mod plan;
pub mod second_order;
pub mod structured;

pub use allocate::{RankCost, Target};
pub use criteria::Criterion;
pub use plan::Plan;
pub use structured::{Data, Outcome, Report, StructuredOptions};
