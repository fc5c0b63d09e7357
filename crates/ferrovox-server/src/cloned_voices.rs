//! Cloned voices over HTTP, in the shape of OpenAI's custom voices (and vllm-omni's):
//! `POST /v1/audio/voices` (multipart `audio_sample`, `name`, optional `model`, and OpenAI's
//! optional `consent` (kept with the voice) and `type` (`audio_sample`)) clones a voice
//! into the voice store, `GET /v1/audio/voices` lists them, `GET` and `DELETE
//! /v1/audio/voices/{id}` read and remove one. `/v1/audio/speech` speaks a stored voice given as
//! `voice` (its id or name, or `{"id": ...}`).
//!
//! Decoding and the encoders run on blocking threads, at most
//! [`ServerConfig::max_concurrent_clones`](crate::ServerConfig::max_concurrent_clones) at once;
//! more are refused with 429.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrovox_cloning::{CloneError, CloningService};
use ferrovox_engine::ClonedVoice;
use ferrovox_voice_store::{Added, VoiceMeta, VoiceStore};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::speech::read_body;
use crate::{respond, ApiError, AppState};

/// What the server clones with and keeps cloned voices in.
#[derive(Debug, Clone)]
pub struct Cloning {
    /// The encoders (registered for each served model that can clone).
    pub service: Arc<CloningService>,
    /// Where cloned voices are kept.
    pub store: VoiceStore,
    pub(crate) permits: Arc<Semaphore>,
}

impl Cloning {
    /// Cloning with `service`'s encoders into `store`, `max_concurrent` clips at once.
    pub fn new(service: Arc<CloningService>, store: VoiceStore, max_concurrent: usize) -> Self {
        Self {
            service,
            store,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }
}

impl From<CloneError> for ApiError {
    fn from(e: CloneError) -> Self {
        match e {
            CloneError::Clip(ferrovox_audio::ReferenceError::TooLarge { max_bytes, .. }) => {
                Self::TooLarge {
                    limit: max_bytes as usize,
                }
            }
            CloneError::UnknownModel { model, available } => {
                Self::UnknownModel { model, available }
            }
            CloneError::NotClonable { .. } => Self::InvalidField {
                field: "model".into(),
                reason: e.to_string(),
            },
            CloneError::NoModelFor { .. } => Self::InvalidField {
                field: "voice".into(),
                reason: e.to_string(),
            },
            e if e.is_client_error() => Self::InvalidField {
                field: "audio_sample".into(),
                reason: e.to_string(),
            },
            e => Self::Internal(e.to_string()),
        }
    }
}

/// A store error as the client sees it: an id that names nothing is its mistake (404), the
/// store's own failures are the server's.
fn store_error(id: &str, e: ferrovox_voice_store::Error) -> ApiError {
    use ferrovox_voice_store::Error as E;
    match e {
        E::NotFound(_) | E::InvalidId(_) | E::NameNotFound(_) => ApiError::UnknownVoice {
            voice: id.to_string(),
            available: "the served voices and the cloned ones (GET /v1/audio/voices)".into(),
        },
        E::AmbiguousName { .. } | E::InvalidVoice(_) => ApiError::InvalidField {
            field: "voice".into(),
            reason: e.to_string(),
        },
        e if e.is_out_of_space() => ApiError::OutOfStorage(format!("voice store: {e}")),
        e => ApiError::Internal(format!("voice store: {e}")),
    }
}

/// A stored voice as the API shows it.
fn voice_object(meta: &VoiceMeta) -> serde_json::Value {
    json!({
        "object": "audio.voice",
        "type": "audio_sample",
        "id": meta.id,
        "name": meta.name,
        "created_at": meta.created.timestamp(),
        "model": meta.model_id,
        "family": meta.family,
        "model_version": meta.model_version,
        "duration_s": meta.duration_s,
        "loudness_lufs": meta.loudness_lufs,
        "source_sha256": meta.source_hash,
        "consent": meta.consent,
    })
}

fn cloning(state: &AppState) -> Result<&Cloning, ApiError> {
    state
        .inner
        .cloning
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("voice cloning is not enabled on this server".into()))
}

/// `voice` of a speech request as a stored voice: the served model that speaks it and the
/// prompt; `None` when the store has no such voice.
pub(crate) async fn resolve(
    state: &AppState,
    voice: &str,
) -> Result<Option<(String, ClonedVoice)>, ApiError> {
    let Some(cloning) = &state.inner.cloning else {
        return Ok(None);
    };
    use ferrovox_voice_store::Error as E;
    // An id is read with its payload in one go; only a name needs the listing first.
    let stored = match cloning.store.get(voice).await {
        Ok(stored) => stored,
        Err(E::NotFound(_) | E::InvalidId(_)) => match cloning.store.find_by_name(voice).await {
            Ok(meta) => cloning
                .store
                .get(&meta.id)
                .await
                .map_err(|e| store_error(voice, e))?,
            Err(E::NameNotFound(_)) => return Ok(None),
            Err(e) => return Err(store_error(voice, e)),
        },
        Err(e) => return Err(store_error(voice, e)),
    };
    let meta = &stored.meta;
    let model = cloning.service.model_for(meta)?;
    let prompt = cloning.service.prompt(meta, &stored.conditionals)?;
    Ok(Some((model.id, prompt)))
}

