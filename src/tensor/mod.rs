//! Tensors as the interpreter holds them: a dtype tag over one of three storages (the float
//! compute type, i64 for every integer type, bool), with cheap shared clones.

mod dtype;
mod dual;
pub(crate) mod proto;
mod real;

pub use dtype::{DType, Storage};
pub use dual::Dual;
pub use proto::{element_count, tensor_from_proto, tensor_to_proto};
pub use real::{MatRef, Real};

use ndarray::{ArcArray, ArrayD, IxDyn};

pub type Arr<T> = ArcArray<T, IxDyn>;

#[derive(Clone, Debug)]
pub enum Data<S> {
    Float(Arr<S>),
    Int(Arr<i64>),
    Bool(Arr<bool>),
}

#[derive(Clone, Debug)]
pub struct Tensor<S> {
    pub dtype: DType,
    pub data: Data<S>,
}

impl<S: Real> Tensor<S> {
    pub fn float(dtype: DType, a: ArrayD<S>) -> Self {
        debug_assert!(dtype.is_float());
        Tensor {
            dtype,
            data: Data::Float(a.into_shared()),
        }
    }
    pub fn f32(a: ArrayD<S>) -> Self {
        Self::float(DType::F32, a)
    }
    pub fn int(dtype: DType, a: ArrayD<i64>) -> Self {
        Tensor {
            dtype,
            data: Data::Int(a.into_shared()),
        }
    }
    pub fn i64(a: ArrayD<i64>) -> Self {
        Self::int(DType::I64, a)
    }
    pub fn bool(a: ArrayD<bool>) -> Self {
        Tensor {
            dtype: DType::Bool,
            data: Data::Bool(a.into_shared()),
        }
    }
    /// A 1-D int64 tensor.
    pub fn i64_vec(v: Vec<i64>) -> Self {
        let n = v.len();
        Self::i64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"))
    }

    pub fn shape(&self) -> &[usize] {
        match &self.data {
            Data::Float(a) => a.shape(),
            Data::Int(a) => a.shape(),
            Data::Bool(a) => a.shape(),
        }
    }
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_float(&self) -> Option<&Arr<S>> {
        match &self.data {
            Data::Float(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<&Arr<i64>> {
        match &self.data {
            Data::Int(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<&Arr<bool>> {
        match &self.data {
            Data::Bool(a) => Some(a),
            _ => None,
        }
    }

    /// Values as i64, whatever the storage (floats truncate toward zero, bools are 0/1).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Data::Float(a) => a.iter().map(|v| v.to_f64() as i64).collect(),
            Data::Int(a) => a.iter().copied().collect(),
            Data::Bool(a) => a.iter().map(|&b| b as i64).collect(),
        }
    }
    /// Values as f64, whatever the storage.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::Float(a) => a.iter().map(|v| v.to_f64()).collect(),
            Data::Int(a) => a.iter().map(|&v| v as f64).collect(),
            Data::Bool(a) => a.iter().map(|&b| b as i64 as f64).collect(),
        }
    }

    /// ONNX Cast semantics (float→int truncates toward zero; f16/bf16 targets round through
    /// their precision; NaN→int is 0).
    pub fn cast(&self, to: DType) -> Tensor<S> {
        // Same type (exporters emit many no-op Casts): share the data.
        if to == self.dtype {
            return self.clone();
        }
        let data = match (to.storage(), &self.data) {
            (Storage::Float, Data::Float(a)) => Data::Float(match to {
                DType::F16 => a
                    .mapv(|v| S::from_f64(half::f16::from_f64(v.to_f64()).to_f64()))
                    .into_shared(),
                DType::BF16 => a
                    .mapv(|v| S::from_f64(half::bf16::from_f64(v.to_f64()).to_f64()))
                    .into_shared(),
                DType::F32 => a
                    .mapv(|v| S::from_f64(v.to_f64() as f32 as f64))
                    .into_shared(),
                _ => a.clone(),
            }),
            (Storage::Float, Data::Int(a)) => {
                Data::Float(a.mapv(|v| S::from_f64(v as f64)).into_shared())
            }
            (Storage::Float, Data::Bool(a)) => Data::Float(
                a.mapv(|v| if v { S::one() } else { S::zero() })
                    .into_shared(),
            ),
            (Storage::Int, Data::Float(a)) => Data::Int(
                a.mapv(|v| {
                    let f = v.to_f64();
                    if f.is_nan() { 0 } else { to.wrap_int(f as i64) }
                })
                .into_shared(),
            ),
            (Storage::Int, Data::Int(a)) => Data::Int(a.mapv(|v| to.wrap_int(v)).into_shared()),
            (Storage::Int, Data::Bool(a)) => Data::Int(a.mapv(|v| v as i64).into_shared()),
            (_, Data::Float(a)) => Data::Bool(a.mapv(|v| v != S::zero()).into_shared()),
            (_, Data::Int(a)) => Data::Bool(a.mapv(|v| v != 0).into_shared()),
            (_, Data::Bool(a)) => Data::Bool(a.clone()),
        };
        Tensor { dtype: to, data }
    }

    /// The same tensor in another float type.
    pub fn convert<T: Real>(&self) -> Tensor<T> {
        let data = match &self.data {
            Data::Float(a) => Data::Float(a.mapv(|v| T::from_f64(v.to_f64())).into_shared()),
            Data::Int(a) => Data::Int(a.clone()),
            Data::Bool(a) => Data::Bool(a.clone()),
        };
        Tensor {
            dtype: self.dtype,
            data,
        }
    }

    /// The same data under a new shape with the same element count (no copy when contiguous).
    pub fn reshape(&self, shape: &[usize]) -> Tensor<S> {
        fn rs<T: Clone>(a: &Arr<T>, shape: &[usize]) -> Arr<T> {
            if a.is_standard_layout() {
                a.clone()
                    .into_shape_with_order(IxDyn(shape))
                    .expect("same element count")
            } else {
                a.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(shape))
                    .expect("same element count")
                    .into_shared()
            }
        }
        let data = match &self.data {
            Data::Float(a) => Data::Float(rs(a, shape)),
            Data::Int(a) => Data::Int(rs(a, shape)),
            Data::Bool(a) => Data::Bool(rs(a, shape)),
        };
        Tensor {
            dtype: self.dtype,
            data,
        }
    }
}
