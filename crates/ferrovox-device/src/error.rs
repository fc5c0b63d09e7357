use crate::BackendKind;

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device string that is not `auto`, `cpu`, `cuda`, `cuda:N` or `metal`.
    #[error("invalid device `{0}`: expected auto, cpu, cuda, cuda:N or metal")]
    InvalidRequest(String),
    /// An explicit device request that cannot be met.
    #[error("device {requested} is not available: {reason}")]
    Unavailable { requested: String, reason: String },
    /// A configuration value (environment variable or option) that cannot be used.
    #[error("invalid setting {name}={value}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Memory figures could not be read.
    #[error("cannot read memory of {backend}: {reason}")]
    Memory {
        backend: BackendKind,
        reason: String,
    },
    /// The rayon global pool could not be built.
    #[error("cannot size the CPU thread pool: {0}")]
    ThreadPool(String),
    /// A Candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the device layer.
pub type Result<T> = std::result::Result<T, Error>;
