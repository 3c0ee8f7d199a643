//! The one error type of layerfold-core, and the stable codes the bindings expose.
//!
//! Codes are part of the public API (README, "Errors"): never rename or reuse one, only add.
//!
//! | variant | code |
//! | --- | --- |
//! | `NotFound` | `E_NOT_FOUND` |
//! | `ModelFormat`, `MissingTensor`, `TensorShape` | `E_MODEL_FORMAT` |
//! | `Unsupported` | `E_UNSUPPORTED` |
//! | `Config` | `E_CONFIG` |
//! | `Data` | `E_DATA` |
//! | `OutputExists` | `E_OUTPUT_EXISTS` |
//! | `DiskFull` | `E_DISK_FULL` |
//! | `Io`, `Unwritable` | `E_IO` |
//! | `OutOfMemory` | `E_OOM` |
//! | `Device` | `E_DEVICE` |
//! | `Aborted` | `E_ABORTED` |
//! | `Candle`, `Internal` | `E_INTERNAL` |

use std::path::{Path, PathBuf};

/// Everything that can go wrong in layerfold-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- input files --------------------------------------------------------------------------
    #[error("{what} `{path}` does not exist: {hint}")]
    NotFound { what: &'static str, path: PathBuf, hint: String },

    #[error("`{path}` is not a valid {format}: {reason}")]
    ModelFormat { path: PathBuf, format: &'static str, reason: String },

    #[error(
        "tensor `{name}` is missing from `{path}`: the checkpoint is incomplete or not a \
         Llama-family model"
    )]
    MissingTensor { path: PathBuf, name: String },

    #[error(
        "tensor `{name}` in `{path}` has shape {got:?}, but the configuration implies {expected:?}: \
         config.json does not match the weights"
    )]
    TensorShape { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("{what} is not supported: {hint}")]
    Unsupported { what: String, hint: String },

    // ---- options and data ---------------------------------------------------------------------
    #[error("invalid option `{field}`: {message}")]
    Config { field: String, message: String },

    #[error("{message}")]
    Data { message: String },

    // ---- output -------------------------------------------------------------------------------
    #[error("output folder `{path}` already exists and is not empty: {hint}")]
    OutputExists { path: PathBuf, hint: String },

    #[error("no space left on the device while writing `{path}`: free some space and retry")]
    DiskFull { path: PathBuf },

    #[error("I/O error on `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("cannot write the output `{path}`: {source}; choose a folder you can write to")]
    Unwritable { path: PathBuf, source: std::io::Error },

    // ---- resources ----------------------------------------------------------------------------
    #[error(
        "{what} needs {} of memory, but {} is available: {hint}",
        gib(*needed), gib(*available)
    )]
    OutOfMemory { what: String, needed: u64, available: u64, hint: String },

    // ---- device and run control ---------------------------------------------------------------
    #[error("{message}")]
    Device { message: String },

    #[error("the operation was aborted")]
    Aborted,

    // ---- wrapped ------------------------------------------------------------------------------
    /// A candle error that no check before it caught: a bug. Built by `From`, which drops the
    /// backtrace candle attaches under `RUST_BACKTRACE` (messages never carry one).
    #[error(transparent)]
    Candle(candle_core::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(without_backtrace(e))
    }
}

/// `e` without the `WithBacktrace` layers candle adds when `RUST_BACKTRACE` is set.
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => without_backtrace(*inner),
        E::Context { inner, context } => {
            E::Context { inner: Box::new(without_backtrace(*inner)), context }
        }
        E::WithPath { inner, path } => {
            E::WithPath { inner: Box::new(without_backtrace(*inner)), path }
        }
        other => other,
    }
}

/// The crate's `Result`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The stable code the bindings expose as the JS error's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "E_NOT_FOUND",
            Error::ModelFormat { .. } | Error::MissingTensor { .. } | Error::TensorShape { .. } => {
                "E_MODEL_FORMAT"
            }
            Error::Unsupported { .. } => "E_UNSUPPORTED",
            Error::Config { .. } => "E_CONFIG",
            Error::Data { .. } => "E_DATA",
            Error::OutputExists { .. } => "E_OUTPUT_EXISTS",
            Error::DiskFull { .. } => "E_DISK_FULL",
            Error::Io { .. } | Error::Unwritable { .. } => "E_IO",
            Error::OutOfMemory { .. } => "E_OOM",
            Error::Device { .. } => "E_DEVICE",
            Error::Aborted => "E_ABORTED",
            Error::Candle(_) | Error::Internal(_) => "E_INTERNAL",
        }
    }

    /// An I/O error on `path`, classified: a missing file becomes `NotFound`, a full disk `DiskFull`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        match source.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound { what: "file", path, hint: "check the path".into() }
            }
            std::io::ErrorKind::StorageFull => Error::DiskFull { path },
            _ => Error::Io { path, source },
        }
    }

    /// `self` with every path under `from` shown under `to` instead: errors met while writing a
    /// staging folder name the target the user gave (`output::StagingDir::relocate`).
    pub fn relocate(self, from: &Path, to: &Path) -> Self {
        let moved = |p: PathBuf| match p.strip_prefix(from) {
            Ok(rest) => to.join(rest),
            Err(_) => p,
        };
        match self {
            Error::NotFound { what, path, hint } => {
                Error::NotFound { what, path: moved(path), hint }
            }
            Error::DiskFull { path } => Error::DiskFull { path: moved(path) },
            Error::Io { path, source } => Error::Io { path: moved(path), source },
            Error::Unwritable { path, source } => Error::Unwritable { path: moved(path), source },
            Error::Internal(message) => Error::Internal(
                message.replace(&from.display().to_string(), &to.display().to_string()),
            ),
            other => other,
        }
    }

    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { field: field.into(), message: message.into() }
    }

    pub fn format(path: impl AsRef<Path>, format: &'static str, reason: impl ToString) -> Self {
        Error::ModelFormat { path: path.as_ref().to_path_buf(), format, reason: reason.to_string() }
    }

    pub fn unsupported(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into(), hint: hint.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let missing = Error::io("/x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(missing.code(), "E_NOT_FOUND");
        let full = Error::io("/x", std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(full.code(), "E_DISK_FULL");
        let other = Error::io("/x", std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(other.code(), "E_IO");
    }
}
