//! Mutation fuzzing on the stable toolchain: fixture models with random byte flips, overwrites,
//! insertions, deletions and truncations go through the loader, the IR builder, `inspect`'s
//! summary and the dependency analysis (`inspect::inspect_bytes`); every input must give Ok or
//! a clean error, never a panic. The coverage-guided libFuzzer target on the same entry point
//! is `fuzz/fuzz_targets/inspect.rs` (nightly; `.ci/run` runs it for a bounded time).
//! PROPTEST_CASES sets the number of mutated models (default 2000 each).

use crate::common;

use onnx_prune::onnx::proto::ModelProto;
use proptest::prelude::*;
use prost::Message;
use std::path::PathBuf;
use std::sync::OnceLock;

fn seeds() -> &'static Vec<(PathBuf, Vec<u8>)> {
    static S: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = Vec::new();
        for dir in [common::fixtures(), common::fixtures().join("coupling")] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect();
            files.sort();
            for p in files {
                let b = std::fs::read(&p).unwrap();
                v.push((p, b));
            }
        }
        v
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: u32, bit: u8 },
    Set { at: u32, value: u8 },
    Insert { at: u32, bytes: Vec<u8> },
    Delete { at: u32, len: u16 },
    Truncate { at: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u32>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (any::<u32>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        2 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<u32>(), 1u16..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => any::<u32>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// PROPTEST_CASES cases (2000 by default) per property, nothing persisted.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if let Some(x) = b.get_mut(*at as usize % n) {
                    *x ^= 1 << bit;
                }
            }
            Mutation::Set { at, value } => {
                if let Some(x) = b.get_mut(*at as usize % n) {
                    *x = *value;
                }
            }
            Mutation::Insert { at, bytes } => {
                let i = (*at as usize % n).min(b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = (*at as usize % n).min(b.len());
                let j = (i + *len as usize).min(b.len());
                b.drain(i..j);
            }
            Mutation::Truncate { at } => b.truncate(*at as usize % n),
        }
    }
    b
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_models_never_panic(
        seed in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let s = seeds();
        let (path, bytes) = &s[seed.index(s.len())];
        let b = apply(bytes.clone(), &muts);
        // Ok or Err are both fine; a panic fails the property.
        let _ = onnx_prune::inspect::inspect_bytes(&b, path);
    }
}

/// Field-level edits that keep the protobuf valid, so the IR builder and the analysis (not
/// the decoder) see the damage: attribute values, dims, data types, names, op types, inputs.
#[derive(Debug, Clone)]
enum Edit {
    AttrInt { node: u16, value: i64 },
    AttrInts { node: u16, value: Vec<i64> },
    Dim { init: u16, value: i64 },
    DataType { init: u16, value: i32 },
    OpType { node: u16, op: u8 },
    Input { node: u16, slot: u8, from: u16 },
    DropInput { node: u16 },
    InputDim { value: i64 },
}

const OPS: [&str; 12] = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Reshape",
    "Concat",
    "Split",
    "Transpose",
    "Softmax",
    "BatchNormalization",
    "Slice",
    "Gather",
];

fn edit() -> impl Strategy<Value = Edit> {
    let big = prop_oneof![
        -3i64..70,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(1 << 40),
        Just(-1)
    ];
    prop_oneof![
        (any::<u16>(), big.clone()).prop_map(|(node, value)| Edit::AttrInt { node, value }),
        (any::<u16>(), proptest::collection::vec(big.clone(), 0..6))
            .prop_map(|(node, value)| Edit::AttrInts { node, value }),
        (any::<u16>(), big.clone()).prop_map(|(init, value)| Edit::Dim { init, value }),
        (any::<u16>(), -1i32..25).prop_map(|(init, value)| Edit::DataType { init, value }),
        (any::<u16>(), any::<u8>()).prop_map(|(node, op)| Edit::OpType { node, op }),
        (any::<u16>(), any::<u8>(), any::<u16>()).prop_map(|(node, slot, from)| Edit::Input {
            node,
            slot,
            from
        }),
        any::<u16>().prop_map(|node| Edit::DropInput { node }),
        big.prop_map(|value| Edit::InputDim { value }),
    ]
}

fn edit_model(m: &mut ModelProto, edits: &[Edit]) {
    let g = m.graph.as_mut().unwrap();
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    for e in edits {
        let nn = g.node.len().max(1);
        let ni = g.initializer.len().max(1);
        match e {
            Edit::AttrInt { node, value } => {
                if let Some(a) = g
                    .node
                    .get_mut(*node as usize % nn)
                    .and_then(|n| n.attribute.first_mut())
                {
                    a.i = Some(*value);
                }
            }
            Edit::AttrInts { node, value } => {
                if let Some(a) = g
                    .node
                    .get_mut(*node as usize % nn)
                    .and_then(|n| n.attribute.last_mut())
                {
                    a.ints = value.clone();
                }
            }
            Edit::Dim { init, value } => {
                if let Some(t) = g.initializer.get_mut(*init as usize % ni)
                    && let Some(d) = t.dims.first_mut()
                {
                    *d = *value;
                }
            }
            Edit::DataType { init, value } => {
                if let Some(t) = g.initializer.get_mut(*init as usize % ni) {
                    t.data_type = Some(*value);
                }
            }
            Edit::OpType { node, op } => {
                if let Some(n) = g.node.get_mut(*node as usize % nn) {
                    n.op_type = Some(OPS[*op as usize % OPS.len()].to_string());
                }
            }
            Edit::Input { node, slot, from } => {
                if let Some(n) = g.node.get_mut(*node as usize % nn)
                    && !n.input.is_empty()
                    && !names.is_empty()
                {
                    let k = *slot as usize % n.input.len();
                    n.input[k] = names[*from as usize % names.len()].clone();
                }
            }
            Edit::DropInput { node } => {
                if let Some(n) = g.node.get_mut(*node as usize % nn) {
                    n.input.pop();
                }
            }
            Edit::InputDim { value } => {
                use onnx_prune::onnx::proto::tensor_shape_proto::dimension::Value;
                if let Some(d) = g
                    .input
                    .first_mut()
                    .and_then(|i| i.r#type.as_mut())
                    .and_then(|t| match t.value.as_mut() {
                        Some(onnx_prune::onnx::proto::type_proto::Value::TensorType(tt)) => {
                            tt.shape.as_mut()
                        }
                        _ => None,
                    })
                    .and_then(|s| s.dim.last_mut())
                {
                    d.value = Some(Value::DimValue(*value));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn edited_models_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let s = seeds();
        let (path, bytes) = &s[seed.index(s.len())];
        let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
        edit_model(&mut m, &edits);
        let _ = onnx_prune::inspect::inspect_bytes(&m.encode_to_vec(), path);
    }
}
