//! Every way a request can fail, and the one place that maps each to an HTTP status and an
//! OpenAI-style error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrovox_engine::EngineError;
use ferrovox_voices::VoiceError;

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("{0}")]
    BadRequest(String),
    /// The input holds nothing to speak.
    #[error("input: {0}")]
    EmptyInput(String),
    /// A field with a wrong or out-of-range value.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The field, as a JSON path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A body over the size limit.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A voice this server does not serve.
    #[error("unknown voice `{voice}`; available: {available}")]
    UnknownVoice {
        /// The voice asked for.
        voice: String,
        /// Voices served.
        available: String,
    },
    /// A model this server does not serve.
    #[error("unknown model `{model}`; available: {available}")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// Models served.
        available: String,
    },
    /// A route this server does not serve as configured (voice cloning without a store).
    #[error("{0}")]
    NotFound(String),
    /// Too many requests in flight or queued.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// Voices are still loading, or the server is shutting down.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A served voice that failed to load (the server was told to serve the others).
    #[error("voice `{voice}` is unavailable: it failed to load: {reason}")]
    VoiceUnavailable {
        /// The voice asked for.
        voice: String,
        /// Why it did not load.
        reason: String,
    },
    /// The server's storage has no room for what the request would store (a cloned voice).
    #[error("insufficient storage: {0}")]
    OutOfStorage(String),
    /// Synthesis failed.
    #[error("synthesis failed: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::EmptyInput(_) => StatusCode::BAD_REQUEST,
            Self::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownVoice { .. } | Self::UnknownModel { .. } | Self::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady(_) | Self::VoiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::OutOfStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable name, used in error bodies and as the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::EmptyInput(_) => "empty_input",
            Self::InvalidField { .. } => "invalid_field",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownVoice { .. } => "unknown_voice",
            Self::UnknownModel { .. } => "unknown_model",
            Self::NotFound(_) => "not_found",
            Self::Overloaded(_) => "overloaded",
            Self::NotReady(_) => "not_ready",
            Self::VoiceUnavailable { .. } => "voice_unavailable",
            Self::OutOfStorage(_) => "insufficient_storage",
            Self::Internal(_) => "internal",
        }
    }

    /// The OpenAI-style error object.
    pub fn body(&self) -> serde_json::Value {
        let param = match self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            Self::UnknownVoice { .. } | Self::VoiceUnavailable { .. } => Some("voice"),
            Self::UnknownModel { .. } => Some("model"),
            Self::EmptyInput(_) => Some("input"),
            _ => None,
        };
        let kind = if self.status().is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": kind,
                "param": param,
                "code": self.kind(),
            }
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::EmptyInput(m) => Self::EmptyInput(m),
            EngineError::InvalidOption { field, reason } => Self::InvalidField {
                field: field.to_string(),
                reason,
            },
            EngineError::Overloaded => Self::Overloaded("the batch queue is full".into()),
            EngineError::ShutDown => Self::NotReady("shutting down".into()),
            EngineError::Voice(VoiceError::Unknown { id, known }) => Self::UnknownVoice {
                voice: id,
                available: known,
            },
            e if e.is_input_error() => Self::InvalidField {
                field: "input".into(),
                reason: e.to_string(),
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, Self::Overloaded(_) | Self::NotReady(_)) {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
