//! The read-only endpoints: models, voices, health (a real, cached synthesis) and metrics.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::speech::OPENAI_VOICES;
use crate::{ApiError, AppState};

/// The last health check.
#[derive(Debug, Clone)]
pub(crate) struct HealthCheck {
    at: Instant,
    status: StatusCode,
    body: serde_json::Value,
}

/// `GET /v1/models`.
pub async fn models(State(state): State<AppState>) -> Json<serde_json::Value> {
    state.metrics().request("models", 200);
    // OpenAI's names (any voice), then the family of each served voice.
    let mut ids: Vec<String> = vec!["tts-1".into(), "tts-1-hd".into()];
    for v in state.served_voices() {
        let family = v.model().family().name().to_string();
        if !ids.contains(&family) {
            ids.push(family);
        }
    }
    let data: Vec<_> = ids
        .iter()
        .map(|id| {
            // No served family takes style instructions: a request's `instructions` is
            // accepted and ignored.
            json!({
                "id": id, "object": "model", "created": 0, "owned_by": "ferrovox",
                "instructions": false,
                "response_formats": ["mp3", "opus", "wav", "flac", "pcm"],
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/voices`.
pub async fn voices(State(state): State<AppState>) -> Response {
    if !state.is_ready() {
        let e = state.not_ready();
        state.metrics().request("voices", e.status().as_u16());
        return e.into_response();
    }
    state.metrics().request("voices", 200);
    let default = state.default_voice();
    let data: Vec<_> = state
        .served_voices()
        .iter()
        .map(|v| {
            let m = v.model();
            let aliases: &[&str] = if m.id() == default {
                OPENAI_VOICES
            } else {
                &[]
            };
            json!({
                "id": m.id(),
                "object": "voice",
                "model": m.family().name(),
                "sample_rate": m.sample_rate(),
                "speakers": m.speakers(),
                "languages": m.languages(),
                "default": m.id() == default,
                "aliases": aliases,
                "load_seconds": v.load_time().as_secs_f64(),
                "warm_up_seconds": v.warm_up_time().map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /health`: synthesizes a short text with the default voice (reused for the configured
/// time), so a stuck or broken model shows as unhealthy.
pub async fn health(State(state): State<AppState>) -> Response {
    let (status, body) = check(&state).await;
    state.metrics().request("health", status.as_u16());
    (status, Json(body)).into_response()
}

async fn check(state: &AppState) -> (StatusCode, serde_json::Value) {
    if !state.is_ready() {
        let e = state.not_ready();
        return (
            e.status(),
            json!({ "status": "unavailable", "reason": e.to_string() }),
        );
    }
    let mut cached = state.inner.health.lock().await;
    if let Some(c) = cached
        .as_ref()
        .filter(|c| c.at.elapsed() < state.config().health_ttl)
    {
        let mut body = c.body.clone();
        body["age_seconds"] = json!(c.at.elapsed().as_secs_f64());
        return (c.status, body);
    }
    let voice = match state.voice(&state.default_voice()) {
        Ok(v) => v,
        Err(e) => {
            return (
                e.status(),
                json!({ "status": "unavailable", "reason": e.to_string() }),
            )
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        // The model's own warm-up request, past the batch queue: a health check does not wait
        // behind requests.
        let audio = voice.check();
        (voice.model().id().to_string(), audio, start.elapsed())
    })
    .await;
    let (status, body) = match outcome {
        Ok((id, Ok(audio), took)) if !audio.samples.is_empty() => (
            StatusCode::OK,
            json!({
                "status": "ok",
                "voice": id,
                "synthesis_seconds": took.as_secs_f64(),
                "audio_seconds": audio.seconds(),
            }),
        ),
        Ok((id, Ok(_), _)) => unhealthy(format!("voice {id} produced no audio")),
        Ok((id, Err(e), _)) => unhealthy(format!("voice {id}: {e}")),
        Err(e) => unhealthy(format!("health synthesis panicked: {e}")),
    };
    let mut body = body;
    let failed = state.failed_voices();
    if !failed.is_empty() {
        // Served without them (`skip_failed_voices`): healthy, but an operator should see it.
        body["failed_voices"] = failed
            .iter()
            .map(|(voice, reason)| json!({ "voice": voice, "reason": reason }))
            .collect();
    }
    let mut reply = body.clone();
    reply["age_seconds"] = json!(Duration::ZERO.as_secs_f64());
    *cached = Some(HealthCheck {
        at: Instant::now(),
        status,
        body,
    });
    (status, reply)
}

fn unhealthy(reason: String) -> (StatusCode, serde_json::Value) {
    let e = ApiError::Internal(reason);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "unhealthy", "reason": e.to_string() }),
    )
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics().request("metrics", 200);
    let batchers: Vec<_> = state
        .served_voices()
        .iter()
        .filter_map(|v| Some((v.model().id().to_string(), v.batcher_stats()?)))
        .collect();
    let mut body = state.metrics().render(&batchers);
    // Each model's own counters (Chatterbox: generations that ran out of tokens).
    let mut declared = std::collections::BTreeSet::new();
    for v in state.served_voices() {
        for (name, value) in v.model().counters() {
            if declared.insert(name) {
                body.push_str(&format!("# TYPE ferrovox_{name} counter\n"));
            }
            body.push_str(&format!(
                "ferrovox_{name}{{voice=\"{}\"}} {value}\n",
                v.model().id().replace(['\\', '"'], "_")
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
