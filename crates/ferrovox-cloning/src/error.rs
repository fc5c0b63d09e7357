//! Why a voice could not be cloned or spoken.

use ferrovox_audio::ReferenceError;
use ferrovox_voices::{Family, VoiceError};

/// Why cloning a voice, or preparing a stored one, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloneError {
    /// The reference clip was refused (unreadable, too short, silent, clipped, too large...).
    #[error("reference audio: {0}")]
    Clip(#[from] ReferenceError),
    /// The model to clone for is not one this service knows.
    #[error("unknown model `{model}`; available: {available}")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The models that can clone here.
        available: String,
    },
    /// The model's family has no voice encoders.
    #[error("`{model}` is a {} model, which has no voice encoders (cloning needs chatterbox)", family.name())]
    NotClonable {
        /// The model asked for.
        model: String,
        /// Its family.
        family: Family,
    },
    /// A stored voice whose family or encoders no loaded model shares.
    #[error("voice `{id}` was cloned for {family} (encoders {version}), which no loaded model speaks; loaded: {loaded}")]
    NoModelFor {
        /// The stored voice.
        id: String,
        /// Its family, as stored.
        family: String,
        /// Its encoders' version, as stored.
        version: String,
        /// The loaded models that clone or speak cloned voices.
        loaded: String,
    },
    /// The model's files could not be found or fetched.
    #[error("model `{model}`: {source}")]
    Model {
        /// The model asked for.
        model: String,
        /// What went wrong.
        source: VoiceError,
    },
    /// Reading the model's encoder files failed.
    #[error("model `{model}`: reading {what}: {source}")]
    Io {
        /// The model.
        model: String,
        /// The file.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Chatterbox's encoders refused the clip, or failed.
    #[error(transparent)]
    Chatterbox(#[from] ferrovox_chatterbox::Error),
}

impl CloneError {
    /// Whether the caller's input (the clip, the model named) is at fault, rather than the
    /// service: a client error, not a server error.
    pub fn is_client_error(&self) -> bool {
        match self {
            Self::Clip(e) => !matches!(
                e,
                ReferenceError::Read { .. } | ReferenceError::Loudness { .. }
            ),
            Self::UnknownModel { .. } | Self::NotClonable { .. } | Self::NoModelFor { .. } => true,
            Self::Chatterbox(e) => matches!(e, ferrovox_chatterbox::Error::Input(_)),
            Self::Model { .. } | Self::Io { .. } => false,
        }
    }
}
