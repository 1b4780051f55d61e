//! Finds protobuf fields that the vendored schema does not define.
//!
//! prost discards unknown fields when decoding, so re-encoding a model written with a newer ONNX
//! schema would lose them without a word. We walk the wire format alongside a field table
//! generated from the same `.proto` (build.rs) and report every field number we do not know, with
//! the path of the message that holds it.

mod table {
    include!(concat!(env!("OUT_DIR"), "/onnx_fields.rs"));
}

/// A field present on the wire but absent from our schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// Dotted path of message types from the model root, e.g. `ModelProto.graph.node[3]`.
    pub path: String,
    pub field_number: u32,
}

const MAX_REPORTED: usize = 64;
const MAX_DEPTH: usize = 100;

/// Scans an encoded `ModelProto` and lists unknown fields (at most 64). Malformed input is not
/// reported here: the decoder reports it.
pub fn scan_model(bytes: &[u8]) -> Vec<UnknownField> {
    scan_model_with(bytes, &mut |_| {})
}

/// `scan_model`, telling `progress` the unread rest of the buffer after each field (the walk
/// only moves forward, so a memory-mapped caller can release what lies behind).
pub fn scan_model_with(bytes: &[u8], progress: &mut dyn FnMut(&[u8])) -> Vec<UnknownField> {
    let root = table::MESSAGES
        .iter()
        .position(|(n, _)| *n == ".onnx.ModelProto")
        .expect("ModelProto in table");
    let mut out = Vec::new();
    let _ = walk(bytes, root, "ModelProto", 0, &mut out, progress);
    out
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn walk(
    mut buf: &[u8],
    msg: usize,
    path: &str,
    depth: usize,
    out: &mut Vec<UnknownField>,
    progress: &mut dyn FnMut(&[u8]),
) -> Option<()> {
    if depth > MAX_DEPTH || out.len() >= MAX_REPORTED {
        return Some(());
    }
    let fields = table::MESSAGES[msg].1;
    let mut counts: Vec<usize> = vec![0; fields.len()];
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let number = (key >> 3) as u32;
        let wire = key & 7;
        let known = fields.iter().position(|(n, _)| *n == number);
        match wire {
            0 => {
                read_varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                let payload = buf.get(..len)?;
                buf = &buf[len..];
                if let Some(i) = known
                    && let Some(sub) = fields[i].1
                {
                    let k = counts[i];
                    counts[i] += 1;
                    let child = format!("{path}.{}#{number}[{k}]", short(table::MESSAGES[sub].0));
                    walk(payload, sub, &child, depth + 1, out, progress)?;
                }
            }
            // Groups (3, 4) are not used by ONNX; anything else is malformed.
            _ => return None,
        }
        progress(buf);
        if known.is_none() && out.len() < MAX_REPORTED {
            out.push(UnknownField {
                path: path.to_string(),
                field_number: number,
            });
        }
    }
    Some(())
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.first()?;
        *buf = &buf[1..];
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{GraphProto, ModelProto, NodeProto};
    use prost::Message;

    #[test]
    fn known_model_has_no_unknown_fields() {
        let m = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: Some("Relu".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(scan_model(&m.encode_to_vec()).is_empty());
    }

    #[test]
    fn finds_unknown_field_in_nested_node() {
        let node = NodeProto {
            op_type: Some("Relu".into()),
            ..Default::default()
        };
        let mut node_bytes = node.encode_to_vec();
        // field 99, varint 1
        node_bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let mut graph = Vec::new();
        graph.push(0x0a); // GraphProto.node = field 1, wire 2
        graph.push(node_bytes.len() as u8);
        graph.extend_from_slice(&node_bytes);
        let mut model = vec![0x3a, graph.len() as u8]; // ModelProto.graph = field 7
        model.extend_from_slice(&graph);
        let found = scan_model(&model);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field_number, 99);
        assert!(found[0].path.contains("NodeProto"), "{}", found[0].path);
    }
}
