//! The operators' error type: who is at fault (the configuration, the data, or us) and where.

use vigil_engine::EngineError;

/// Result alias of the operators crate.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;

/// Everything that can go wrong in an operator or its setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The configuration or the data is wrong; `fix` says what to change.
    #[error("{what}; fix: {fix}")]
    User {
        /// What was wrong, with its place (camera, zone, row) when known.
        what: String,
        /// How to make it right.
        fix: String,
    },
    /// The engine refused something (a batch that does not match its stream, a file).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A broken invariant inside vigil: please report it.
    #[error("internal error (a bug in vigil, please report it): {0}")]
    Internal(String),
}

impl OperatorError {
    /// A user error with what went wrong and how to fix it.
    pub fn user(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::User { what: what.into(), fix: fix.into() }
    }
}
