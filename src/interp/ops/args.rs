//! Op arguments that come from attributes before some opset and from inputs after it, resolved
//! once here for both the forward kernels and their gradients.

use super::util::{ints, opt, req, scalar_f64};
use crate::ir::op::SliceAttrs;
use crate::tensor::{Real, Tensor};

type Inputs<'a, S> = [Option<&'a Tensor<S>>];

/// starts, ends, axes, steps.
pub type SliceArgs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

pub fn slice<S: Real>(attr: &Option<SliceAttrs>, inputs: &Inputs<S>) -> Result<SliceArgs, String> {
    Ok(match attr {
        Some((s, e, a)) => (s.clone(), e.clone(), a.clone(), None),
        None => (
            ints(req(inputs, 1)?, "starts")?,
            ints(req(inputs, 2)?, "ends")?,
            opt(inputs, 3).map(|t| ints(t, "axes")).transpose()?,
            opt(inputs, 4).map(|t| ints(t, "steps")).transpose()?,
        ),
    })
}

/// pads, constant value, axes.
pub type PadArgs = (Vec<i64>, f64, Option<Vec<i64>>);

pub fn pad<S: Real>(attr: &Option<(Vec<i64>, f32)>, inputs: &Inputs<S>) -> Result<PadArgs, String> {
    Ok(match attr {
        Some((p, v)) => (p.clone(), *v as f64, None),
        None => {
            let pads = ints(req(inputs, 1)?, "pads")?;
            let value = match opt(inputs, 2).filter(|t| !t.is_empty()) {
                Some(t) => scalar_f64(t, "constant_value")?,
                None => 0.0,
            };
            (
                pads,
                value,
                opt(inputs, 3).map(|t| ints(t, "axes")).transpose()?,
            )
        }
    })
}

/// Axes from the attribute (old opsets) or the optional second input.
pub fn axes_opt<S: Real>(
    attr: &Option<Vec<i64>>,
    inputs: &Inputs<S>,
) -> Result<Option<Vec<i64>>, String> {
    match attr {
        Some(a) => Ok(Some(a.clone())),
        None => opt(inputs, 1).map(|t| ints(t, "axes")).transpose(),
    }
}

pub fn unsqueeze_axes<S: Real>(
    attr: &Option<Vec<i64>>,
    inputs: &Inputs<S>,
) -> Result<Vec<i64>, String> {
    match attr {
        Some(a) => Ok(a.clone()),
        None => ints(req(inputs, 1)?, "axes"),
    }
}

pub fn split_sizes<S: Real>(
    attr: &Option<Vec<i64>>,
    inputs: &Inputs<S>,
) -> Result<Option<Vec<i64>>, String> {
    match attr {
        Some(s) => Ok(Some(s.clone())),
        None => opt(inputs, 1)
            .filter(|t| !t.is_empty())
            .map(|t| ints(t, "split"))
            .transpose(),
    }
}

pub fn top_k<S: Real>(attr: Option<i64>, inputs: &Inputs<S>) -> Result<i64, String> {
    match attr {
        Some(k) => Ok(k),
        None => ints(req(inputs, 1)?, "K")?
            .first()
            .copied()
            .ok_or_else(|| "K is empty".to_string()),
    }
}

/// Clip's bounds: the opset < 11 attributes, or the optional inputs after X.
pub fn clip_bounds<S: Real>(
    min: Option<f32>,
    max: Option<f32>,
    attr_form: bool,
    inputs: &Inputs<S>,
) -> Result<(Option<f64>, Option<f64>), String> {
    if attr_form {
        return Ok((min.map(f64::from), max.map(f64::from)));
    }
    let bound = |i: usize| -> Result<Option<f64>, String> {
        opt(inputs, i)
            .filter(|t| !t.is_empty())
            .map(|t| scalar_f64(t, "Clip bound"))
            .transpose()
    };
    Ok((bound(1)?, bound(2)?))
}
