//! The SQL front end's error: what is wrong with a rule, of which kind, where (file, line,
//! column), and the fix.
//!
//! The [`Kind`] of an error decides its SQLSTATE on the psql endpoint ([`Kind::sqlstate`]),
//! so clients can branch on the code rather than on English text.

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

/// What kind of user error: each has its SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The text does not parse (42601).
    Syntax,
    /// A table or stream that does not exist (42P01).
    UndefinedTable,
    /// A column that does not exist (42703).
    UndefinedColumn,
    /// A name that means two columns (42702).
    AmbiguousColumn,
    /// A function that does not exist (42883).
    UndefinedFunction,
    /// A rule that does not exist (42704).
    UndefinedObject,
    /// A rule of that name exists already (42710).
    DuplicateObject,
    /// Two tables in one FROM under one name (42712).
    DuplicateAlias,
    /// Types that do not match (42804).
    Datatype,
    /// A construct vigil cannot maintain incrementally (0A000).
    Unsupported,
    /// A bad option value (22023).
    InvalidParameter,
    /// Anything else wrong with the statement (42000).
    Invalid,
    /// Over a limit on size, depth or cost (54000); the message says which and by how much.
    ProgramLimit,
    /// Stopped: over its time, or its client went away (57014).
    Canceled,
    /// Not allowed for the user's role (42501).
    Permission,
}

impl Kind {
    /// The PostgreSQL error code.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Kind::Syntax => "42601",
            Kind::UndefinedTable => "42P01",
            Kind::UndefinedColumn => "42703",
            Kind::AmbiguousColumn => "42702",
            Kind::UndefinedFunction => "42883",
            Kind::UndefinedObject => "42704",
            Kind::DuplicateObject => "42710",
            Kind::DuplicateAlias => "42712",
            Kind::Datatype => "42804",
            Kind::Unsupported => "0A000",
            Kind::InvalidParameter => "22023",
            Kind::Invalid => "42000",
            Kind::ProgramLimit => "54000",
            Kind::Canceled => "57014",
            Kind::Permission => "42501",
        }
    }
}

/// Errors of the SQL front end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The rule is wrong: bad syntax, unknown table or column, type error, unsupported construct.
    #[error("{}{message}; fix: {fix}", position.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
    User {
        /// Of which kind.
        kind: Kind,
        /// Where, when known.
        position: Option<Position>,
        /// What is wrong.
        message: String,
        /// How to make it right.
        fix: String,
    },
    /// The rule file or the rules catalog could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The engine is stopping (or has stopped): no rule can be added or dropped.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// DataFusion failed on a rule it had accepted: a bug.
    #[error("internal error (a bug in vigil, please report it): {0}")]
    Internal(String),
}

impl SqlError {
    /// A user error of kind [`Kind::Syntax`] (set another with [`kind`](Self::kind)).
    pub fn user(position: Option<Position>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::User { kind: Kind::Syntax, position, message: message.into(), fix: fix.into() }
    }

    /// The same error, of kind `kind` (user errors only).
    pub fn kind(mut self, kind: Kind) -> Self {
        if let Self::User { kind: k, .. } = &mut self {
            *k = kind;
        }
        self
    }

    /// The position, for user errors that have one.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Self::User { position, .. } => position.as_ref(),
            _ => None,
        }
    }

    /// The PostgreSQL error code.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::User { kind, .. } => kind.sqlstate(),
            Self::Io { .. } => "58030",
            Self::ShuttingDown => "57P01",
            Self::Internal(_) => "XX000",
        }
    }
}
