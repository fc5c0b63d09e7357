//! `POST /v1/audio/speech`: validation before anything is queued, admission through a
//! semaphore, synthesis on a blocking thread that streams chunks back as units finish.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrovox_engine::{EngineError, SynthesisOptions, Voice};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{ApiError, AppState};
use ferrovox_audio::{AudioFormat, Encoder};
use ferrovox_voices::Family;

/// OpenAI's voice names; each is an alias of the server's default voice.
pub const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];

/// The request body, as OpenAI defines it, plus each family's controls as extra fields. A field
/// that is neither is refused (422, named), never ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechRequest {
    /// OpenAI's `tts-1` / `tts-1-hd` (any voice), or the voice's family (`piper`, `mms-vits`,
    /// `chatterbox`; `vits` for either VITS family).
    pub model: String,
    /// Text to speak.
    pub input: String,
    /// A served voice id, an OpenAI voice name (the default voice), or a cloned voice's id or
    /// name; a cloned voice may also come as OpenAI's `{"id": "..."}`.
    #[serde(deserialize_with = "voice_field")]
    pub voice: String,
    /// `wav` (the default here), `pcm` or `flac`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// 0.25 to 4.0.
    #[serde(default)]
    pub speed: Option<f64>,
    /// `audio` (chunked body) or `sse` (server-sent events).
    #[serde(default)]
    pub stream_format: Option<String>,
    /// Style instructions: not supported by these voices.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Seed of every random draw (the server's default when absent).
    #[serde(default)]
    pub seed: Option<u64>,
    /// A language tag the voice must speak.
    #[serde(default)]
    pub language: Option<String>,
    /// Chatterbox: expressiveness, 0 to 2.
    #[serde(default)]
    pub exaggeration: Option<f32>,
    /// Chatterbox: classifier-free guidance weight, 0 to 10.
    #[serde(default)]
    pub cfg_weight: Option<f32>,
    /// Chatterbox: sampling temperature, 0 (greedy) to 10.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Chatterbox: nucleus sampling, above 0 to 1.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Chatterbox: min-p filter, 0 to 1.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Chatterbox: repetition penalty.
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Chatterbox: speech tokens per piece of text.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// VITS: noise scale.
    #[serde(default)]
    pub noise_scale: Option<f64>,
    /// VITS: duration noise scale.
    #[serde(default)]
    pub noise_w: Option<f64>,
    /// VITS: length scale.
    #[serde(default)]
    pub length_scale: Option<f64>,
}

/// `voice` as a string, or as an object `{"id": "..."}` (OpenAI's custom voices).
fn voice_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Id {
        id: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Voice {
        Name(String),
        Id(Id),
    }
    match Voice::deserialize(d) {
        Ok(Voice::Name(name)) => Ok(name),
        Ok(Voice::Id(Id { id })) => Ok(id),
        Err(_) => Err(serde::de::Error::custom(
            "expected a voice name or id, or an object {\"id\": \"...\"}",
        )),
    }
}

/// How the body is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// A chunked body of audio bytes, a chunk per finished sentence.
    Audio,
    /// The whole file once synthesis is complete, with its `Content-Length`.
    Whole,
    /// `speech.audio.delta` events with base64 audio, then `speech.audio.done`.
    Sse,
}

/// A request that passed validation.
struct Speech {
    voice: Arc<Voice>,
    input: String,
    format: AudioFormat,
    stream: StreamFormat,
    options: SynthesisOptions,
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Reads the body up to `limit` bytes. A larger body is still drained (up to 8× the limit) so
/// that clients which send the whole body before reading, as most HTTP/1.1 clients do, receive
/// the 413 instead of a broken connection.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let (mut bytes, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        total += chunk.len();
        if total <= limit {
            bytes.extend_from_slice(&chunk);
        } else if total > limit.saturating_mul(8) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(bytes)
}

