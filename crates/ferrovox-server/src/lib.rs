//! The ferrovox HTTP server: OpenAI-compatible `POST /v1/audio/speech` (whole or streamed as
//! chunked audio or server-sent events), cloned voices (`/v1/audio/voices`, with
//! [`AppState::with_cloning`]), `GET /v1/models`, `GET /v1/voices`, `GET /health` and
//! `GET /metrics`, over one shared [`Engine`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use ferrovox_engine::{Engine, EngineConfig};
//! use ferrovox_server::{serve, shutdown_signal, AppState, ServerConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let engine = Arc::new(Engine::new(EngineConfig::default()));
//! let state = AppState::new(engine, ServerConfig::default());
//! let loader = state.clone();
//! std::thread::spawn(move || loader.load_voices()); // /health answers 503 until done
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, state, shutdown_signal()).await
//! # }
//! ```

#![warn(missing_docs)]

mod cloned_voices;
mod error;
mod info;
mod metrics;
mod speech;
pub mod wyoming;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use ferrovox_engine::{Engine, EngineError, SynthesisOptions, Voice};
use metrics::lock;
use tokio::sync::Semaphore;

pub use cloned_voices::Cloning;
pub use error::ApiError;
pub use ferrovox_audio::{AudioFormat, Encoder, PCM_RATE};
pub use metrics::Metrics;
pub use speech::{SpeechRequest, StreamFormat, OPENAI_VOICES};
pub use wyoming::serve_wyoming;

/// Limits and defaults of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Voices to load at start; the first is the default (OpenAI voice names map to it).
    pub voices: Vec<String>,
    /// Synthesis requests admitted at once; more are refused with 429.
    pub max_concurrent_requests: usize,
    /// Longest `input`, in characters.
    pub max_input_chars: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest voice upload (`POST /v1/audio/voices`), in bytes; larger ones get 413.
    pub max_upload_bytes: usize,
    /// Voices cloned at once; more are refused with 429.
    pub max_concurrent_clones: usize,
    /// Synthesis settings of requests that do not set them; options of one family apply to
    /// that family's voices only.
    pub defaults: SynthesisOptions,
    /// How long a health check's synthesis result is reused.
    pub health_ttl: Duration,
    /// Serve the voices that load when some do not: each failure is logged with its reason,
    /// listed by `/health` and answered with 503 naming it. Off: any voice that fails to load
    /// fails [`AppState::load_voices`] (and `ferrovox serve` exits). Either way, a server with
    /// no voice loaded is not ready.
    pub skip_failed_voices: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            voices: vec![ferrovox_voices::DEFAULT_VOICE.to_string()],
            max_concurrent_requests: 16,
            max_input_chars: 4096,
            max_body_bytes: 2 * 1024 * 1024,
            // 30 s (the most a clip is read for) of 48 kHz stereo 32-bit float is 11.5 MB.
            max_upload_bytes: 16 * 1024 * 1024,
            max_concurrent_clones: 2,
            defaults: SynthesisOptions {
                unit_silence: 0.2,
                ..Default::default()
            },
            health_ttl: Duration::from_secs(10),
            skip_failed_voices: false,
        }
    }
}

/// Shared server state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    config: ServerConfig,
    permits: Arc<Semaphore>,
    metrics: Metrics,
    ready: AtomicBool,
    /// Shutting down: admitted requests finish, new ones get 503.
    draining: AtomicBool,
    cloning: Option<Cloning>,
    load_error: Mutex<Option<String>>,
    /// Voices that failed to load, and why (with [`ServerConfig::skip_failed_voices`]).
    failed: Mutex<Vec<(String, String)>>,
    health: tokio::sync::Mutex<Option<info::HealthCheck>>,
}

impl AppState {
    /// State over `engine`; not ready until [`AppState::load_voices`] has run.
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Self {
        Self::build(engine, config, None)
    }

    /// State that also clones voices (`/v1/audio/voices`) with `cloning`'s encoders into its
    /// store, and speaks the stored ones. [`AppState::load_voices`] registers each served model
    /// that can clone.
    pub fn with_cloning(engine: Arc<Engine>, config: ServerConfig, cloning: Cloning) -> Self {
        Self::build(engine, config, Some(cloning))
    }

