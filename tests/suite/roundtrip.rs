//! Lossless I/O: decoding and re-encoding every fixture and real model gives the same bytes,
//! the IR writes the same model back, onnxruntime gives bit-identical outputs on the rewritten
//! file, external data round-trips, and fields outside our schema are reported.

use crate::common;

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

/// A model of `graph` at IR version 8, default-domain opset 17.
fn opset17(graph: onnx_prune::onnx::proto::GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx_prune::onnx::proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
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
    let m = opset17(GraphProto {
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
    });
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

#[test]
fn inspect_holds_one_large_weight_at_a_time() {
    // 24 MatMul layers of 2048 × 2048 f32 (16 MiB each, 384 MiB in all), every other one in
    // external data, one holding a NaN. `inspect` maps the files, decodes one weight at a
    // time and hands its pages back, so its peak resident memory must stay within a few
    // largest tensors of a tiny model's — not near the weights' total, which reading the file
    // and decoding every weight would need twice over.
    use onnx_prune::onnx::proto::{GraphProto, NodeProto, TensorProto, ValueInfoProto};
    use onnx_prune::onnx::proto::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
    const D: usize = 2048;
    const LAYERS: usize = 24;
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: [1, D]
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x = "x".to_string();
    for i in 0..LAYERS {
        let mut raw = 0.001f32.to_le_bytes().repeat(D * D);
        if i == 5 {
            raw[4 * 777..4 * 778].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        inits.push(TensorProto {
            name: Some(format!("w{i}")),
            dims: vec![D as i64, D as i64],
            data_type: Some(1),
            raw_data: Some(raw.into()),
            ..Default::default()
        });
        nodes.push(NodeProto {
            op_type: Some("MatMul".into()),
            input: vec![x.clone(), format!("w{i}")],
            output: vec![format!("h{i}")],
            ..Default::default()
        });
        x = format!("h{i}");
    }
    let m = opset17(GraphProto {
        name: Some("tall".into()),
        node: nodes,
        initializer: inits,
        input: vec![vi("x")],
        output: vec![vi(&x)],
        ..Default::default()
    });
    let dir = common::scratch("inspect-memory");
    let path = dir.join("tall.onnx");
    let opts = SaveOptions {
        external: (0..LAYERS).step_by(2).map(|i| format!("w{i}")).collect(),
        ..Default::default()
    };
    save_model(&m, &path, &opts).unwrap();
    drop(m);
    assert!(dir.join("tall.onnx.data").is_file());

    let inspect = |p: &std::path::Path| -> serde_json::Value {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
            .args(["inspect", "--json"])
            .arg(p)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let big = inspect(&path);
    let tiny = inspect(&common::fixtures().join("mlp.onnx"));
    let peak = |v: &serde_json::Value| v["peak_rss_bytes"].as_u64().unwrap() as f64 / 1048576.0;
    let (big_mb, tiny_mb) = (peak(&big), peak(&tiny));
    eprintln!("inspect peak: {big_mb:.0} MiB for 384 MiB of weights, {tiny_mb:.0} MiB for mlp");
    assert!(
        big_mb - tiny_mb < 3.0 * 16.0,
        "peak {big_mb:.0} MiB vs {tiny_mb:.0} MiB for a tiny model"
    );
    // The lazy summary is the summary: parameters, FLOPs and the NaN all found.
    assert_eq!(big["params"].as_u64(), Some((LAYERS * D * D) as u64));
    assert_eq!(big["flops"].as_u64(), Some((LAYERS * 2 * D * D) as u64));
    let nf = big["non_finite"].as_array().unwrap();
    assert_eq!(nf.len(), 1, "{nf:?}");
    assert!(nf[0].as_str().unwrap().starts_with("w5: 1 NaN"), "{nf:?}");
    let eager = onnx_prune::inspect::summarize(&Model::load(&path).unwrap(), &Default::default());
    let lazy =
        onnx_prune::inspect::summarize(&Model::load_mapped(&path).unwrap(), &Default::default());
    assert_eq!(
        serde_json::to_value(&eager.layers).unwrap(),
        serde_json::to_value(&lazy.layers).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mapped_lazy_summaries_equal_the_eager_ones_on_every_model() {
    // `inspect` reads models mapped with large weights left lazy; its summary (parameters,
    // FLOPs, per-layer shapes, unsupported ops) must be the one the fully decoded graph gives.
    for case in common::all_cases() {
        let shapes: std::collections::HashMap<String, Vec<usize>> = case
            .feeds
            .iter()
            .map(|(n, t)| (n.clone(), t.shape().to_vec()))
            .collect();
        let eager = onnx_prune::inspect::summarize(&Model::load(&case.path).unwrap(), &shapes);
        let lazy_model = Model::load_mapped(&case.path).unwrap();
        let lazy = onnx_prune::inspect::summarize(&lazy_model, &shapes);
        let strip = |s: &onnx_prune::inspect::Summary| {
            let mut v = serde_json::to_value(s).unwrap();
            v.as_object_mut().unwrap().remove("peak_rss_bytes");
            v
        };
        assert_eq!(strip(&eager), strip(&lazy), "{}", case.name);
        assert!(
            lazy.flops.is_some() || !lazy.unsupported.is_empty(),
            "{}: {:?}",
            case.name,
            lazy.flops_note
        );
        eprintln!(
            "{}: {} lazy weights",
            case.name,
            lazy_model.graph.lazy.len()
        );
    }
}
