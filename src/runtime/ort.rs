//! onnxruntime through `ort` (load-dynamic): finding the shared library, one process-wide
//! environment, sessions on CPU or CUDA (never silently falling back to CPU), and tensor
//! conversion.

use crate::error::{Error, Result};
use crate::tensor::{DType, Data, Tensor};
use ndarray::{ArrayD, IxDyn};
use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::{DynValue, TensorElementType, ValueType};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

const HOW_TO_GET: &str = "run scripts/setup.sh (it unpacks libonnxruntime.so.* from the pinned \
onnxruntime wheel into .deps/ort/), or set ORT_DYLIB_PATH to a libonnxruntime.so of version ≥ 1.31";

fn versioned_lib_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Where the onnxruntime library is: `ORT_DYLIB_PATH`, else `.deps/ort/` of this project (found
/// from the executable's folder upwards, then from the source tree it was built in), else the
/// usual system folders.
pub fn find_dylib() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Runtime(format!(
                "ORT_DYLIB_PATH={} does not name a file; {HOW_TO_GET}",
                p.display()
            )))
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1) {
            dirs.push(anc.join(".deps").join("ort"));
        }
    }
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".deps")
            .join("ort"),
    );
    dirs.extend(["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"].map(PathBuf::from));
    dirs.iter()
        .find_map(|d| versioned_lib_in(d))
        .ok_or_else(|| Error::Runtime(format!("onnxruntime library not found; {HOW_TO_GET}")))
}

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static ort::environment::Environment> {
    ENV.get_or_init(|| {
        let path = find_dylib().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
        builder
            .with_name("onnx-prune")
            .build()
            .map_err(|e| format!("onnxruntime environment from {}: {e}", path.display()))
    })
    .as_ref()
    .map_err(|e| Error::Runtime(e.clone()))
}

