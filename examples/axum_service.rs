//! A tokio/axum service that owns one ferrovox `Engine` and shares it across request tasks:
//! `POST /speak` with a text body returns a WAV. Synthesis is CPU/GPU work, so it runs on
//! tokio's blocking pool; the engine batches what concurrent requests send it.
//!
//! `cargo run --release -p ferrovox-examples --example axum_service` then
//! `curl -d 'Hello from axum.' localhost:3000/speak -o hello.wav`
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use ferrovox_engine::{Engine, EngineConfig, EngineError, SynthesisOptions, Voice};

async fn speak(State(voice): State<Arc<Voice>>, text: String) -> impl IntoResponse {
    let result = tokio::task::spawn_blocking(move || {
        let audio = voice.synthesize(&text, &SynthesisOptions::default())?;
        let mut wav = Vec::new();
        ferrovox_audio::write_wav(&mut wav, &audio.samples, audio.sample_rate)
            .map_err(|e| EngineError::Unsupported(e.to_string()))?;
        Ok::<_, EngineError>(wav)
    })
    .await;
    match result {
        Ok(Ok(wav)) => Ok(([(header::CONTENT_TYPE, "audio/wav")], wav)),
        Ok(Err(e)) if e.is_input_error() => Err((StatusCode::BAD_REQUEST, e.to_string())),
        Ok(Err(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Loading (and warming up) is blocking work too; do it before serving.
    let voice = tokio::task::spawn_blocking(|| {
        Engine::new(EngineConfig::default()).voice(ferrovox_voices::DEFAULT_VOICE)
    })
    .await??;
    let app = axum::Router::new()
        .route("/speak", post(speak))
        .with_state(voice);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("POST text to http://{}/speak", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