    fn build(engine: Arc<Engine>, config: ServerConfig, cloning: Option<Cloning>) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
                engine,
                config,
                metrics: Metrics::default(),
                ready: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                cloning,
                load_error: Mutex::new(None),
                failed: Mutex::new(Vec::new()),
                health: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Loads (and warms up) every configured voice, then marks the server ready. Blocking:
    /// run it on a thread of its own.
    pub fn load_voices(&self) -> Result<(), EngineError> {
        let voices = &self.inner.config.voices;
        let mut failures = 0;
        for id in voices {
            let Err(e) = self.inner.engine.voice(id) else {
                continue;
            };
            let reason = format!("loading voice `{id}`: {e}");
            failures += 1;
            if self.inner.config.skip_failed_voices && failures < voices.len() {
                tracing::error!(voice = %id, error = %e, "voice failed to load; serving the others");
                lock(&self.inner.failed).push((id.clone(), e.to_string()));
                continue;
            }
            *lock(&self.inner.load_error) = Some(reason);
            return Err(e);
        }
        if let Some(cloning) = &self.inner.cloning {
            for id in &self.inner.config.voices {
                let clones = self
                    .inner
                    .engine
                    .get(id)
                    .is_some_and(|v| v.model().family() == ferrovox_voices::Family::Chatterbox);
                if !clones {
                    continue;
                }
                // A model without its encoder files still speaks; it just cannot clone.
                match cloning.service.register(id) {
                    Ok(m) => tracing::info!(model = %m.id, version = %m.version, "clones voices"),
                    Err(e) => tracing::warn!(voice = %id, error = %e, "cannot clone voices"),
                }
            }
        }
        self.inner.ready.store(true, Ordering::Release);
        tracing::info!(voices = ?self.inner.config.voices, "ready");
        Ok(())
    }

    /// Whether every voice is loaded.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    fn not_ready(&self) -> ApiError {
        match &*lock(&self.inner.load_error) {
            Some(e) => ApiError::NotReady(e.clone()),
            None => ApiError::NotReady("voices are loading".into()),
        }
    }

    /// The voices that failed to load and why (see [`ServerConfig::skip_failed_voices`]).
    pub fn failed_voices(&self) -> Vec<(String, String)> {
        lock(&self.inner.failed).clone()
    }

    /// The first configured voice that loaded.
    fn default_voice(&self) -> String {
        let failed = lock(&self.inner.failed);
        self.inner
            .config
            .voices
            .iter()
            .find(|v| !failed.iter().any(|(id, _)| id == *v))
            .map_or(ferrovox_voices::DEFAULT_VOICE, String::as_str)
            .to_string()
    }

    /// The served voice `id` (OpenAI's voice names are the default voice).
    fn voice(&self, id: &str) -> Result<Arc<Voice>, ApiError> {
        if !self.is_ready() {
            return Err(self.not_ready());
        }
        let default;
        let id = if OPENAI_VOICES.contains(&id) {
            default = self.default_voice();
            default.as_str()
        } else {
            id
        };
        if let Some((_, reason)) = lock(&self.inner.failed).iter().find(|(v, _)| v == id) {
            return Err(ApiError::VoiceUnavailable {
                voice: id.to_string(),
                reason: reason.clone(),
            });
        }
        let served = self.inner.config.voices.iter().any(|v| v == id);
        match self.inner.engine.get(id) {
            Some(v) if served => Ok(v),
            _ => Err(ApiError::UnknownVoice {
                voice: id.to_string(),
                available: self.inner.config.voices.join(", "),
            }),
        }
    }

    fn served_voices(&self) -> Vec<Arc<Voice>> {
        self.inner
            .config
            .voices
            .iter()
            .filter_map(|id| self.inner.engine.get(id))
            .collect()
    }
}

/// `result` as the response, counted under `route` in the metrics (errors also by kind, and
/// logged when they are the server's).
fn respond(
    state: &AppState,
    route: &'static str,
    result: Result<axum::response::Response, ApiError>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match result {
        Ok(response) => {
            state.metrics().request(route, response.status().as_u16());
            response
        }
        Err(e) => {
            state.metrics().request(route, e.status().as_u16());
            state.metrics().error(e.kind());
            if e.status().is_server_error() {
                tracing::error!(error = %e, route, "request failed");
            }
            e.into_response()
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/audio/speech", post(speech::speech))
        .route(
            "/v1/audio/voices",
            get(cloned_voices::list).post(cloned_voices::create),
        )
        .route(
            "/v1/audio/voices/{id}",
            get(cloned_voices::get).delete(cloned_voices::delete),
        )
        .route("/v1/models", get(info::models))
        .route("/v1/voices", get(info::voices))
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .with_state(state)
}

/// Serves until `shutdown` resolves; then new synthesis requests get 503 while the admitted
/// ones finish, and once they have, the listener closes and this returns when every
/// connection (streamed bodies included) is done.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = state.clone();
    let drained = async move {
        shutdown.await;
        draining.drain().await;
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(drained)
        .await
}

/// How long a shutdown waits for admitted requests before closing the listener anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

impl AppState {
    /// Refuses new synthesis requests with 503 (a load balancer retries them elsewhere), then
    /// waits until the admitted ones are done (at most [`DRAIN_LIMIT`]).
    async fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
        let all = self.inner.config.max_concurrent_requests.max(1);
        let start = std::time::Instant::now();
        while self.inner.permits.available_permits() < all && start.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server is shutting down (see [`AppState::drain`]).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