async fn parse(state: &AppState, bytes: &[u8]) -> Result<Speech, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let req: SpeechRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            // A missing field or a body that is not an object: serde names the field.
            let field = inner.to_string();
            let name = field.split('`').nth(1).unwrap_or("body").to_string();
            invalid(&name, field)
        } else {
            invalid(&path, inner.to_string())
        }
    })?;
    if req.input.trim().is_empty() {
        return Err(ApiError::EmptyInput("the text is empty".into()));
    }
    let chars = req.input.chars().count();
    let max = state.config().max_input_chars;
    if chars > max {
        return Err(invalid(
            "input",
            format!("{chars} characters; at most {max}"),
        ));
    }
    // OpenAI's default format.
    let format = match req.response_format.as_deref() {
        None => AudioFormat::Mp3,
        Some(f) => AudioFormat::parse(f).ok_or_else(|| {
            invalid(
                "response_format",
                format!("`{f}` is not a format; use mp3, opus, wav, flac or pcm"),
            )
        })?,
    };
    if format == AudioFormat::Aac {
        return Err(invalid(
            "response_format",
            ferrovox_audio::CodecError::Unsupported("aac").to_string(),
        ));
    }
    // Without `stream_format`, a format whose file is right whatever its length streams as it
    // is made (mp3, opus, pcm), and WAV and FLAC come whole, with their exact length in the
    // header and a Content-Length: a WAV streamed before its length is known carries
    // placeholder sizes, which strict players refuse. `"audio"` streams WAV anyway.
    let stream = match req.stream_format.as_deref() {
        None if format.streams() => StreamFormat::Audio,
        None => StreamFormat::Whole,
        Some("audio") => StreamFormat::Audio,
        Some("sse") => StreamFormat::Sse,
        Some(f) => return Err(invalid("stream_format", format!("`{f}`; use audio or sse"))),
    };
    if req
        .instructions
        .as_deref()
        .is_some_and(|i| !i.trim().is_empty())
    {
        // As OpenAI's tts-1 does: no model here takes instructions (`/v1/models` says so).
        tracing::debug!("`instructions` ignored: no served model takes style instructions");
    }
    let (voice, cloned) = match state.voice(&req.voice) {
        Ok(voice) => (voice, None),
        Err(unknown @ ApiError::UnknownVoice { .. }) => {
            match crate::cloned_voices::resolve(state, &req.voice).await? {
                Some((model, prompt)) => (state.voice(&model)?, Some(prompt)),
                None => return Err(unknown),
            }
        }
        Err(e) => return Err(e),
    };
    let family = voice.model().family();
    if !model_serves(&req.model, family) {
        return Err(ApiError::UnknownModel {
            model: req.model,
            available: format!("tts-1, tts-1-hd, {family}"),
        });
    }
    let mut options = request_options(&state.config().defaults, &req, family);
    options.cloned = cloned;
    // Checked here, before admission: an out-of-range or foreign option is the client's 422.
    voice.model().validate(&options)?;
    options.validate_common()?;
    Ok(Speech {
        voice,
        input: req.input,
        format,
        stream,
        options,
    })
}

/// Whether `model` (a request's `model` field) names `family`.
fn model_serves(model: &str, family: Family) -> bool {
    matches!(model, "tts-1" | "tts-1-hd")
        || model == family.name()
        || (model == "vits" && matches!(family, Family::Piper | Family::MmsVits))
}

/// The server's defaults for `family`'s voice, overridden by the request's fields. Defaults of
/// another family's options do not apply to this voice; a request's own do, and are refused
/// by the voice's validation.
fn request_options(
    defaults: &SynthesisOptions,
    req: &SpeechRequest,
    family: Family,
) -> SynthesisOptions {
    let mut o = defaults.clone();
    match family {
        Family::Chatterbox => o.vits = Default::default(),
        Family::Piper | Family::MmsVits => o.chatterbox = Default::default(),
    }
    o.speed = req.speed.or(o.speed);
    o.seed = req.seed.unwrap_or(o.seed);
    o.language = req.language.clone().or(o.language);
    let c = &mut o.chatterbox;
    c.exaggeration = req.exaggeration.or(c.exaggeration);
    c.cfg_weight = req.cfg_weight.or(c.cfg_weight);
    c.temperature = req.temperature.or(c.temperature);
    c.top_p = req.top_p.or(c.top_p);
    c.min_p = req.min_p.or(c.min_p);
    c.repetition_penalty = req.repetition_penalty.or(c.repetition_penalty);
    c.max_new_tokens = req.max_new_tokens.or(c.max_new_tokens);
    let v = &mut o.vits;
    v.noise_scale = req.noise_scale.or(v.noise_scale);
    v.noise_w = req.noise_w.or(v.noise_w);
    v.length_scale = req.length_scale.or(v.length_scale);
    o
}

type Chunk = Result<Vec<f32>, EngineError>;

/// The endpoint.
pub async fn speech(State(state): State<AppState>, body: Body) -> Response {
    let result = start(&state, body).await;
    crate::respond(&state, "speech", result)
}

