//! Operators with their attributes parsed and defaulted per the node's opset.
//!
//! Parsing is strict: an attribute value the interpreter does not implement makes the node
//! unsupported (with the reason), rather than running with a silently different meaning.

use super::attr::Attrs;
use crate::onnx::{NodeProto, TensorProto};
use crate::tensor::DType;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Erf,
    Floor,
    Ceil,
    Round,
    Sign,
    Sin,
    Cos,
    Softplus,
    Softsign,
    HardSwish,
    LeakyRelu { alpha: f32 },
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    Celu { alpha: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    ThresholdedRelu { alpha: f32 },
    Gelu { tanh: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compare {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logic {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variadic {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSumExp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Spatial attributes shared by Conv, ConvTranspose and the pools; empty vectors mean
/// "default for the input's rank" (resolved at run time once the rank is known).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// begin pads for every spatial axis, then end pads (ONNX order).
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvTransposeAttrs {
    pub window: Window,
    pub group: usize,
    pub output_padding: Vec<usize>,
    pub output_shape: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average {
        count_include_pad: bool,
    },
    /// LpPool with p.
    Lp {
        p: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub cubic_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub axes: Option<Vec<i64>>,
    pub policy: AspectPolicy,
    /// Opset 10 Resize takes (X, scales) only.
    pub v10: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Slice-1's attributes: starts, ends, axes.
pub type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Unary(Unary),
    Binary(Binary),
    Compare(Compare),
    Logic(Logic),
    Not,
    Variadic(Variadic),
    Where,
    PRelu,
    /// Clip; `Some` bounds are the opset < 11 attributes, else the bounds are inputs.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
        attr_form: bool,
    },
    Conv {
        window: Window,
        group: usize,
    },
    ConvTranspose(ConvTransposeAttrs),
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    BatchNorm {
        epsilon: f32,
    },
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    InstanceNorm {
        epsilon: f32,
    },
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// `legacy`: opset < 13 semantics (coerce to 2-D at `axis`, normalise over the tail).
    Softmax {
        axis: i64,
        legacy: bool,
        log: bool,
    },
    Pool {
        kind: PoolKind,
        window: Window,
        ceil_mode: bool,
    },
    GlobalPool(PoolKind),
    Resize(ResizeAttrs),
    Pad {
        mode: PadMode,
        /// Opset < 11: pads and value are attributes.
        attr: Option<(Vec<i64>, f32)>,
    },
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
    },
    /// Opset < 10 passes starts/ends/axes as attributes.
    Slice {
        attr: Option<SliceAttrs>,
    },
    Concat {
        axis: i64,
    },
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    Expand,
    Tile,
    Cast {
        to: DType,
    },
    CastLike,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    Range,
    ConstantOfShape {
        value: Option<TensorProto>,
    },
    Constant {
        value: TensorProto,
    },
    Identity,
    Dropout,
    Reduce {
        kind: ReduceKind,
        /// Attribute axes (before the opset that moved them to an input).
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    ArgExtreme {
        max: bool,
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    TopK {
        axis: i64,
        largest: bool,
        sorted: bool,
        k: Option<i64>,
    },
}

/// Why a node cannot be interpreted.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The op type (or domain) is not implemented at all.
    UnknownOp,
    /// The op is known but this use of it is not implemented.
    Unsupported(String),
}

impl From<&str> for ParseError {
    fn from(s: &str) -> Self {
        ParseError::Unsupported(s.to_string())
    }
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError::Unsupported(s)
    }
}

fn usizes(v: Vec<i64>, what: &str) -> Result<Vec<usize>, String> {
    v.into_iter()
        .map(|x| usize::try_from(x).map_err(|_| format!("{what} has a negative value {x}")))
        .collect()
}

fn window(a: &Attrs, with_dilation: bool) -> Result<Window, String> {
    let auto_pad = match a.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(format!("auto_pad {other:?} is not defined")),
    };
    let strides = usizes(a.ints("strides")?, "strides")?;
    if strides.contains(&0) {
        return Err("strides must be positive".into());
    }
    let dilations = if with_dilation {
        usizes(a.ints("dilations")?, "dilations")?
    } else {
        Vec::new()
    };
    if dilations.contains(&0) {
        return Err("dilations must be positive".into());
    }
    Ok(Window {
        kernel: usizes(a.ints("kernel_shape")?, "kernel_shape")?,
        strides,
        dilations,
        pads: usizes(a.ints("pads")?, "pads")?,
        auto_pad,
    })
}

fn reduce_kind(op: &str) -> Option<ReduceKind> {
    Some(match op {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        _ => return None,
    })
}

impl Op {
    /// Parses a node of the default ONNX domain at the given opset version.
    pub fn parse(node: &NodeProto, opset: i64) -> Result<Op, ParseError> {
        let domain = node.domain();
        if !(domain.is_empty() || domain == "ai.onnx") {
            return Err(ParseError::UnknownOp);
        }
        let a = Attrs::new(&node.attribute);
        if node.op_type() == "MaxPool" && node.output.get(1).is_some_and(|o| !o.is_empty()) {
            return Err("the Indices output of MaxPool is not supported".into());
        }
        let op = Self::parse_attrs(node.op_type(), &a, opset)?;
        a.finish()?;
        Ok(op)
    }

    fn parse_attrs(op_type: &str, a: &Attrs, opset: i64) -> Result<Op, ParseError> {
        use Unary as U;
        let un = |u| Ok(Op::Unary(u));
        match op_type {
            "Relu" => un(U::Relu),
            "Sigmoid" => un(U::Sigmoid),
            "Tanh" => un(U::Tanh),
            "Exp" => un(U::Exp),
            "Log" => un(U::Log),
            "Sqrt" => un(U::Sqrt),
            "Reciprocal" => un(U::Reciprocal),
            "Neg" => un(U::Neg),
            "Abs" => un(U::Abs),
            "Erf" => un(U::Erf),
            "Floor" => un(U::Floor),
            "Ceil" => un(U::Ceil),
            "Round" => un(U::Round),
            "Sign" => un(U::Sign),
            "Sin" => un(U::Sin),
            "Cos" => un(U::Cos),
            "Softplus" => un(U::Softplus),
            "Softsign" => un(U::Softsign),
            "HardSwish" => un(U::HardSwish),
            "LeakyRelu" => un(U::LeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            }),
            "Elu" => un(U::Elu {
                alpha: a.float("alpha", 1.0)?,
            }),
            "Selu" => un(U::Selu {
                alpha: a.float("alpha", 1.673_263_2)?,
                gamma: a.float("gamma", 1.050_701)?,
            }),
            "Celu" => un(U::Celu {
                alpha: a.float("alpha", 1.0)?,
            }),
            "HardSigmoid" => un(U::HardSigmoid {
                alpha: a.float("alpha", 0.2)?,
                beta: a.float("beta", 0.5)?,
            }),
            "ThresholdedRelu" => un(U::ThresholdedRelu {
                alpha: a.float("alpha", 1.0)?,
            }),
            "Gelu" => {
                let tanh = match a.string("approximate", "none")?.as_str() {
                    "none" => false,
                    "tanh" => true,
                    o => return Err(format!("approximate={o:?} is not defined").into()),
                };
                un(U::Gelu { tanh })
            }
            "Add" => Ok(Op::Binary(Binary::Add)),
            "Sub" => Ok(Op::Binary(Binary::Sub)),
            "Mul" => Ok(Op::Binary(Binary::Mul)),
            "Div" => Ok(Op::Binary(Binary::Div)),
            "Pow" => Ok(Op::Binary(Binary::Pow)),
            "Equal" => Ok(Op::Compare(Compare::Equal)),
            "Less" => Ok(Op::Compare(Compare::Less)),
            "Greater" => Ok(Op::Compare(Compare::Greater)),
            "LessOrEqual" => Ok(Op::Compare(Compare::LessOrEqual)),
            "GreaterOrEqual" => Ok(Op::Compare(Compare::GreaterOrEqual)),
            "And" => Ok(Op::Logic(Logic::And)),
            "Or" => Ok(Op::Logic(Logic::Or)),
            "Xor" => Ok(Op::Logic(Logic::Xor)),
            "Not" => Ok(Op::Not),
            "Sum" => Ok(Op::Variadic(Variadic::Sum)),
            "Mean" => Ok(Op::Variadic(Variadic::Mean)),
            "Max" => Ok(Op::Variadic(Variadic::Max)),
            "Min" => Ok(Op::Variadic(Variadic::Min)),
            "Where" => Ok(Op::Where),
            "PRelu" => Ok(Op::PRelu),
            "Clip" => {
                if opset < 11 {
                    Ok(Op::Clip {
                        min: Some(a.float("min", f32::MIN)?),
                        max: Some(a.float("max", f32::MAX)?),
                        attr_form: true,
                    })
                } else {
                    Ok(Op::Clip {
                        min: None,
                        max: None,
                        attr_form: false,
                    })
                }
            }
            "Conv" => {
                let group = a.int("group", 1)?;
                if group < 1 {
                    return Err(format!("group={group}").into());
                }
                Ok(Op::Conv {
                    window: window(a, true)?,
                    group: group as usize,
                })
            }
            "ConvTranspose" => {
                let group = a.int("group", 1)?;
                if group < 1 {
                    return Err(format!("group={group}").into());
                }
                Ok(Op::ConvTranspose(ConvTransposeAttrs {
                    window: window(a, true)?,
                    group: group as usize,
                    output_padding: usizes(a.ints("output_padding")?, "output_padding")?,
                    output_shape: usizes(a.ints("output_shape")?, "output_shape")?,
                }))
            }
            "Gemm" => {
                if opset < 7 {
                    a.ignore(&["broadcast"]);
                }
                Ok(Op::Gemm {
                    alpha: a.float("alpha", 1.0)?,
                    beta: a.float("beta", 1.0)?,
                    trans_a: a.int("transA", 0)? != 0,
                    trans_b: a.int("transB", 0)? != 0,
                })
            }
            "MatMul" => Ok(Op::MatMul),
            "BatchNormalization" => {
                if a.int("training_mode", 0)? != 0 {
                    return Err("training_mode=1 is not supported (inference only)"
                        .to_string()
                        .into());
                }
                if opset < 9 && a.int("spatial", 1)? != 1 {
                    return Err("spatial=0 is not supported".to_string().into());
                }
                a.ignore(&["momentum", "is_test", "consumed_inputs"]);
                Ok(Op::BatchNorm {
                    epsilon: a.float("epsilon", 1e-5)?,
                })
            }
            "LayerNormalization" => {
                a.ignore(&["stash_type"]);
                Ok(Op::LayerNorm {
                    axis: a.int("axis", -1)?,
                    epsilon: a.float("epsilon", 1e-5)?,
                })
            }
            "InstanceNormalization" => Ok(Op::InstanceNorm {
                epsilon: a.float("epsilon", 1e-5)?,
            }),
            "LRN" => {
                let size = a
                    .int_opt("size")?
                    .ok_or_else(|| "LRN needs a size".to_string())?;
                if size < 1 {
                    return Err(format!("size={size}").into());
                }
                Ok(Op::Lrn {
                    size: size as usize,
                    alpha: a.float("alpha", 1e-4)?,
                    beta: a.float("beta", 0.75)?,
                    bias: a.float("bias", 1.0)?,
                })
            }
            "Softmax" | "LogSoftmax" => {
                let legacy = opset < 13;
                Ok(Op::Softmax {
                    axis: a.int("axis", if legacy { 1 } else { -1 })?,
                    legacy,
                    log: op_type == "LogSoftmax",
                })
            }
            "MaxPool" | "AveragePool" | "LpPool" => {
                let kind = match op_type {
                    "MaxPool" => {
                        if a.int("storage_order", 0)? != 0 {
                            return Err("storage_order=1 is not supported".to_string().into());
                        }
                        PoolKind::Max
                    }
                    "AveragePool" => PoolKind::Average {
                        count_include_pad: a.int("count_include_pad", 0)? != 0,
                    },
                    _ => PoolKind::Lp { p: a.int("p", 2)? },
                };
                let w = window(a, true)?;
                if w.kernel.is_empty() {
                    return Err("kernel_shape is required".to_string().into());
                }
                Ok(Op::Pool {
                    kind,
                    window: w,
                    ceil_mode: a.int("ceil_mode", 0)? != 0,
                })
            }
            "GlobalAveragePool" => Ok(Op::GlobalPool(PoolKind::Average {
                count_include_pad: false,
            })),
            "GlobalMaxPool" => Ok(Op::GlobalPool(PoolKind::Max)),
            "Resize" => parse_resize(a, opset),
            "Pad" => {
                let mode = match a.string("mode", "constant")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    "wrap" => PadMode::Wrap,
                    o => return Err(format!("mode {o:?} is not defined").into()),
                };
                let attr = if opset < 11 {
                    let pads = a
                        .ints_opt("pads")?
                        .or(a.ints_opt("paddings")?)
                        .ok_or_else(|| "Pad needs pads".to_string())?;
                    Some((pads, a.float("value", 0.0)?))
                } else {
                    None
                };
                Ok(Op::Pad { mode, attr })
            }
            "Flatten" => Ok(Op::Flatten {
                axis: a.int("axis", 1)?,
            }),
            "Reshape" => {
                if opset < 5 {
                    return Err("Reshape-1 (shape attribute) is not supported"
                        .to_string()
                        .into());
                }
                Ok(Op::Reshape {
                    allowzero: a.int("allowzero", 0)? != 0,
                })
            }
            "Transpose" => Ok(Op::Transpose {
                perm: a.ints_opt("perm")?,
            }),
            "Squeeze" => Ok(Op::Squeeze {
                axes: if opset < 13 {
                    a.ints_opt("axes")?
                } else {
                    None
                },
            }),
            "Unsqueeze" => {
                let axes = if opset < 13 {
                    Some(a.ints_opt("axes")?.ok_or("Unsqueeze needs axes")?)
                } else {
                    None
                };
                Ok(Op::Unsqueeze { axes })
            }
            "Split" => {
                let split = if opset < 13 {
                    a.ints_opt("split")?
                } else {
                    None
                };
                // num_outputs (18) only restates the output count, which the node already has.
                a.ignore(&["num_outputs"]);
                Ok(Op::Split {
                    axis: a.int("axis", 0)?,
                    split,
                })
            }
            "Slice" => {
                let attr = if opset < 10 {
                    Some((a.ints("starts")?, a.ints("ends")?, a.ints_opt("axes")?))
                } else {
                    None
                };
                Ok(Op::Slice { attr })
            }
            "Concat" => Ok(Op::Concat {
                axis: a.int_opt("axis")?.ok_or("Concat needs an axis")?,
            }),
            "Gather" => Ok(Op::Gather {
                axis: a.int("axis", 0)?,
            }),
            "GatherElements" => Ok(Op::GatherElements {
                axis: a.int("axis", 0)?,
            }),
            "Expand" => Ok(Op::Expand),
            "Tile" => {
                if opset < 6 {
                    return Err("Tile-1 is not supported".to_string().into());
                }
                Ok(Op::Tile)
            }
            "Cast" => {
                let to = DType::from_onnx(a.int_opt("to")?.ok_or("Cast needs `to`")? as i32);
                if to.storage() == crate::tensor::Storage::None {
                    return Err(format!("cast to {to} is not supported").into());
                }
                a.ignore(&["saturate"]);
                Ok(Op::Cast { to })
            }
            "CastLike" => {
                a.ignore(&["saturate"]);
                Ok(Op::CastLike)
            }
            "Shape" => Ok(Op::Shape {
                start: a.int("start", 0)?,
                end: a.int_opt("end")?,
            }),
            "Size" => Ok(Op::Size),
            "Range" => Ok(Op::Range),
            "ConstantOfShape" => Ok(Op::ConstantOfShape {
                value: a.tensor_opt("value")?.cloned(),
            }),
            "Constant" => {
                let value = constant_value(a)?;
                Ok(Op::Constant { value })
            }
            "Identity" => Ok(Op::Identity),
            "Dropout" => {
                a.ignore(&["ratio", "seed", "is_test"]);
                Ok(Op::Dropout)
            }
            "ArgMax" | "ArgMin" => Ok(Op::ArgExtreme {
                max: op_type == "ArgMax",
                axis: a.int("axis", 0)?,
                keepdims: a.int("keepdims", 1)? != 0,
                select_last_index: a.int("select_last_index", 0)? != 0,
            }),
            "TopK" => Ok(Op::TopK {
                axis: a.int("axis", -1)?,
                largest: a.int("largest", 1)? != 0,
                sorted: a.int("sorted", 1)? != 0,
                k: if opset < 10 { a.int_opt("k")? } else { None },
            }),
            _ => {
                if let Some(kind) = reduce_kind(op_type) {
                    // ReduceSum moved axes to an input at 13, the others at 18.
                    let input_axes = if kind == ReduceKind::Sum {
                        opset >= 13
                    } else {
                        opset >= 18
                    };
                    let axes = if input_axes {
                        None
                    } else {
                        a.ints_opt("axes")?
                    };
                    return Ok(Op::Reduce {
                        kind,
                        axes,
                        keepdims: a.int("keepdims", 1)? != 0,
                        noop_with_empty_axes: a.int("noop_with_empty_axes", 0)? != 0,
                    });
                }
                Err(ParseError::UnknownOp)
            }
        }
    }

    /// Operators whose outputs are pure functions of constant inputs and never of the batch.
    pub fn is_constant_source(&self) -> bool {
        matches!(self, Op::Constant { .. })
    }
}

fn constant_value(a: &Attrs) -> Result<TensorProto, String> {
    if let Some(t) = a.tensor_opt("value")? {
        return Ok(t.clone());
    }
    let mk = |dims: Vec<i64>, data_type: i32| TensorProto {
        dims,
        data_type: Some(data_type),
        ..Default::default()
    };
    if let Some(f) = a.float_opt("value_float")? {
        let mut t = mk(vec![], 1);
        t.float_data = vec![f];
        return Ok(t);
    }
    if let Some(v) = a.floats_opt("value_floats")? {
        let mut t = mk(vec![v.len() as i64], 1);
        t.float_data = v;
        return Ok(t);
    }
    if let Some(i) = a.int_opt("value_int")? {
        let mut t = mk(vec![], 7);
        t.int64_data = vec![i];
        return Ok(t);
    }
    if let Some(v) = a.ints_opt("value_ints")? {
        let mut t = mk(vec![v.len() as i64], 7);
        t.int64_data = v;
        return Ok(t);
    }
    if a.has("sparse_value") || a.has("value_string") || a.has("value_strings") {
        return Err("sparse and string constants are not supported".into());
    }
    Err("Constant has no value".into())
}

fn parse_resize(a: &Attrs, opset: i64) -> Result<Op, ParseError> {
    let mode = match a.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        o => return Err(format!("mode {o:?} is not defined").into()),
    };
    let v10 = opset < 11;
    let coord = if v10 {
        CoordMode::Asymmetric
    } else {
        match a
            .string("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => CoordMode::HalfPixel,
            "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            "tf_crop_and_resize" => CoordMode::TfCropAndResize,
            o => {
                return Err(
                    format!("coordinate_transformation_mode {o:?} is not supported").into(),
                );
            }
        }
    };
    let nearest = if v10 {
        NearestMode::Floor
    } else {
        match a.string("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            o => return Err(format!("nearest_mode {o:?} is not defined").into()),
        }
    };
    if a.int("antialias", 0)? != 0 {
        return Err("antialias=1 is not supported".to_string().into());
    }
    let policy = match a.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        o => return Err(format!("keep_aspect_ratio_policy {o:?} is not defined").into()),
    };
    Ok(Op::Resize(ResizeAttrs {
        mode,
        coord,
        nearest,
        cubic_a: a.float("cubic_coeff_a", -0.75)?,
        exclude_outside: a.int("exclude_outside", 0)? != 0,
        extrapolation_value: a.float("extrapolation_value", 0.0)?,
        axes: a.ints_opt("axes")?,
        policy,
        v10,
    }))
}
