//! Lossless I/O: decoding and re-encoding every fixture and real model gives the same bytes,
//! the IR writes the same model back, onnxruntime gives bit-identical outputs on the rewritten
//! file, external data round-trips, and fields outside our schema are reported.

mod common;

use onnx_prune::ir::{Model, WeightSource};
use onnx_prune::onnx::{ModelProto, SaveOptions, load_model, save_model};
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::tensor::Tensor;
use prost::Message;

fn ort_outputs(
    bytes: &[u8],
    dir: Option<&std::path::Path>,
    feeds: &[(String, Tensor<f32>)],
) -> Vec<Vec<f64>> {
    OrtSession::new(bytes, dir, Device::Cpu, 1)
        .unwrap()
        .run(feeds)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.to_f64_vec())
        .collect()
}

fn same_bits(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

#[test]
fn every_model_round_trips_byte_for_byte() {
    for case in common::all_cases() {
        let original = std::fs::read(&case.path).unwrap();
        let model = Model::load(&case.path).unwrap();
        assert!(
            model.source.unknown_fields.is_empty(),
            "{}: {:?}",
            case.name,
            model.source.unknown_fields
        );
        // decode → encode
        let direct = model.source.proto.encode_to_vec();
        assert!(
            direct == original,
            "{}: prost re-encoding changed the bytes",
            case.name
        );
        // IR → proto → encode
        let written = model.to_proto().encode_to_vec();
        assert!(
            written == original,
            "{}: the IR did not write the model back unchanged",
            case.name
        );
        let redecoded = ModelProto::decode(&written[..]).unwrap();
        assert_eq!(redecoded, model.source.proto, "{}", case.name);
        let a = ort_outputs(&original, None, &case.feeds);
        let b = ort_outputs(&written, None, &case.feeds);
        assert!(
            same_bits(&a, &b),
            "{}: onnxruntime outputs differ after the round trip",
            case.name
        );
        println!(
            "{:<24} {} bytes: byte-identical, onnxruntime outputs bit-identical",
            case.name,
            original.len()
        );
    }
}

#[test]
fn external_data_round_trips() {
    let dir = std::env::temp_dir().join(format!("onnx-prune-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["resnet", "vit"] {
        let src = common::fixtures().join(format!("{name}.onnx"));
        let loaded = load_model(&src).unwrap();
        let names: Vec<String> = loaded
            .proto
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let out = dir.join(format!("{name}.onnx"));
        save_model(
            &loaded.proto,
            &out,
            &SaveOptions {
                external: names.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let data = dir.join(format!("{name}.onnx.data"));
        assert!(data.is_file());
        assert!(
            std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&src).unwrap().len() / 2
        );
        // Reading it back inlines the data again: the same model as the source.
        let back = load_model(&out).unwrap();
        assert_eq!(back.proto, loaded.proto, "{name}");
        assert_eq!(back.external.len(), names.len());
        // onnxruntime and tract read the external-data file themselves.
        let feeds =
            onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib_small.npz")).unwrap();
        let a = ort_outputs(&std::fs::read(&src).unwrap(), None, &feeds);
        let b = ort_outputs(&std::fs::read(&out).unwrap(), Some(&dir), &feeds);
        assert!(
            same_bits(&a, &b),
            "{name}: outputs differ with external data"
        );
        let t = onnx_prune::runtime::tract::run_file(&out, &feeds).unwrap();
        let rel = onnx_prune::validate::agreement(
            "y",
            &Tensor::f32(
                ndarray::ArrayD::from_shape_vec(
                    ndarray::IxDyn(&[a[0].len()]),
                    a[0].iter().map(|&v| v as f32).collect(),
                )
                .unwrap(),
            ),
            &t[0].reshape(&[a[0].len()]),
        )
        .unwrap()
        .rel;
        assert!(rel < 1e-5, "{name}: tract differs by {rel}");
        // Missing or short data files are clear errors naming the tensor.
        std::fs::write(&data, b"short").unwrap();
        let e = load_model(&out).unwrap_err().to_string();
        assert!(e.contains("external data") && e.contains("declared"), "{e}");
        std::fs::remove_file(&data).unwrap();
        let e = load_model(&out).unwrap_err().to_string();
        assert!(e.contains("cannot be read"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_fields_are_reported() {
    let path = common::fixtures().join("mlpnet.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    // ModelProto field 99 (varint): not in the ONNX 1.23 schema.
    bytes.extend_from_slice(&[0x98, 0x06, 0x2a]);
    let m = onnx_prune::onnx::decode_model(bytes.into(), &path).unwrap();
    assert_eq!(m.unknown_fields.len(), 1);
    let w = m.warnings().join("\n");
    assert!(w.contains("field #99") && w.contains("ModelProto"), "{w}");
}

#[test]
fn constant_node_weights_are_weights() {
    // PP-OCR exports have no initializers: every weight is a Constant node output.
    let m = Model::load(&common::model_path("ppocr_mobile_cls")).unwrap();
    assert!(
        m.source
            .proto
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .is_empty()
    );
    let conv_weights = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter_map(|n| n.inputs[1])
        .filter(|w| {
            matches!(
                m.graph.weights.get(w).map(|w| w.source),
                Some(WeightSource::Constant(_))
            )
        })
        .count();
    let convs = m.graph.nodes.iter().filter(|n| n.op_type == "Conv").count();
    assert_eq!(
        conv_weights, convs,
        "every Conv weight is a Constant-node weight"
    );
}

#[test]
fn rarely_used_fields_survive_save_and_load() {
    use onnx_prune::onnx::proto::*;
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let tensor = |name: &str| TensorProto {
        name: Some(name.into()),
        dims: vec![2],
        data_type: Some(1),
        float_data: vec![1.0, -0.0],
        doc_string: Some("doc".into()),
        metadata_props: vec![kv("t", "1")],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(10),
        producer_name: Some("test".into()),
        producer_version: Some("1".into()),
        domain: Some("x.y".into()),
        model_version: Some(3),
        doc_string: Some("model doc".into()),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(21),
            },
            OperatorSetIdProto {
                domain: Some("custom".into()),
                version: Some(1),
            },
        ],
        metadata_props: vec![kv("author", "me"), kv("nan", "NaN")],
        graph: Some(GraphProto {
            name: Some("g".into()),
            doc_string: Some("graph doc".into()),
            node: vec![NodeProto {
                op_type: Some("MyOp".into()),
                domain: Some("custom".into()),
                name: Some("n0".into()),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                overload: Some("v2".into()),
                metadata_props: vec![kv("node", "meta")],
                attribute: vec![AttributeProto {
                    name: Some("f".into()),
                    r#type: Some(1),
                    f: Some(f32::NAN),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            initializer: vec![tensor("w")],
            sparse_initializer: vec![SparseTensorProto {
                values: Some(tensor("s")),
                indices: Some(TensorProto {
                    dims: vec![2],
                    data_type: Some(7),
                    int64_data: vec![0, 3],
                    ..Default::default()
                }),
                dims: vec![4],
            }],
            input: vec![ValueInfoProto {
                name: Some("x".into()),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: Some("y".into()),
                r#type: Some(TypeProto {
                    denotation: Some("seq".into()),
                    value: Some(type_proto::Value::SequenceType(Box::new(
                        type_proto::Sequence { elem_type: None },
                    ))),
                }),
                metadata_props: vec![kv("vi", "m")],
                ..Default::default()
            }],
            metadata_props: vec![kv("graph", "meta")],
            ..Default::default()
        }),
        functions: vec![FunctionProto {
            name: Some("MyOp".into()),
            domain: Some("custom".into()),
            input: vec!["a".into()],
            output: vec!["b".into()],
            node: vec![NodeProto {
                op_type: Some("Relu".into()),
                input: vec!["a".into()],
                output: vec!["b".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
        configuration: vec![DeviceConfigurationProto {
            name: Some("cfg".into()),
            num_devices: Some(2),
            device: vec!["a".into(), "b".into()],
        }],
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("onnx-prune-rich-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("rich.onnx");
    save_model(&model, &p, &SaveOptions::default()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes, model.encode_to_vec());
    let back = load_model(&p).unwrap();
    assert!(back.unknown_fields.is_empty());
    // NaN attribute values compare unequal, so compare the encodings.
    assert_eq!(back.proto.encode_to_vec(), bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn models_over_two_gib_are_written_with_external_data() {
    // One weight of 2 GiB + 1 MiB: over protobuf's limit, so `save_model` must move it to the
    // data file by itself (nothing asked for external data), and reading it back must give
    // every byte again. The small index stays inline.
    use onnx_prune::onnx::proto::{GraphProto, NodeProto, TensorProto, ValueInfoProto};
    let n = (1usize << 29) + (1 << 18);
    let raw: Vec<u8> = (0..n * 4).map(|i| (i % 251) as u8).collect();
    let big = TensorProto {
        name: Some("big".into()),
        dims: vec![n as i64],
        data_type: Some(1),
        raw_data: Some(raw.into()),
        ..Default::default()
    };
    let idx = TensorProto {
        name: Some("idx".into()),
        dims: vec![1],
        data_type: Some(7),
        raw_data: Some(5i64.to_le_bytes().to_vec().into()),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx_prune::onnx::proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("big".into()),
            node: vec![NodeProto {
                op_type: Some("Gather".into()),
                input: vec!["big".into(), "idx".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![big, idx],
            output: vec![ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = common::scratch("over-2gib");
    let out = dir.join("big.onnx");
    let data = dir.join("big.onnx.data");
    save_model(&m, &out, &SaveOptions::default()).unwrap();
    let model_len = std::fs::metadata(&out).unwrap().len();
    let data_len = std::fs::metadata(&data).unwrap().len();
    assert!(model_len < 1 << 20, "model file {model_len} bytes");
    assert!(data_len >= 1 << 31, "data file {data_len} bytes");
    let back = load_model(&out).unwrap();
    assert_eq!(back.external.keys().collect::<Vec<_>>(), vec!["big"]);
    assert_eq!(back.proto, m, "every byte back");
    drop(back);
    let _ = std::fs::remove_dir_all(&dir);
}
