/// Errors of the Chatterbox crate, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config that does not describe a usable model.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A checkpoint that lacks a tensor or has one of the wrong shape.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    /// Input the model cannot synthesize (token out of range, empty sequence, bad reference).
    #[error("invalid input: {0}")]
    Input(String),
    /// A Candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the Chatterbox crate.
pub type Result<T> = std::result::Result<T, Error>;
