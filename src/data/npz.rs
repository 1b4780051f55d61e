use crate::error::{Error, Result};
use crate::tensor::{DType, Data, Tensor};
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement};
use std::fs::File;
use std::path::Path;

/// Something that can be read as an array of a chosen element type.
trait ArraySource {
    fn read<T: ReadableElement>(&mut self) -> std::result::Result<ArrayD<T>, ReadNpyError>;
}

struct NpzEntry<'a> {
    npz: &'a mut NpzReader<File>,
    name: &'a str,
}

impl ArraySource for NpzEntry<'_> {
    fn read<T: ReadableElement>(&mut self) -> std::result::Result<ArrayD<T>, ReadNpyError> {
        self.npz
            .by_name::<OwnedRepr<T>, IxDyn>(self.name)
            .map_err(|e| match e {
                ReadNpzError::Npy(n) => n,
                ReadNpzError::Zip(z) => ReadNpyError::Io(std::io::Error::other(z)),
            })
    }
}

struct NpyFile<'a>(&'a Path);

impl ArraySource for NpyFile<'_> {
    fn read<T: ReadableElement>(&mut self) -> std::result::Result<ArrayD<T>, ReadNpyError> {
        ArrayD::<T>::read_npy(File::open(self.0).map_err(ReadNpyError::Io)?)
    }
}

/// Reads an array whose element type is only known from its header, trying each type numpy
/// commonly writes until the descriptor matches.
fn decode(src: &mut impl ArraySource) -> std::result::Result<Tensor<f32>, String> {
    macro_rules! attempt {
        ($t:ty, $conv:expr) => {
            match src.read::<$t>() {
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Ok(a) => return Ok($conv(a)),
                Err(e) => return Err(e.to_string()),
            }
        };
    }
    attempt!(f32, Tensor::f32);
    attempt!(f64, |a: ArrayD<f64>| Tensor::float(
        DType::F64,
        a.mapv(|v| v as f32)
    ));
    attempt!(i64, Tensor::i64);
    attempt!(i32, |a: ArrayD<i32>| Tensor::int(
        DType::I32,
        a.mapv(i64::from)
    ));
    attempt!(u8, |a: ArrayD<u8>| Tensor::int(
        DType::U8,
        a.mapv(i64::from)
    ));
    attempt!(bool, Tensor::bool);
    Err("unsupported element type (float32/64, int64/32, uint8 and bool are read)".into())
}

/// Reads every array of an `.npz` file, in file order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor<f32>)>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Data(format!("{}: {m}", path.display()));
    let mut npz = NpzReader::new(file).map_err(|e| bad(format!("not an .npz file: {e}")))?;
    let names = npz.names().map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let t = decode(&mut NpzEntry {
            npz: &mut npz,
            name: &name,
        })
        .map_err(|m| bad(format!("array {name:?}: {m}")))?;
        out.push((name, t));
    }
    Ok(out)
}

pub fn read_npy(path: &Path) -> Result<Tensor<f32>> {
    decode(&mut NpyFile(path)).map_err(|m| Error::Data(format!("{}: {m}", path.display())))
}

/// Reads `.npz` (all arrays) or `.npy` (one array, named after the file stem).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor<f32>)>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(vec![(stem, read_npy(path)?)])
        }
        _ => read_npz(path),
    }
}

/// Writes tensors as an `.npz` (atomically: temporary file, then rename).
pub fn write_npz(path: &Path, tensors: &[(String, Tensor<f32>)]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let res = (|| -> std::result::Result<(), String> {
        let file = File::create(&tmp).map_err(|e| e.to_string())?;
        let mut npz = NpzWriter::new(file);
        for (name, t) in tensors {
            let key = name.clone();
            let r = match (&t.data, t.dtype) {
                (Data::Float(a), DType::F64) => npz.add_array(key, &a.mapv(|v| v as f64)),
                (Data::Float(a), _) => npz.add_array(key, &a.to_owned()),
                (Data::Int(a), DType::I32) => npz.add_array(key, &a.mapv(|v| v as i32)),
                (Data::Int(a), _) => npz.add_array(key, &a.to_owned()),
                (Data::Bool(a), _) => npz.add_array(key, &a.to_owned()),
            };
            r.map_err(|e| format!("array {name:?}: {e}"))?;
        }
        let f = npz.finish().map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    })();
    if let Err(m) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Data(format!("{}: {m}", path.display())));
    }
    Ok(())
}
