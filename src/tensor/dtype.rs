//! ONNX element types and how the interpreter stores them.

use std::fmt;

/// ONNX `TensorProto.DataType`, restricted to the types a model can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    String,
    Bool,
    F16,
    F64,
    U32,
    U64,
    BF16,
    /// Any other code (complex, float8, int4, …): carried through, never computed.
    Other(i32),
}

/// How a dtype is held during computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In the interpreter's float type (f16/bf16/f32/f64).
    Float,
    /// As i64 (every integer type).
    Int,
    Bool,
    /// Not computable by the interpreter.
    None,
}

impl DType {
    pub fn from_onnx(code: i32) -> DType {
        match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            8 => DType::String,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            16 => DType::BF16,
            c => DType::Other(c),
        }
    }

    pub fn onnx(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::String => 8,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::BF16 => 16,
            DType::Other(c) => c,
        }
    }

    pub fn storage(self) -> Storage {
        match self {
            DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Storage::Float,
            DType::U8
            | DType::I8
            | DType::U16
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::U32
            | DType::U64 => Storage::Int,
            DType::Bool => Storage::Bool,
            DType::String | DType::Other(_) => Storage::None,
        }
    }

    pub fn is_float(self) -> bool {
        self.storage() == Storage::Float
    }

    /// Size of one element in bytes (0 for strings and unknown codes).
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::String | DType::Other(_) => 0,
        }
    }

    /// Wraps an i64 to this integer type's range, as a cast to it would.
    pub fn wrap_int(self, v: i64) -> i64 {
        match self {
            DType::U8 => v as u8 as i64,
            DType::I8 => v as i8 as i64,
            DType::U16 => v as u16 as i64,
            DType::I16 => v as i16 as i64,
            DType::I32 => v as i32 as i64,
            DType::U32 => v as u32 as i64,
            _ => v,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "float32",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::String => "string",
            DType::Bool => "bool",
            DType::F16 => "float16",
            DType::F64 => "float64",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::BF16 => "bfloat16",
            DType::Other(c) => return write!(f, "dtype#{c}"),
        };
        f.write_str(s)
    }
}
