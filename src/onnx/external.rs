//! External data: tensors whose bytes live in a separate file next to the model
//! (`data_location = EXTERNAL`, keys `location`, `offset`, `length`).

use super::proto::{ModelProto, TensorProto, tensor_proto::DataLocation};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Component, Path};

/// Visits every TensorProto of a model: initializers, sparse initializers, Constant-like
/// attributes, and the same inside subgraphs, functions and training info.
pub fn for_each_tensor_mut(model: &mut ModelProto, f: &mut dyn FnMut(&mut TensorProto)) {
    use super::proto::{AttributeProto, GraphProto, NodeProto};
    fn attr(a: &mut AttributeProto, f: &mut dyn FnMut(&mut TensorProto)) {
        if let Some(t) = a.t.as_mut() {
            f(t);
        }
        a.tensors.iter_mut().for_each(&mut *f);
        for s in a
            .sparse_tensor
            .iter_mut()
            .chain(a.sparse_tensors.iter_mut())
        {
            s.values
                .iter_mut()
                .chain(s.indices.iter_mut())
                .for_each(&mut *f);
        }
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            graph(g, f);
        }
    }
    fn node(n: &mut NodeProto, f: &mut dyn FnMut(&mut TensorProto)) {
        for a in &mut n.attribute {
            attr(a, f);
        }
    }
    fn graph(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
        g.initializer.iter_mut().for_each(&mut *f);
        for s in &mut g.sparse_initializer {
            s.values
                .iter_mut()
                .chain(s.indices.iter_mut())
                .for_each(&mut *f);
        }
        for n in &mut g.node {
            node(n, f);
        }
    }
    if let Some(g) = model.graph.as_mut() {
        graph(g, f);
    }
    for func in &mut model.functions {
        for n in &mut func.node {
            node(n, f);
        }
    }
    for t in &mut model.training_info {
        for g in t.initialization.iter_mut().chain(t.algorithm.iter_mut()) {
            graph(g, f);
        }
    }
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

/// Where an external tensor's bytes are: file (relative to the model), offset, length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

pub fn external_ref(t: &TensorProto) -> Result<ExternalRef, String> {
    let mut location = None;
    let mut offset = 0;
    let mut length = None;
    for kv in &t.external_data {
        let v = kv.value();
        match kv.key() {
            "location" => location = Some(v.to_string()),
            "offset" => offset = v.parse().map_err(|_| format!("bad offset {v:?}"))?,
            "length" => length = Some(v.parse().map_err(|_| format!("bad length {v:?}"))?),
            _ => {}
        }
    }
    let location = location.ok_or("external data without a location")?;
    let p = Path::new(&location);
    // Same rule as onnx's checker: a relative path that stays inside the model's folder.
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!(
            "external data location {location:?} leaves the model's folder"
        ));
    }
    Ok(ExternalRef {
        location,
        offset,
        length,
    })
}

/// Reads every external tensor into `raw_data` and marks it as default-located. Returns the
/// names of the tensors that were external, with their original references.
pub fn inline_external(
    model: &mut ModelProto,
    base_dir: &Path,
    model_path: &Path,
    mut maps: Option<&mut Vec<super::mapped::Mapped>>,
) -> Result<HashMap<String, ExternalRef>> {
    let mut files: HashMap<String, memmap_or_bytes::Blob> = HashMap::new();
    let mut found = HashMap::new();
    let mut err: Option<Error> = None;
    for_each_tensor_mut(model, &mut |t| {
        if err.is_some() || !is_external(t) {
            return;
        }
        let name = t.name().to_string();
        let r = match external_ref(t) {
            Ok(r) => r,
            Err(m) => {
                err = Some(Error::bad_model(
                    model_path,
                    format!("tensor {name:?}: {m}"),
                ));
                return;
            }
        };
        let file_path = base_dir.join(&r.location);
        let blob = match files.get(&r.location) {
            Some(b) => b.clone(),
            None => match memmap_or_bytes::Blob::open(&file_path, maps.as_deref_mut()) {
                Ok(b) => {
                    files.insert(r.location.clone(), b.clone());
                    b
                }
                Err(e) => {
                    err = Some(Error::bad_model(
                        model_path,
                        format!(
                            "tensor {name:?}: external data file {} cannot be read: {e}",
                            file_path.display()
                        ),
                    ));
                    return;
                }
            },
        };
        let avail = blob.len() as u64;
        let len = r.length.unwrap_or(avail.saturating_sub(r.offset));
        if r.offset.checked_add(len).is_none_or(|end| end > avail) {
            err = Some(Error::bad_model(
                model_path,
                format!(
                    "tensor {name:?}: external data {} holds {avail} bytes, \
                     but offset {} + length {len} were declared",
                    file_path.display(),
                    r.offset
                ),
            ));
            return;
        }
        // Without a declared length the shape says how much the file must hold.
        let dtype = crate::tensor::DType::from_onnx(t.data_type.unwrap_or(0));
        let needed = crate::tensor::proto::element_count(&t.dims)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&n| n > 0 && dtype.size() > 0);
        if let Some(needed) = needed
            && (len as usize) < needed
        {
            err = Some(Error::bad_model(
                model_path,
                format!(
                    "tensor {name:?}: external data {} holds {len} bytes from offset {}, \
                     but its shape {:?} needs {needed}",
                    file_path.display(),
                    r.offset,
                    t.dims
                ),
            ));
            return;
        }
        t.raw_data = Some(blob.slice(r.offset as usize, len as usize));
        t.external_data.clear();
        t.data_location = None;
        found.insert(name, r);
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// Shared, cheaply sliceable file contents.
mod memmap_or_bytes {
    use bytes::Bytes;
    use std::path::Path;

    #[derive(Clone)]
    pub struct Blob(Bytes);
    impl Blob {
        /// Reads the file, or maps it (recording the map) when `maps` is given.
        pub fn open(
            p: &Path,
            maps: Option<&mut Vec<crate::onnx::mapped::Mapped>>,
        ) -> std::io::Result<Blob> {
            // Only regular files are mapped; anything else gets read (and read's errors).
            let regular = std::fs::metadata(p).is_ok_and(|m| m.is_file());
            let Some(maps) = maps.filter(|_| regular) else {
                return Ok(Blob(Bytes::from(std::fs::read(p)?)));
            };
            Ok(Blob(match crate::onnx::mapped::Mapped::open(p)? {
                Some(m) => {
                    maps.push(m.clone());
                    m.bytes()
                }
                None => Bytes::new(),
            }))
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        pub fn slice(&self, offset: usize, len: usize) -> Bytes {
            self.0.slice(offset..offset + len)
        }
    }
}
