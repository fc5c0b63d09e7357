/// Errors of the VITS crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file that does not describe a usable VITS model.
    #[error("invalid VITS config: {0}")]
    Config(String),
    /// A checkpoint that lacks a tensor or has one of the wrong shape.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    /// An ONNX file that cannot be read or is not a Piper VITS export.
    #[error("ONNX model {path}: {reason}")]
    Onnx { path: String, reason: String },
    /// Input the model cannot synthesize.
    #[error("invalid input: {0}")]
    Input(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A Candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the VITS crate.
pub type Result<T> = std::result::Result<T, Error>;
