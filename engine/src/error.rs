//! The engine's error type: who is at fault (user, outside world, or us) and where.
//!
//! Variants are grouped the way an operator of vigil needs to act on them: a *user* error
//! (bad configuration, bad data) is fixed by editing the input named in the error; an
//! *external* error (disk full, a camera gone) may go away on retry; an *internal* error is a
//! bug in vigil and should be reported.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The caller supplied something the engine cannot accept; `fix` says what to change.
    #[error("{what}; fix: {fix}")]
    User {
        /// What was wrong, with its place (file, line, camera) when known.
        what: String,
        /// How to make it right.
        fix: String,
    },
    /// An I/O failure writing or reading a file; usually retryable (disk full, permissions).
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing (`creating`, `writing`, `renaming`, ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Arrow or Parquet refused data the engine built: a bug unless the disk is at fault.
    #[error("{context}: {source}")]
    Arrow {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Parquet encoding failed.
    #[error("{context}: {source}")]
    Parquet {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A batch that does not match its stream's definition (a missing column, another type):
    /// a bug when vigil built the batch, bad data when it was read from a file.
    #[error("{0}")]
    Schema(String),
    /// A broken invariant inside vigil: please report it.
    #[error("internal error (a bug in vigil, please report it): {0}")]
    Internal(String),
}

impl EngineError {
    /// A user error with what went wrong and how to fix it.
    pub fn user(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::User { what: what.into(), fix: fix.into() }
    }

    /// Wraps an I/O error with the operation and path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// Where operators report the errors they survive (a batch they cannot read, a rule that fails
/// on one batch): the application logs and counts them; the dataflow goes on. Errors the run must
/// not survive (a sink that cannot write: going on would lose accepted rows silently) are
/// reported with [`fatal`](Self::fatal); the driver polls [`fatal_cause`](Self::fatal_cause)
/// and stops the run loudly.
#[derive(Clone)]
pub struct ErrorSink {
    report: std::sync::Arc<Report>,
    fatal: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// What an [`ErrorSink`] calls: `(operator, message)`.
type Report = dyn Fn(&str, String) + Send + Sync;

impl ErrorSink {
    /// Reports to `f(operator, message)`.
    pub fn new(f: impl Fn(&str, String) + Send + Sync + 'static) -> Self {
        Self { report: std::sync::Arc::new(f), fatal: Default::default() }
    }

    /// Reports to the log only (tests, tools).
    pub fn log() -> Self {
        Self::new(|who, e| tracing::error!("{who}: {e}"))
    }

    /// Reports `e`, raised by `who` (an operator's or rule's name).
    pub fn report(&self, who: &str, e: impl std::fmt::Display) {
        (self.report)(who, e.to_string())
    }

    /// Reports `e` as an error the run must stop for; the first one is its cause.
    pub fn fatal(&self, who: &str, e: impl std::fmt::Display) {
        let message = e.to_string();
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("{who}: {message}"));
        (self.report)(who, message)
    }

    /// The first fatal error reported, if any.
    pub fn fatal_cause(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for ErrorSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorSink").field("fatal", &self.fatal_cause()).finish()
    }
}
