//! TensorProto ↔ Tensor. Sizes declared by the file are checked before anything is allocated.

use super::{DType, Data, Real, Storage, Tensor};
use crate::onnx::TensorProto;
use ndarray::{ArrayD, IxDyn};

/// The element count `dims` declare, or an error when a dim is negative or the product
/// overflows.
pub fn element_count(dims: &[i64]) -> Result<usize, String> {
    dims.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}"))?;
        acc.checked_mul(d)
            .ok_or_else(|| format!("dimensions {dims:?} overflow"))
    })
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what} holds {got} values but the shape needs {want}"
        ))
    }
}

fn from_raw<T, const N: usize>(
    raw: &[u8],
    n: usize,
    conv: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if raw.len() != n * N {
        return Err(format!(
            "raw_data holds {} bytes but the shape needs {} ({} values of {} bytes)",
            raw.len(),
            n * N,
            n,
            N
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| conv(c.try_into().expect("chunk size")))
        .collect())
}

/// Decodes a TensorProto (external data must already be inlined) into interpreter storage.
pub fn tensor_from_proto<S: Real>(t: &TensorProto) -> Result<Tensor<S>, String> {
    let dtype = DType::from_onnx(t.data_type.unwrap_or(0));
    let n = element_count(&t.dims)?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if dtype.storage() == Storage::None {
        return Err(format!("element type {dtype} is not supported"));
    }
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let raw = t.raw_data.as_deref().filter(|_| t.raw_data.is_some());
    let data = match dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            let v: Vec<S> = if let Some(raw) = raw {
                match dtype {
                    DType::F32 => from_raw(raw, n, |b: [u8; 4]| {
                        S::from_f64(f32::from_le_bytes(b) as f64)
                    })?,
                    DType::F64 => {
                        from_raw(raw, n, |b: [u8; 8]| S::from_f64(f64::from_le_bytes(b)))?
                    }
                    DType::F16 => from_raw(raw, n, |b: [u8; 2]| {
                        S::from_f64(half::f16::from_le_bytes(b).to_f64())
                    })?,
                    _ => from_raw(raw, n, |b: [u8; 2]| {
                        S::from_f64(half::bf16::from_le_bytes(b).to_f64())
                    })?,
                }
            } else {
                match dtype {
                    DType::F32 => {
                        check_len("float_data", t.float_data.len(), n)?;
                        t.float_data
                            .iter()
                            .map(|&v| S::from_f64(v as f64))
                            .collect()
                    }
                    DType::F64 => {
                        check_len("double_data", t.double_data.len(), n)?;
                        t.double_data.iter().map(|&v| S::from_f64(v)).collect()
                    }
                    DType::F16 => {
                        check_len("int32_data", t.int32_data.len(), n)?;
                        t.int32_data
                            .iter()
                            .map(|&v| S::from_f64(half::f16::from_bits(v as u16).to_f64()))
                            .collect()
                    }
                    _ => {
                        check_len("int32_data", t.int32_data.len(), n)?;
                        t.int32_data
                            .iter()
                            .map(|&v| S::from_f64(half::bf16::from_bits(v as u16).to_f64()))
                            .collect()
                    }
                }
            };
            Data::Float(
                ArrayD::from_shape_vec(IxDyn(&shape), v)
                    .map_err(|e| e.to_string())?
                    .into_shared(),
            )
        }
        DType::Bool => {
            let v: Vec<bool> = match raw {
                Some(raw) => from_raw(raw, n, |b: [u8; 1]| b[0] != 0)?,
                None => {
                    check_len("int32_data", t.int32_data.len(), n)?;
                    t.int32_data.iter().map(|&v| v != 0).collect()
                }
            };
            Data::Bool(
                ArrayD::from_shape_vec(IxDyn(&shape), v)
                    .map_err(|e| e.to_string())?
                    .into_shared(),
            )
        }
        _ => {
            let v: Vec<i64> = match raw {
                Some(raw) => match dtype {
                    DType::U8 => from_raw(raw, n, |b: [u8; 1]| b[0] as i64)?,
                    DType::I8 => from_raw(raw, n, |b: [u8; 1]| b[0] as i8 as i64)?,
                    DType::U16 => from_raw(raw, n, |b: [u8; 2]| u16::from_le_bytes(b) as i64)?,
                    DType::I16 => from_raw(raw, n, |b: [u8; 2]| i16::from_le_bytes(b) as i64)?,
                    DType::I32 => from_raw(raw, n, |b: [u8; 4]| i32::from_le_bytes(b) as i64)?,
                    DType::U32 => from_raw(raw, n, |b: [u8; 4]| u32::from_le_bytes(b) as i64)?,
                    DType::U64 => from_raw(raw, n, |b: [u8; 8]| u64::from_le_bytes(b) as i64)?,
                    _ => from_raw(raw, n, i64::from_le_bytes)?,
                },
                None => match dtype {
                    DType::I64 => {
                        check_len("int64_data", t.int64_data.len(), n)?;
                        t.int64_data.clone()
                    }
                    DType::U32 | DType::U64 => {
                        check_len("uint64_data", t.uint64_data.len(), n)?;
                        t.uint64_data.iter().map(|&v| v as i64).collect()
                    }
                    _ => {
                        check_len("int32_data", t.int32_data.len(), n)?;
                        t.int32_data
                            .iter()
                            .map(|&v| dtype.wrap_int(v as i64))
                            .collect()
                    }
                },
            };
            Data::Int(
                ArrayD::from_shape_vec(IxDyn(&shape), v)
                    .map_err(|e| e.to_string())?
                    .into_shared(),
            )
        }
    };
    Ok(Tensor { dtype, data })
}