async fn start(state: &AppState, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.config().max_body_bytes).await?;
    let speech = parse(state, &bytes).await?;
    if state.is_draining() {
        return Err(ApiError::NotReady(
            "shutting down: finishing the requests already admitted".into(),
        ));
    }
    let permit = state
        .inner
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Overloaded(format!(
                "{} requests in flight (--max-concurrent-requests)",
                state.config().max_concurrent_requests
            ))
        })?;
    let rate = speech.voice.model().sample_rate();
    let streamed = speech.stream != StreamFormat::Whole;
    let encoder = Encoder::new(speech.format, rate, streamed)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // A small bound: a slow reader holds synthesis back instead of piling audio up.
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let worker_state = state.clone();
    let Speech {
        voice,
        input,
        options,
        ..
    } = speech;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let metrics = worker_state.metrics();
        metrics.in_flight(1);
        let start = Instant::now();
        let mut first = None;
        let mut samples = 0usize;
        let result = voice.stream(&input, &options, &mut |chunk| {
            first.get_or_insert_with(|| start.elapsed());
            samples += chunk.len();
            tx.blocking_send(Ok(chunk.to_vec()))
                .map_err(|_| EngineError::Cancelled)
        });
        match result {
            Ok(()) => metrics.synthesis(
                samples as f64 / rate as f64,
                start.elapsed().as_secs_f64(),
                first.unwrap_or_default().as_secs_f64(),
            ),
            Err(e) if tx.is_closed() => tracing::debug!(error = %e, "request abandoned"),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
        metrics.in_flight(-1);
    });
    // Nothing is sent before the first chunk, so errors up to then get their own status.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(ApiError::Internal(
                "synthesis stopped without a result".into(),
            ))
        }
    };
    Ok(match speech.stream {
        StreamFormat::Audio => audio_response(speech.format, encoder, first, rx),
        StreamFormat::Whole => whole_response(speech.format, encoder, first, rx).await?,
        StreamFormat::Sse => sse_response(encoder, first, rx).into_response(),
    })
}

/// Encoded byte pieces: the first chunk, the rest as they arrive, then the encoder's tail,
/// skipping empty pieces (FLAC holds everything back until the end). A failure mid-stream ends
/// the stream with an error, so the client never takes a truncated body for a complete one.
fn encoded(
    mut encoder: Encoder,
    first: Vec<f32>,
    rx: mpsc::Receiver<Chunk>,
) -> impl Stream<Item = Result<Bytes, String>> {
    let head = encoder
        .chunk(&first)
        .map(Bytes::from)
        .map_err(|e| e.to_string());
    let state = (Some(encoder), rx);
    stream::once(async move { head })
        .chain(stream::unfold(state, |(encoder, mut rx)| async move {
            let mut encoder = encoder?;
            match rx.recv().await {
                Some(Ok(chunk)) => {
                    let bytes = encoder
                        .chunk(&chunk)
                        .map(Bytes::from)
                        .map_err(|e| e.to_string());
                    Some((bytes, (Some(encoder), rx)))
                }
                Some(Err(e)) => Some((Err(ApiError::from(e).to_string()), (None, rx))),
                None => Some((
                    encoder.finish().map(Bytes::from).map_err(|e| e.to_string()),
                    (None, rx),
                )),
            }
        }))
        .filter(|r| std::future::ready(!matches!(r, Ok(b) if b.is_empty())))
}

/// The whole file once synthesis is done: an error up to the last chunk still gets its own
/// status.
async fn whole_response(
    format: AudioFormat,
    encoder: Encoder,
    first: Vec<f32>,
    rx: mpsc::Receiver<Chunk>,
) -> Result<Response, ApiError> {
    let mut body = Vec::new();
    let mut pieces = std::pin::pin!(encoded(encoder, first, rx));
    while let Some(piece) = pieces.next().await {
        body.extend_from_slice(&piece.map_err(ApiError::Internal)?);
    }
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_LENGTH, body.len().to_string()),
        ],
        body,
    )
        .into_response())
}

fn audio_response(
    format: AudioFormat,
    encoder: Encoder,
    first: Vec<f32>,
    rx: mpsc::Receiver<Chunk>,
) -> Response {
    let body = encoded(encoder, first, rx).map(|r| r.map_err(std::io::Error::other));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response()
}

fn sse_response(
    encoder: Encoder,
    first: Vec<f32>,
    rx: mpsc::Receiver<Chunk>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let failed = Arc::new(AtomicBool::new(false));
    let failed_in_stream = failed.clone();
    let events = encoded(encoder, first, rx)
        .map(move |r| {
            let data = match r {
                Ok(bytes) => serde_json::json!({
                    "type": "speech.audio.delta",
                    "audio": b64.encode(&bytes),
                }),
                Err(message) => {
                    failed_in_stream.store(true, Ordering::Relaxed);
                    serde_json::json!({
                    "type": "error",
                    "error": { "message": message, "type": "server_error" },
                    })
                }
            };
            Ok(Event::default().data(data.to_string()))
        })
        .chain(
            stream::once(async move {
                // After an error event there is no `done`: the audio is incomplete.
                (!failed.load(Ordering::Relaxed)).then(|| {
                    let done = serde_json::json!({ "type": "speech.audio.done" });
                    Ok(Event::default().data(done.to_string()))
                })
            })
            .filter_map(std::future::ready),
        );
    Sse::new(events)
}
