//! Errors of the models crate: each names the file or setting at fault and how to fix it.

use std::path::PathBuf;

/// A models result.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// ONNX Runtime's shared library could not be found or loaded.
    #[error("ONNX Runtime could not be loaded from {path}: {reason}; fix: {fix}")]
    Runtime {
        /// Where it was looked for.
        path: String,
        /// Why it failed.
        reason: String,
        /// How to install it.
        fix: String,
    },
    /// A model file is missing, unreadable or not a valid ONNX model.
    #[error("model {path}: {reason}; fix: {fix}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// A configuration value is out of range.
    #[error("{setting}: {reason}")]
    Config {
        /// The setting, as written in the configuration.
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// ONNX Runtime failed while running a model.
    #[error("inference with {model} failed: {reason}")]
    Inference {
        /// Which model.
        model: String,
        /// ONNX Runtime's message.
        reason: String,
    },
}
