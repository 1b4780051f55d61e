//! tract-onnx: a second, pure-Rust reference runtime, independent of onnxruntime and of our
//! interpreter.

use crate::error::{Error, Result};
use crate::tensor::{DType, Data, Tensor};
use std::path::Path;
use tract_onnx::prelude::*;

fn rt<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Runtime(format!("tract: {what}: {e}"))
}

/// Runs a model file in tract on concrete inputs; returns the outputs in declaration order.
pub fn run_file(path: &Path, feeds: &[(String, Tensor<f32>)]) -> Result<Vec<Tensor<f32>>> {
    let mut model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(rt("loading the model"))?;
    let order: Vec<String> = model
        .input_outlets()
        .map_err(rt("inputs"))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let mut values: TVec<TValue> = tvec!();
    for (i, name) in order.iter().enumerate() {
        let (_, t) = feeds
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::Data(format!("tract: no value for input {name:?}")))?;
        let tt = to_tract(name, t)?;
        model = model
            .with_input_fact(i, InferenceFact::dt_shape(tt.datum_type(), tt.shape()))
            .map_err(rt("input facts"))?;
        values.push(tt.into());
    }
    let plan = model
        .into_optimized()
        .map_err(rt("optimising"))?
        .into_runnable()
        .map_err(rt("planning"))?;
    let out = plan.run(values).map_err(rt("running"))?;
    out.iter().map(from_tract).collect()
}

fn to_tract(name: &str, t: &Tensor<f32>) -> Result<tract_onnx::prelude::Tensor> {
    Ok(match (&t.data, t.dtype) {
        (Data::Float(a), DType::F32) => a.to_owned().into(),
        (Data::Float(a), DType::F64) => a.mapv(|x| x as f64).into(),
        (Data::Int(a), DType::I64) => a.to_owned().into(),
        (Data::Int(a), DType::I32) => a.mapv(|x| x as i32).into(),
        (Data::Bool(a), _) => a.to_owned().into(),
        _ => {
            return Err(Error::Data(format!(
                "tract: input {name:?} of type {} is not supported",
                t.dtype
            )));
        }
    })
}

fn from_tract(v: &TValue) -> Result<Tensor<f32>> {
    let err = rt("reading an output");
    Ok(match v.datum_type() {
        DatumType::F32 => Tensor::f32(v.to_plain_array_view::<f32>().map_err(err)?.to_owned()),
        DatumType::F64 => Tensor::float(
            DType::F64,
            v.to_plain_array_view::<f64>()
                .map_err(err)?
                .mapv(|x| x as f32),
        ),
        DatumType::I64 => Tensor::i64(v.to_plain_array_view::<i64>().map_err(err)?.to_owned()),
        DatumType::I32 => Tensor::int(
            DType::I32,
            v.to_plain_array_view::<i32>().map_err(err)?.mapv(i64::from),
        ),
        DatumType::Bool => Tensor::bool(v.to_plain_array_view::<bool>().map_err(err)?.to_owned()),
        other => {
            return Err(Error::Runtime(format!(
                "tract: output type {other:?} is not supported"
            )));
        }
    })
}
