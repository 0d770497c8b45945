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

/// The error type. Its message is always one line: a line break or other control character that
/// input carried into it (a file name, a spec string, a parser's report) is written escaped.
#[derive(Debug)]
pub enum Error {
    /// Malformed or invalid content of an input (a problem file, an in-memory mixture, ...).
    Invalid { at: Location, reason: String },
    /// A file could not be read or written.
    Io { path: String, reason: String },
    /// A bad `name:key=value,...` spec (schedule, grid, solver).
    Spec {
        what: &'static str,
        spec: String,
        reason: String,
    },
    /// Arrays whose shapes do not fit together.
    Dimension(String),
    /// A value outside the domain where it is defined (time outside a schedule's range, ...).
    Domain(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Invalid { at, reason } => format!("{at}: {reason}"),
            Error::Io { path, reason } => format!("{path}: {reason}"),
            Error::Spec { what, spec, reason } => format!("{what} '{spec}': {reason}"),
            Error::Dimension(m) => format!("dimension mismatch: {m}"),
            Error::Domain(m) => m.clone(),
        };
        for c in text.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

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
