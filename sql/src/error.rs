//! The SQL front end's error: what is wrong with a rule, where (file, line, column), and the fix.

use std::fmt;

/// Result alias of the SQL crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Where in a rule's text something is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The file (or `<psql>`, `<inline>`) the text came from.
    pub source: String,
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.line, self.column)
    }
}

/// Errors of the SQL front end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The rule is wrong: bad syntax, unknown table or column, type error, unsupported construct.
    #[error("{}{message}; fix: {fix}", position.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
    User {
        /// Where, when known.
        position: Option<Position>,
        /// What is wrong.
        message: String,
        /// How to make it right.
        fix: String,
    },
    /// The rule file could not be read.
    #[error("reading rule file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// DataFusion failed on a rule it had accepted: a bug.
    #[error("internal error (a bug in vigil, please report it): {0}")]
    Internal(String),
}

impl SqlError {
    /// A user error.
    pub fn user(position: Option<Position>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::User { position, message: message.into(), fix: fix.into() }
    }

    /// The position, for user errors that have one.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Self::User { position, .. } => position.as_ref(),
            _ => None,
        }
    }
}