/// The fields of an upload.
struct Upload {
    audio: Vec<u8>,
    name: String,
    model: Option<String>,
    consent: Option<String>,
}

/// Parses the multipart body; every field must be known, and `audio_sample` and `name` are
/// required.
async fn upload(headers: &HeaderMap, body: Vec<u8>) -> Result<Upload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::BadRequest(format!(
            "expected a multipart/form-data body (audio_sample, name, model), got content type `{content_type}`"
        ))
    })?;
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body))
    });
    let mut form = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| ApiError::BadRequest(format!("reading the multipart body: {e}"));
    let (mut audio, mut name, mut model, mut consent) = (None, None, None, None);
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let field_name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(bad)?;
        let text = || {
            String::from_utf8(bytes.to_vec())
                .map(|s| s.trim().to_string())
                .map_err(|_| invalid(&field_name, "not UTF-8 text"))
        };
        match field_name.as_str() {
            "audio_sample" => audio = Some(bytes.to_vec()),
            "name" => name = Some(text()?),
            "model" => model = Some(text()?).filter(|m| !m.is_empty()),
            "consent" => consent = Some(text()?).filter(|c| !c.is_empty()),
            "type" => {
                let kind = text()?;
                if kind != "audio_sample" {
                    return Err(invalid(
                        "type",
                        &format!("`{kind}`: only voices from an audio_sample can be made here"),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    other,
                    "unknown field; the fields are audio_sample, name, model, consent and type",
                ))
            }
        }
    }
    let audio = audio.ok_or_else(|| invalid("audio_sample", "missing: the reference clip"))?;
    let name = name.ok_or_else(|| invalid("name", "missing: the voice's name"))?;
    if name.is_empty() {
        return Err(invalid("name", "empty"));
    }
    Ok(Upload {
        audio,
        name,
        model,
        consent,
    })
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::InvalidField {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// `POST /v1/audio/voices`.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    respond(
        &state,
        "voices_create",
        create_voice(&state, headers, body).await,
    )
}

async fn create_voice(
    state: &AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cloning = cloning(state)?.clone();
    let bytes = read_body(body, state.config().max_upload_bytes).await?;
    let upload = upload(&headers, bytes).await?;
    if !state.is_ready() {
        return Err(state.not_ready());
    }
    // `model` names a served model (or its family); the default is the first that clones.
    let model =
        match &upload.model {
            Some(m) => cloning.service.find(m)?,
            None => cloning.service.models().into_iter().next().ok_or_else(|| {
                ApiError::UnknownModel {
                    model: "(default)".into(),
                    available: "(no served model can clone voices)".into(),
                }
            })?,
        };
    let permit = cloning.permits.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!(
            "{} voices are being cloned (--max-concurrent-clones)",
            state.config().max_concurrent_clones
        ))
    })?;
    let service = cloning.service.clone();
    let name = upload.name.clone();
    let consent = upload.consent.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let started = std::time::Instant::now();
        let clip = service.read_clip(&model.id, &upload.audio)?;
        let mut voice = service.encode(&model.id, &clip, &name)?;
        voice.consent = consent;
        tracing::info!(
            model = %model.id,
            clip_s = clip.duration_s,
            seconds = started.elapsed().as_secs_f64(),
            "voice cloned"
        );
        Ok::<_, CloneError>(voice)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the cloning thread failed: {e}")))??;
    let (meta, added) = cloning
        .store
        .add(encoded)
        .await
        .map_err(|e| store_error(&upload.name, e))?;
    let status = match added {
        Added::New => StatusCode::CREATED,
        // The same clip for the same encoders: the stored voice, as it was.
        Added::Existing => StatusCode::OK,
    };
    Ok((status, Json(voice_object(&meta))).into_response())
}

/// `GET /v1/audio/voices`.
pub async fn list(State(state): State<AppState>) -> Response {
    let result: Result<Response, ApiError> = async {
        let cloning = cloning(&state)?;
        let voices = cloning
            .store
            .list()
            .await
            .map_err(|e| ApiError::Internal(format!("voice store: {e}")))?;
        let data: Vec<_> = voices.iter().map(voice_object).collect();
        Ok(Json(json!({ "object": "list", "data": data })).into_response())
    }
    .await;
    respond(&state, "voices_list", result)
}

/// `GET /v1/audio/voices/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result: Result<Response, ApiError> = async {
        let meta = cloning(&state)?
            .store
            .meta(&id)
            .await
            .map_err(|e| store_error(&id, e))?;
        Ok(Json(voice_object(&meta)).into_response())
    }
    .await;
    respond(&state, "voices_get", result)
}

/// `DELETE /v1/audio/voices/{id}`.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result: Result<Response, ApiError> = async {
        let deleted = cloning(&state)?
            .store
            .delete(&id)
            .await
            .map_err(|e| store_error(&id, e))?;
        if !deleted {
            return Err(store_error(
                &id,
                ferrovox_voice_store::Error::NotFound(id.clone()),
            ));
        }
        Ok(
            Json(json!({ "object": "audio.voice.deleted", "id": id, "deleted": true }))
                .into_response(),
        )
    }
    .await;
    respond(&state, "voices_delete", result)
}
