//! Home Assistant's Wyoming protocol over TCP, on the same engine and voices as the HTTP API:
//!
//! - `describe` → `info`: every served voice, its languages and speakers, and
//!   `supports_synthesize_streaming`;
//! - `synthesize {text, voice}` → `audio-start`, an `audio-chunk` (16-bit mono at the voice's
//!   rate) as each piece of audio is final, `audio-stop`;
//! - `synthesize-start {voice}`, `synthesize-chunk {text}`…, `synthesize-stop`: each sentence
//!   is spoken as soon as its text has arrived, then `audio-stop` and `synthesize-stopped`. A
//!   `synthesize` inside that session (clients send one for servers that do not stream) is
//!   ignored.
//!
//! An unknown voice or a failed synthesis gets an `error` event and the connection goes on; a
//! malformed header gets an `error` event and the connection closes. Synthesis shares the HTTP
//! API's limit on requests in flight; a client that goes away stops its synthesis.

mod framing;

use std::future::Future;

use ferrovox_engine::{EngineError, SynthesisOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use framing::{read_event, write_event, FramingError, WyomingEvent};

use crate::{ApiError, AppState};

/// Serves Wyoming connections on `listener` until `shutdown` resolves.
pub async fn serve_wyoming(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "wyoming: accept failed");
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(socket, &state).await {
                        tracing::debug!(%peer, error = %e, "wyoming: connection ended");
                    }
                });
            }
        }
    }
}

/// A streaming session's state: the voice asked for and the text not yet spoken.
struct Session {
    voice: Value,
    text: String,
    audio_started: bool,
}

async fn connection(socket: tokio::net::TcpStream, state: &AppState) -> Result<(), FramingError> {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut session: Option<Session> = None;
    loop {
        let event = match read_event(&mut reader).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(FramingError::Header(reason)) => {
                send_error(
                    &mut write,
                    &format!("malformed event header: {reason}"),
                    "malformed",
                )
                .await?;
                return Err(FramingError::Header(reason));
            }
            Err(e) => return Err(e),
        };
        let data = &event.data;
        match event.kind.as_str() {
            "describe" => write_event(&mut write, &WyomingEvent::new("info", info(state))).await?,
            "ping" => write_event(&mut write, &WyomingEvent::new("pong", Value::Null)).await?,
            "synthesize" if session.is_some() => {}
            "synthesize" => {
                let text = data.get("text").and_then(Value::as_str).unwrap_or_default();
                let voice = data.get("voice").cloned().unwrap_or(Value::Null);
                let mut started = false;
                if speak(&mut write, state, &voice, text, &mut started).await? {
                    write_event(&mut write, &audio("audio-stop", None)).await?;
                }
            }
            "synthesize-start" => {
                session = Some(Session {
                    voice: data.get("voice").cloned().unwrap_or(Value::Null),
                    text: String::new(),
                    audio_started: false,
                });
            }
            "synthesize-chunk" => {
                let Some(s) = session.as_mut() else {
                    send_error(
                        &mut write,
                        "synthesize-chunk outside synthesize-start/-stop",
                        "no-session",
                    )
                    .await?;
                    continue;
                };
                s.text
                    .push_str(data.get("text").and_then(Value::as_str).unwrap_or_default());
                if let Some(end) = sentences_end(&s.text) {
                    let ready: String = s.text.drain(..end).collect();
                    speak(
                        &mut write,
                        state,
                        &s.voice.clone(),
                        &ready,
                        &mut s.audio_started,
                    )
                    .await?;
                }
            }
            "synthesize-stop" => {
                let Some(mut s) = session.take() else {
                    send_error(
                        &mut write,
                        "synthesize-stop without synthesize-start",
                        "no-session",
                    )
                    .await?;
                    continue;
                };
                let rest = std::mem::take(&mut s.text);
                speak(&mut write, state, &s.voice, &rest, &mut s.audio_started).await?;
                if s.audio_started {
                    write_event(&mut write, &audio("audio-stop", None)).await?;
                }
                write_event(
                    &mut write,
                    &WyomingEvent::new("synthesize-stopped", Value::Null),
                )
                .await?;
            }
            // Events of other services (wake words, transcripts, …) are not ours to answer.
            _ => {}
        }
    }
}

/// Where the text's complete sentences end (after the last sentence-ending punctuation that is
/// followed by whitespace, or a line break), if any.
fn sentences_end(text: &str) -> Option<usize> {
    let mut end = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_space = chars.peek().is_some_and(|(_, n)| n.is_whitespace());
        if c == '\n' || (matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？') && next_space)
        {
            end = Some(i + c.len_utf8());
        }
    }
    end
}

/// `audio-start`, `audio-chunk` or `audio-stop` at the given rate (16-bit mono).
fn audio(kind: &str, rate: Option<u32>) -> WyomingEvent {
    match rate {
        Some(rate) => WyomingEvent::new(kind, json!({"rate": rate, "width": 2, "channels": 1})),
        None => WyomingEvent::new(kind, Value::Null),
    }
}

