//! The differentiable interpreter: gradients (reverse mode), Jacobian-vector products (forward
//! mode on dual numbers), exact Hessian-vector products (forward-over-reverse: the backward
//! rules run on dual numbers), Gauss-Newton products, per-sample gradients, Hutchinson
//! estimators and layer input second moments, over any graph the interpreter runs.
//!
//! Everything takes calibration data as [`Batch`]es of feeds and processes it in micro-batches
//! of a chosen size, accumulating sample-weighted results, so memory is bounded by the
//! micro-batch; the peak tape size is reported.

pub mod backward;
pub mod curvature;
pub mod objective;
pub mod region;
pub mod rng;
pub mod vjp;

pub use backward::{Diff, Tape};
pub use curvature::{Curvature, Estimate, Hutchinson, HutchinsonOptions, Hvp, LayerHessian, Stats};
pub use objective::{Objective, OutputKind};
pub use region::{Region, capture};
