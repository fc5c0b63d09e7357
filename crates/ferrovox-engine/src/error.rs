/// Errors of the engine, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Text with nothing to say.
    #[error("nothing to speak: {0}")]
    EmptyInput(String),
    /// An option outside its range.
    #[error("invalid {field}: {reason}")]
    InvalidOption {
        /// The option's name.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The voice could not be resolved.
    #[error(transparent)]
    Voice(#[from] ferrovox_voices::VoiceError),
    /// The text front end failed.
    #[error(transparent)]
    Text(#[from] ferrovox_text::TextError),
    /// A VITS model failed, or refused its input.
    #[error(transparent)]
    Model(#[from] ferrovox_vits::Error),
    /// A Chatterbox model failed, or refused its input.
    #[error(transparent)]
    Chatterbox(#[from] ferrovox_chatterbox::Error),
    /// Something this engine does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request queue is full; try again later.
    #[error("overloaded: the request queue is full")]
    Overloaded,
    /// Whoever the audio was for stopped listening (a client that went away).
    #[error("cancelled: the receiver went away")]
    Cancelled,
    /// The model panicked while synthesizing (a bug, or a fault it did not report as an
    /// error); the requests batched with this one are run again without it.
    #[error("the model {model} failed: it panicked: {what}")]
    Panicked {
        /// The model's id.
        model: String,
        /// The panic's message.
        what: String,
    },
    /// The batcher stopped.
    #[error("the batcher has shut down")]
    ShutDown,
}

impl EngineError {
    /// Whether the caller's text or options caused the error, rather than the voice, the
    /// model or the machine.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Self::EmptyInput(_)
                | Self::InvalidOption { .. }
                | Self::Text(_)
                | Self::Model(ferrovox_vits::Error::Input(_))
                | Self::Chatterbox(ferrovox_chatterbox::Error::Input(_))
        )
    }
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(e.into())
    }
}
