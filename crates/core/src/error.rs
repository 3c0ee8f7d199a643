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
//! | `Io` | `E_IO` |
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
    #[error(
        "output folder `{path}` already exists and is not empty: choose another or pass force"
    )]
    OutputExists { path: PathBuf },

    #[error("no space left on the device while writing `{path}`: free some space and retry")]
    DiskFull { path: PathBuf },

    #[error("I/O error on `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    // ---- device and run control ---------------------------------------------------------------
    #[error("{message}")]
    Device { message: String },

    #[error("the operation was aborted")]
    Aborted,

    // ---- wrapped ------------------------------------------------------------------------------
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("internal error: {0}")]
    Internal(String),
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
            Error::Io { .. } => "E_IO",
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