/// Encodes a tensor as a TensorProto with `raw_data` in its own dtype.
pub fn tensor_to_proto<S: Real>(t: &Tensor<S>, name: &str) -> TensorProto {
    let mut raw: Vec<u8> = Vec::with_capacity(t.len() * t.dtype.size());
    match &t.data {
        Data::Float(a) => {
            for v in a.iter() {
                let f = v.to_f64();
                match t.dtype {
                    DType::F64 => raw.extend_from_slice(&f.to_le_bytes()),
                    DType::F16 => raw.extend_from_slice(&half::f16::from_f64(f).to_le_bytes()),
                    DType::BF16 => raw.extend_from_slice(&half::bf16::from_f64(f).to_le_bytes()),
                    _ => raw.extend_from_slice(&(f as f32).to_le_bytes()),
                }
            }
        }
        Data::Int(a) => {
            for &v in a.iter() {
                match t.dtype.size() {
                    1 => raw.push(v as u8),
                    2 => raw.extend_from_slice(&(v as u16).to_le_bytes()),
                    4 => raw.extend_from_slice(&(v as u32).to_le_bytes()),
                    _ => raw.extend_from_slice(&v.to_le_bytes()),
                }
            }
        }
        Data::Bool(a) => raw.extend(a.iter().map(|&b| b as u8)),
    }
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype.onnx()),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_dtype() {
        for dtype in [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::U8,
            DType::I8,
            DType::Bool,
        ] {
            let t = match dtype.storage() {
                Storage::Float => Tensor::<f32>::float(
                    dtype,
                    ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -2.5, 0.0, 3.0]).unwrap(),
                ),
                Storage::Int => Tensor::int(
                    dtype,
                    ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, -2, 0, 100])
                        .unwrap()
                        .mapv(|v| dtype.wrap_int(v)),
                ),
                _ => Tensor::bool(
                    ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, false, false, true]).unwrap(),
                ),
            };
            let p = tensor_to_proto(&t, "x");
            let back: Tensor<f32> = tensor_from_proto(&p).unwrap();
            assert_eq!(back.dtype, dtype);
            assert_eq!(back.to_f64_vec(), t.to_f64_vec(), "{dtype}");
        }
    }

    #[test]
    fn declared_size_mismatch_is_an_error() {
        let p = TensorProto {
            dims: vec![1000, 1000],
            data_type: Some(1),
            raw_data: Some(vec![0u8; 8].into()),
            ..Default::default()
        };
        let e = tensor_from_proto::<f32>(&p).unwrap_err();
        assert!(e.contains("raw_data holds 8 bytes"), "{e}");
        let p = TensorProto {
            dims: vec![i64::MAX, 4],
            data_type: Some(1),
            ..Default::default()
        };
        assert!(
            tensor_from_proto::<f32>(&p)
                .unwrap_err()
                .contains("overflow")
        );
    }
}