/// One onnxruntime session.
pub struct OrtSession {
    session: Session,
    pub device: Device,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl OrtSession {
    /// Creates a session from model bytes. External data, if any, is resolved relative to
    /// `model_dir`. `threads` = 0 lets onnxruntime choose.
    pub fn new(
        model: &[u8],
        model_dir: Option<&Path>,
        device: Device,
        threads: usize,
    ) -> Result<Self> {
        let env = environment()?;
        let rt = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            Error::Runtime(format!("onnxruntime: {e}"))
        };
        let mut b = Session::builder(env)
            .map_err(|e| Error::Runtime(format!("onnxruntime: {e}")))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(rt)?;
        if threads > 0 {
            b = b.with_intra_threads(threads).map_err(rt)?;
        }
        if device == Device::Cuda {
            b = b
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    Error::Runtime(format!("CUDA is not available to onnxruntime: {e}"))
                })?;
        }
        let session = match model_dir {
            // Models with external data must be read from their folder.
            Some(dir) => {
                // Unique per session, not per process: threads of one process (parallel tests,
                // a library user's workers) load at the same time, and one's remove_file broke
                // another's load.
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tmp = dir.join(format!(".onnx-prune-ort-{}-{n}.onnx", std::process::id()));
                std::fs::write(&tmp, model).map_err(|e| Error::io(&tmp, e))?;
                let s = b.commit_from_file(&tmp);
                let _ = std::fs::remove_file(&tmp);
                s
            }
            None => b.commit_from_memory(model),
        }
        .map_err(|e| Error::Runtime(format!("onnxruntime could not load the model: {e}")))?;
        let input_names = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtSession {
            session,
            device,
            input_names,
            output_names,
        })
    }

    pub fn from_file(path: &Path, device: Device, threads: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::new(&bytes, path.parent(), device, threads)
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Runs the model on named inputs; returns every graph output in declaration order.
    pub fn run(&mut self, feeds: &[(String, Tensor<f32>)]) -> Result<Vec<(String, Tensor<f32>)>> {
        let mut inputs: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::new();
        for (name, t) in feeds {
            inputs.push((name.as_str().into(), to_ort(name, t)?.into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| Error::Runtime(format!("onnxruntime run failed: {e}")))?;
        self.output_names
            .iter()
            .map(|n| {
                let v = outputs.get(n).ok_or_else(|| {
                    Error::Runtime(format!("onnxruntime returned no output {n:?}"))
                })?;
                Ok((n.clone(), from_ort(n, v)?))
            })
            .collect()
    }
}

impl OrtSession {
    /// Like `run`, but an output whose element type or kind has no `Tensor` form (a sequence,
    /// float16, strings) comes back as `None` instead of failing the run.
    pub fn run_lenient(
        &mut self,
        feeds: &[(String, Tensor<f32>)],
    ) -> Result<Vec<(String, Option<Tensor<f32>>)>> {
        let mut inputs: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::new();
        for (name, t) in feeds {
            inputs.push((name.as_str().into(), to_ort(name, t)?.into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| Error::Runtime(format!("onnxruntime run failed: {e}")))?;
        Ok(self
            .output_names
            .iter()
            .map(|n| (n.clone(), outputs.get(n).and_then(|v| from_ort(n, v).ok())))
            .collect())
    }
}

fn to_ort(name: &str, t: &Tensor<f32>) -> Result<DynValue> {
    let err = |e: ort::Error| Error::Runtime(format!("input {name:?}: {e}"));
    let v: DynValue = match (&t.data, t.dtype) {
        (Data::Float(a), DType::F64) => ort::value::Tensor::from_array(a.mapv(|x| x as f64))
            .map_err(err)?
            .into_dyn(),
        (Data::Float(a), DType::F32) => ort::value::Tensor::from_array(a.to_owned())
            .map_err(err)?
            .into_dyn(),
        (Data::Int(a), DType::I64) => ort::value::Tensor::from_array(a.to_owned())
            .map_err(err)?
            .into_dyn(),
        (Data::Int(a), DType::I32) => ort::value::Tensor::from_array(a.mapv(|x| x as i32))
            .map_err(err)?
            .into_dyn(),
        (Data::Int(a), DType::U8) => ort::value::Tensor::from_array(a.mapv(|x| x as u8))
            .map_err(err)?
            .into_dyn(),
        (Data::Int(a), DType::I8) => ort::value::Tensor::from_array(a.mapv(|x| x as i8))
            .map_err(err)?
            .into_dyn(),
        (Data::Bool(a), _) => ort::value::Tensor::from_array(a.to_owned())
            .map_err(err)?
            .into_dyn(),
        _ => {
            return Err(Error::Data(format!(
                "input {name:?}: element type {} is not passed to onnxruntime",
                t.dtype
            )));
        }
    };
    Ok(v)
}

fn from_ort(name: &str, v: &DynValue) -> Result<Tensor<f32>> {
    let err = |e: ort::Error| Error::Runtime(format!("output {name:?}: {e}"));
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(Error::Runtime(format!("output {name:?} is not a tensor")));
    };
    fn own<T: Clone>(a: ndarray::ArrayViewD<'_, T>) -> ArrayD<T> {
        a.to_owned().into_dimensionality::<IxDyn>().expect("dyn")
    }
    Ok(match ty {
        TensorElementType::Float32 => {
            Tensor::f32(own(v.try_extract_array::<f32>().map_err(err)?))
        }
        TensorElementType::Float64 => Tensor::float(
            DType::F64,
            v.try_extract_array::<f64>()
                .map_err(err)?
                .mapv(|x| x as f32),
        ),
        TensorElementType::Int64 => Tensor::i64(own(v.try_extract_array::<i64>().map_err(err)?)),
        TensorElementType::Int32 => Tensor::int(
            DType::I32,
            v.try_extract_array::<i32>().map_err(err)?.mapv(i64::from),
        ),
        TensorElementType::Uint8 => Tensor::int(
            DType::U8,
            v.try_extract_array::<u8>().map_err(err)?.mapv(i64::from),
        ),
        TensorElementType::Int8 => Tensor::int(
            DType::I8,
            v.try_extract_array::<i8>().map_err(err)?.mapv(i64::from),
        ),
        TensorElementType::Bool => Tensor::bool(own(v.try_extract_array::<bool>().map_err(err)?)),
        other => {
            return Err(Error::Runtime(format!(
                "output {name:?} has unsupported type {other:?}"
            )));
        }
    })
}
