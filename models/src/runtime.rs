//! ONNX Runtime, loaded at run time: where the library comes from, and sessions over model files.
//!
//! `ort` is built with `load-dynamic`, so the binary carries no ONNX Runtime and the build never
//! downloads one. The library is `libonnxruntime.so.1.31.1` from the PyPI wheel
//! `onnxruntime==1.31.1` (its `onnxruntime/capi/` directory), which `scripts/setup-models`
//! installs into the project. It is found, in order, from the path given in the configuration
//! (`[models] onnxruntime`), from `$ORT_DYLIB_PATH`, or in the project's `.venv`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;

use crate::error::{ModelError, Result};

/// The ONNX Runtime release the `ort` bindings are built against (API 31).
pub const ORT_VERSION: &str = "1.31.1";

const INSTALL: &str = "install it with `scripts/setup-models` (pip installs onnxruntime==1.31.1 into .venv), \
     or set ORT_DYLIB_PATH or [models] onnxruntime to libonnxruntime.so.1.31.1";

/// The process-wide environment. ONNX Runtime's library is loaded once per process; a failed
/// load is not cached, so a corrected path can be tried again.
static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);

/// Finds the library: the explicit path, `$ORT_DYLIB_PATH`, or a `.venv` above the working
/// directory or the executable.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let lib = dir.join(".venv/lib");
            let Ok(entries) = std::fs::read_dir(&lib) else { continue };
            for e in entries.flatten() {
                let p = e
                    .path()
                    .join("site-packages/onnxruntime/capi")
                    .join(format!("libonnxruntime.so.{ORT_VERSION}"));
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    Err(ModelError::Runtime {
        path: "(ORT_DYLIB_PATH unset, no .venv with onnxruntime found)".into(),
        reason: "libonnxruntime is not installed".into(),
        fix: INSTALL.into(),
    })
}

/// Loads ONNX Runtime (once per process) and returns its environment.
pub fn environment(explicit: Option<&Path>) -> Result<ort::environment::Environment> {
    let mut env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = env.as_ref() {
        return Ok(e.clone());
    }
    let path = locate(explicit)?;
    let failed = |reason: String| ModelError::Runtime {
        path: path.display().to_string(),
        reason,
        fix: INSTALL.into(),
    };
    if !path.is_file() {
        return Err(failed("no such file".into()));
    }
    let built = ort::init_from(&path)
        .map_err(|e| failed(e.to_string()))?
        .with_name("vigil")
        .build()
        .map_err(|e| failed(e.to_string()))?;
    *env = Some(built.clone());
    Ok(built)
}

/// Opens a session over a model file with `threads` intra-op threads.
pub fn session(env: &ort::environment::Environment, model: &Path, threads: usize) -> Result<Session> {
    let bad =
        |reason: String, fix: &str| ModelError::Model { path: model.to_path_buf(), reason, fix: fix.into() };
    let bytes =
        std::fs::read(model).map_err(|e| bad(e.to_string(), "check the model path in the configuration"))?;
    let builder =
        Session::builder(env).map_err(|e| bad(e.to_string(), "check the ONNX Runtime installation"))?;
    let mut builder = builder
        .with_intra_threads(threads.max(1))
        .map_err(|e| bad(e.to_string(), "use a positive thread count"))?;
    builder.commit_from_memory(&bytes).map_err(|e| {
        bad(
            format!("ONNX Runtime refused it: {e}"),
            "give the path of a valid .onnx file (an export, not a checkpoint such as .pt)",
        )
    })
}

/// The input shape `[N, C, H, W]` of a session's first input, with `-1` for dynamic sizes.
pub fn input_shape(session: &Session) -> Option<Vec<i64>> {
    let input = session.inputs().first()?;
    input.dtype().tensor_shape().map(|s| s.iter().copied().collect())
}
