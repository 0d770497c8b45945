//! One error type for the whole crate. Every message names where the problem is (a file and a
//! field, or an option of a spec string) and why, on one line.

use std::fmt;

/// Where a problem was found: a file (or an in-memory source) and, inside it, a field path
/// such as `covs[2][0][1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{}`", self.source, field),
            None => write!(f, "{}", self.source),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or invalid content of an input (a problem file, an in-memory mixture, ...).
    #[error("{at}: {reason}")]
    Invalid { at: Location, reason: String },
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    /// A bad `name:key=value,...` spec (schedule, grid, solver).
    #[error("{what} '{spec}': {reason}")]
    Spec {
        what: &'static str,
        spec: String,
        reason: String,
    },
    /// Arrays whose shapes do not fit together.
    #[error("dimension mismatch: {0}")]
    Dimension(String),
    /// A value outside the domain where it is defined (time outside a schedule's range, ...).
    #[error("{0}")]
    Domain(String),
}

impl Error {
    pub fn invalid(
        source: impl Into<String>,
        field: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            at: Location {
                source: source.into(),
                field,
            },
            reason: reason.into(),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, err: impl fmt::Display) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            reason: err.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
