//! Generates the prost types for ONNX from the vendored `proto/onnx-ml.proto`, plus a field table
//! (message → field number → kind) that `onnx::unknown` uses to find fields prost would drop.

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use std::fmt::Write as _;

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let fds_path = out_dir.join("onnx_fds.bin");
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc);
    // Large tensors decode as zero-copy slices of the model buffer.
    cfg.bytes([".onnx.TensorProto.raw_data"]);
    cfg.file_descriptor_set_path(&fds_path);
    cfg.compile_protos(&["proto/onnx-ml.proto"], &["proto/"])
        .expect("compile onnx-ml.proto");
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = prost_types::FileDescriptorSet::decode(&std::fs::read(&fds_path).unwrap()[..])
        .expect("descriptor set");
    let mut messages: Vec<(String, Fields)> = Vec::new();
    for file in &fds.file {
        let pkg = file.package();
        for m in &file.message_type {
            collect(&format!(".{pkg}"), m, &mut messages);
        }
    }
    let index = |name: &str| messages.iter().position(|(n, _)| n == name);
    let mut src = String::from(
        "/// Generated from onnx-ml.proto: message names and, per message, (field number, \
         index of the field's message type when it is a message).\n",
    );
    writeln!(src, "pub type Field = (u32, Option<usize>);").unwrap();
    writeln!(src, "pub static MESSAGES: &[(&str, &[Field])] = &[").unwrap();
    for (name, fields) in &messages {
        let items: Vec<String> = fields
            .iter()
            .map(|(num, sub)| {
                let sub = sub
                    .as_deref()
                    .map(|s| format!("Some({})", index(s).expect("known message")))
                    .unwrap_or_else(|| "None".into());
                format!("({num}, {sub})")
            })
            .collect();
        writeln!(src, "    ({name:?}, &[{}]),", items.join(", ")).unwrap();
    }
    writeln!(src, "];").unwrap();
    std::fs::write(out_dir.join("onnx_fields.rs"), src).unwrap();
}

type Fields = Vec<(i32, Option<String>)>;

fn collect(prefix: &str, m: &prost_types::DescriptorProto, out: &mut Vec<(String, Fields)>) {
    let name = format!("{prefix}.{}", m.name());
    let fields = m
        .field
        .iter()
        .map(|f| {
            let sub = (f.r#type() == Type::Message).then(|| f.type_name().to_string());
            (f.number(), sub)
        })
        .collect();
    out.push((name.clone(), fields));
    for nested in &m.nested_type {
        collect(&name, nested, out);
    }
}
