//! Reading and writing `.onnx` files.

use super::external::{ExternalRef, for_each_tensor_mut, inline_external};
use super::mapped::Mapped;
use super::proto::{ModelProto, StringStringEntryProto, tensor_proto::DataLocation};
use super::unknown::{UnknownField, scan_model, scan_model_with};
use crate::error::{Error, Result};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A decoded model with its external data already read in.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub proto: ModelProto,
    pub path: PathBuf,
    /// Tensors that came from external data files, by name (written back external by default).
    pub external: HashMap<String, ExternalRef>,
    /// Fields present in the file that our schema does not define (prost drops them).
    pub unknown_fields: Vec<UnknownField>,
    /// Size of the `.onnx` file itself.
    pub file_len: usize,
    /// The memory maps `raw_data` points into (`load_model_mapped`; empty when read).
    pub maps: Vec<super::mapped::Mapped>,
}

impl LoadedModel {
    pub fn warnings(&self) -> Vec<String> {
        self.unknown_fields
            .iter()
            .map(|u| {
                format!(
                    "{}: field #{} in {} is not in the ONNX 1.23 schema and will not be written back",
                    self.path.display(),
                    u.field_number,
                    u.path
                )
            })
            .collect()
    }
}

/// Loads a model file, reading external data relative to its folder.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_model(Bytes::from(bytes), path)
}

/// Loads a model with the file and its external data memory-mapped rather than read: no
/// weight is copied until it is decoded (see `onnx::mapped`).
pub fn load_model_mapped(path: &Path) -> Result<LoadedModel> {
    // Pipes, devices and directories cannot be mapped: read them (and get read's errors).
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return load_model(path);
    }
    let Some(map) = Mapped::open(path).map_err(|e| Error::io(path, e))? else {
        return Err(Error::bad_model(path, "empty file"));
    };
    let mut maps = vec![map.clone()];
    let mut m = decode_impl(map.bytes(), path, Some(&mut maps))?;
    for map in &maps {
        map.release_all();
    }
    m.maps = maps;
    Ok(m)
}

/// Decodes model bytes; `path` names the file in errors and locates external data.
pub fn decode_model(bytes: Bytes, path: &Path) -> Result<LoadedModel> {
    decode_impl(bytes, path, None)
}

fn decode_impl(bytes: Bytes, path: &Path, maps: Option<&mut Vec<Mapped>>) -> Result<LoadedModel> {
    if bytes.is_empty() {
        return Err(Error::bad_model(path, "empty file"));
    }
    let file_len = bytes.len();
    // A mapped model file is parsed with its pages released behind the parser.
    let model_map = maps.as_ref().and_then(|m| m.first().cloned());
    let decoded = match &model_map {
        Some(m) => ModelProto::decode(super::mapped::ReleasingBuf::new(m)),
        None => ModelProto::decode(bytes.clone()),
    };
    let mut proto = decoded.map_err(|e| {
        Error::bad_model(
            path,
            format!("not an ONNX model (protobuf decode failed: {e})"),
        )
    })?;
    if proto.graph.is_none() {
        return Err(Error::bad_model(path, "the model has no graph"));
    }
    let unknown_fields = match &model_map {
        Some(m) => {
            let mut behind = m.behind();
            scan_model_with(&bytes, &mut |rest| behind.advance_to(rest))
        }
        None => scan_model(&bytes),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let external = inline_external(&mut proto, base, path, maps)?;
    Ok(LoadedModel {
        proto,
        path: path.to_path_buf(),
        external,
        unknown_fields,
        file_len,
        maps: Vec::new(),
    })
}

/// How tensors are split between the model file and an external data file.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Tensors to write to the external data file (usually `LoadedModel::external`'s keys).
    pub external: Vec<String>,
    /// Also move every tensor of at least this many bytes out, when the model would otherwise
    /// exceed protobuf's 2 GiB limit.
    pub auto_external_min_bytes: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            external: Vec::new(),
            auto_external_min_bytes: 1024,
        }
    }
}

const PROTOBUF_LIMIT: usize = (1 << 31) - (1 << 20);
const EXTERNAL_ALIGN: u64 = 64;

/// Writes a model atomically: the bytes go to a temporary file in the target folder, which is
/// renamed over `path` only once complete. External tensors go to `<file name>.data` beside it.
pub fn save_model(model: &ModelProto, path: &Path, opts: &SaveOptions) -> Result<()> {
    let mut model = model.clone();
    let too_big = model.encoded_len() > PROTOBUF_LIMIT;
    let wanted: std::collections::HashSet<&str> =
        opts.external.iter().map(|s| s.as_str()).collect();
    let data_name = format!(
        "{}.data",
        path.file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?
            .to_string_lossy()
    );
    let mut data: Vec<u8> = Vec::new();
    for_each_tensor_mut(&mut model, &mut |t| {
        let Some(raw) = t.raw_data.as_ref() else {
            return;
        };
        let big = too_big && raw.len() >= opts.auto_external_min_bytes;
        if !(wanted.contains(t.name()) || big) {
            return;
        }
        let pad = (EXTERNAL_ALIGN - data.len() as u64 % EXTERNAL_ALIGN) % EXTERNAL_ALIGN;
        data.resize(data.len() + pad as usize, 0);
        let offset = data.len();
        data.extend_from_slice(raw);
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", data_name.clone()),
            kv("offset", offset.to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = None;
    });
    let encoded = model.encode_to_vec();
    if encoded.len() > PROTOBUF_LIMIT {
        return Err(Error::Usage(format!(
            "{}: the model is {} bytes even with external data, over protobuf's 2 GiB limit",
            path.display(),
            encoded.len()
        )));
    }
    let data_path = path.with_file_name(&data_name);
    // The data file lands first so a model never points at a missing or stale data file.
    if !data.is_empty() {
        write_atomic(&data_path, &data)?;
    }
    write_atomic(path, &encoded)
}

/// The temporary file being written now (null when none), for the interrupt handler.
static WRITING: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_interrupt(sig: libc::c_int) {
    let p = WRITING.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: unlink and _exit are async-signal-safe; `p` is a NUL-terminated path kept alive
    // by write_atomic for as long as it is published.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::_exit(128 + sig);
    }
}

/// SIGINT/SIGTERM exit at once with 128 + the signal, removing the temporary file of a write in
/// progress: an interrupted run leaves neither a partial output nor a stray temporary file.
pub fn install_interrupt_cleanup() {
    let h = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    use std::os::unix::ffi::OsStrExt;
    let published = std::ffi::CString::new(tmp.as_os_str().as_bytes())
        .ok()
        .map(|c| c.into_raw());
    if let Some(p) = published {
        WRITING.store(p, std::sync::atomic::Ordering::SeqCst);
    }
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Some(p) = published {
        WRITING.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
        // SAFETY: `p` came from CString::into_raw above and is no longer published.
        drop(unsafe { std::ffi::CString::from_raw(p) });
    }
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