async fn send_error<W: AsyncWrite + Unpin>(
    write: &mut W,
    text: &str,
    code: &str,
) -> Result<(), FramingError> {
    write_event(
        write,
        &WyomingEvent::new("error", json!({"text": text, "code": code})),
    )
    .await
}

/// Speaks `text` in `voice` (Wyoming's `{name, language, speaker}`, or null for the default),
/// sending `audio-start` first unless `started`, then a chunk per final piece. False when it
/// sent an `error` instead of audio.
async fn speak<W: AsyncWrite + Unpin>(
    write: &mut W,
    state: &AppState,
    voice: &Value,
    text: &str,
    started: &mut bool,
) -> Result<bool, FramingError> {
    if !text.chars().any(char::is_alphanumeric) {
        return Ok(*started);
    }
    let name = voice.get("name").and_then(Value::as_str);
    let default = state.default_voice();
    let resolved = state.voice(name.unwrap_or(&default));
    let voice_ref = match resolved {
        Ok(v) => v,
        Err(e) => {
            send_error(write, &e.to_string(), error_code(&e)).await?;
            return Ok(false);
        }
    };
    let mut options: SynthesisOptions = state.config().defaults.clone();
    options.language = voice
        .get("language")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(speaker) = voice.get("speaker").and_then(Value::as_str) {
        match speaker.parse() {
            Ok(id) => options.vits.speaker = Some(id),
            Err(_) => {
                send_error(
                    write,
                    &format!("speaker `{speaker}` is not a speaker number"),
                    "unknown-speaker",
                )
                .await?;
                return Ok(false);
            }
        }
    }
    let Ok(permit) = state.inner.permits.clone().try_acquire_owned() else {
        send_error(write, "too many syntheses in flight; try again", "busy").await?;
        return Ok(false);
    };
    let rate = voice_ref.model().sample_rate();
    let (tx, mut rx) = mpsc::channel::<Result<Vec<f32>, EngineError>>(4);
    let text = text.to_string();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let result = voice_ref.stream(&text, &options, &mut |chunk| {
            tx.blocking_send(Ok(chunk.to_vec()))
                .map_err(|_| EngineError::Cancelled)
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(samples) => {
                if !*started {
                    write_event(write, &audio("audio-start", Some(rate))).await?;
                    *started = true;
                }
                let mut pcm = Vec::with_capacity(2 * samples.len());
                ferrovox_audio::write_pcm_s16le(&mut pcm, &samples)
                    .expect("writing to a Vec cannot fail");
                write_event(write, &audio("audio-chunk", Some(rate)).with_payload(pcm)).await?;
            }
            Err(e) => {
                let e = ApiError::from(e);
                send_error(write, &e.to_string(), error_code(&e)).await?;
                return Ok(false);
            }
        }
    }
    Ok(*started)
}

fn error_code(e: &ApiError) -> &'static str {
    match e {
        ApiError::UnknownVoice { .. } => "unknown-voice",
        ApiError::NotReady(_) => "not-ready",
        e if e.status().is_client_error() => "invalid-request",
        _ => "synthesis-failed",
    }
}

/// The `info` event's data: ferrovox as one TTS program, its voices as served.
fn info(state: &AppState) -> Value {
    let attribution = json!({"name": "ferrovox", "url": env!("CARGO_PKG_REPOSITORY")});
    let voices: Vec<Value> = state
        .served_voices()
        .iter()
        .map(|v| {
            let m = v.model();
            let speakers = (m.speakers() > 1).then(|| {
                (0..m.speakers())
                    .map(|i| json!({"name": i.to_string()}))
                    .collect::<Vec<_>>()
            });
            json!({
                "name": m.id(),
                "description": format!("{} ({} Hz)", m.family().name(), m.sample_rate()),
                "attribution": attribution,
                "installed": true,
                "version": env!("CARGO_PKG_VERSION"),
                "languages": m.languages(),
                "speakers": speakers,
            })
        })
        .collect();
    json!({
        "tts": [{
            "name": "ferrovox",
            "description": "ferrovox text to speech",
            "attribution": attribution,
            "installed": true,
            "version": env!("CARGO_PKG_VERSION"),
            "voices": voices,
            "supports_synthesize_streaming": true,
        }],
        "asr": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
    })
}

#[cfg(test)]
mod tests {
    use super::sentences_end;

    #[test]
    fn sentences_end_after_their_punctuation_and_a_space() {
        assert_eq!(sentences_end("Hello there. How are"), Some(12));
        assert_eq!(sentences_end("It costs 3.50 dollars"), None);
        assert_eq!(sentences_end("One! Two? Three"), Some(9));
        assert_eq!(sentences_end("A line\nand more"), Some(7));
        assert_eq!(sentences_end("No end yet."), None);
    }
}
