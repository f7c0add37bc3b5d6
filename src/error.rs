//! The crate's error type. Every message names what was wrong (the field, the value, the path),
//! because it usually ends up in front of a user through the C API's last-error text.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, an unknown key, or a value outside its valid range.
    #[error("config: {0}")]
    Config(String),
    /// A call's argument is invalid (a step past the end, a world size of 0, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A step or index past the end.
    #[error("{0}")]
    OutOfRange(String),
    /// A caller buffer cannot hold the result.
    #[error("{0}")]
    BufferTooSmall(String),
    /// A video could not be opened or decoded.
    #[error("{path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// Data that cannot be used: clips that fail to decode again and again, a split that
    /// exists but cannot be read.
    #[error("{0}")]
    Data(String),
    /// CUDA was asked for but is not available (no GPU, no such device, or not linked).
    #[error("{0}")]
    CudaUnavailable(String),
    /// A bug inside the library, caught before it could take the process down (a panic in a
    /// worker thread); the message says where.
    #[error("internal error: {0}")]
    Internal(String),
    /// libtorch raised an error.
    #[error("libtorch: {0}")]
    Torch(String),
    /// A callback asked to stop.
    #[error("{0}")]
    Cancelled(String),
    /// The build lacks what the call needs.
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(feature = "torch")]
impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e.to_string())
    }
}

/// Shorthand for a config error, so validation code reads as a list of rules.
pub(crate) fn config_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}
