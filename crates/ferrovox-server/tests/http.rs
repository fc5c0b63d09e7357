//! The server over real HTTP on 127.0.0.1: every error status, the audio formats, streaming,
//! concurrency and overload, graceful shutdown, health and metrics.
// ureq's error type is large; returning it by value is fine in tests.
#![allow(clippy::result_large_err)]

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrovox_engine::{BatcherConfig, SynthesisOptions};
use ferrovox_server::ServerConfig;
use serde_json::json;

/// What the server should send for `text` with the tone model: the engine's own join.
#[test]
fn each_error_has_its_status_and_names_the_field() {
    let tone = Tone::new();
    let server = TestServer::start(
        vec![tone.clone()],
        ServerConfig {
            max_input_chars: 50,
            max_body_bytes: 64 * 1024,
            ..tone_config()
        },
        None,
        true,
    );
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (request("tone", "   ", &[]), 400, Some("input")),
        ("{not json".into(), 400, None),
        (
            json!({"model": "tts-1", "input": "Hi."}).to_string(),
            422,
            Some("voice"),
        ),
        (
            request("tone", "Hi.", &[("speed", json!(10.0))]),
            422,
            Some("speed"),
        ),
        (
            request("tone", "Hi.", &[("speed", json!("fast"))]),
            422,
            Some("speed"),
        ),
        (
            request("tone", "Hi.", &[("response_format", json!("aac"))]),
            422,
            Some("response_format"),
        ),
        (
            request("tone", "Hi.", &[("stream_format", json!("smoke"))]),
            422,
            Some("stream_format"),
        ),
        (request("tone", &"x".repeat(51), &[]), 422, Some("input")),
        (request("nobody", "Hi.", &[]), 404, Some("voice")),
        (
            json!({"model": "gpt-9", "voice": "tone", "input": "Hi."}).to_string(),
            404,
            Some("model"),
        ),
        (request("tone", "...", &[]), 400, Some("input")),
    ];
    for (body, status, param) in cases {
        let (code, error) = failure(server.post(&body));
        assert_eq!(code, status, "{body} -> {error}");
        assert_eq!(error["error"]["param"].as_str(), param, "{body} -> {error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    // Twice the limit: drained, then refused (a client that writes the whole body first still
    // reads the 413).
    let big = request("tone", &"x".repeat(128 * 1024), &[]);
    let (code, error) = failure(server.post(&big));
    assert_eq!(code, 413, "{error}");
    assert_eq!(error["error"]["code"], "too_large");
    // Nothing reached the model.
    assert_eq!(tone.started(), 0);
}

#[test]
fn not_ready_is_503_until_voices_load() {
    let tone = Tone::new();
    let server = TestServer::start(vec![tone.clone()], tone_config(), None, false);
    let (code, error) = failure(server.post(&request("tone", "Hi.", &[])));
    assert_eq!(code, 503, "{error}");
    assert_eq!(failure(server.get("/health")).0, 503);
    server.state.load_voices().unwrap();
    assert_eq!(
        server.post(&request("tone", "Hi.", &[])).unwrap().status(),
        200
    );
    let health: serde_json::Value = server.get("/health").unwrap().into_json().unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["synthesis_seconds"].as_f64().unwrap() > 0.0);
    // Within the TTL the check is reused, not rerun.
    let started = tone.started();
    let again: serde_json::Value = server.get("/health").unwrap().into_json().unwrap();
    assert!(again["age_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(tone.started(), started);
}

#[test]
fn wav_pcm_flac_and_sse_carry_the_same_audio() {
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let text = "One sentence. And another one here.";
    let want = expected(&server, text);

    let response = server.post(&request("alloy", text, &[])).unwrap();
    assert_eq!(response.header("content-type"), Some("audio/wav"));
    assert_close(&wav_samples(&body_bytes(response)), &want, 1.0 / 32767.0);

    let flac = body_bytes(
        server
            .post(&request(
                "tone",
                text,
                &[("response_format", json!("flac"))],
            ))
            .unwrap(),
    );
    assert_eq!(&flac[..4], b"fLaC");
    let pcm = body_bytes(
        server
            .post(&request("tone", text, &[("response_format", json!("pcm"))]))
            .unwrap(),
    );
    let resampled = ferrovox_audio::resample(&want, RATE, 24_000).unwrap();
    assert_eq!(
        pcm,
        ferrovox_audio::to_i16(&resampled)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect::<Vec<_>>()
    );

    let sse = server
        .post(&request(
            "tone",
            text,
            &[
                ("response_format", json!("pcm")),
                ("stream_format", json!("sse")),
            ],
        ))
        .unwrap();
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let text_body = sse.into_string().unwrap();
    let events: Vec<serde_json::Value> = text_body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["type"], "speech.audio.done");
    assert!(
        events.len() >= 3,
        "a delta per sentence, then done: {}",
        events.len()
    );
    use base64::Engine as _;
    let joined: Vec<u8> = events[..events.len() - 1]
        .iter()
        .flat_map(|e| {
            assert_eq!(e["type"], "speech.audio.delta");
            base64::engine::general_purpose::STANDARD
                .decode(e["audio"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(joined, pcm);
}

#[test]
fn the_first_chunk_arrives_before_the_last_sentence_is_synthesized() {
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let text = "First sentence. Second sentence. Third one, and wait for it.";
    let response = server
        .post(&request("tone", text, &[("response_format", json!("pcm"))]))
        .unwrap();
    // The last sentence is blocked on the gate; the first two must already be here.
    let mut reader = response.into_reader();
    let mut head = vec![0u8; 1000];
    reader.read_exact(&mut head).unwrap();
    assert!(!tone.done.lock().unwrap().contains(&WAIT));
    tone.open();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    let want = ferrovox_audio::resample(&expected(&server, text), RATE, 24_000).unwrap();
    assert_eq!(head.len(), want.len() * 2);
}

#[test]
fn concurrent_clients_all_get_their_own_audio_with_batching() {
    let tone = Tone::new();
    let batching = BatcherConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(20),
        queue_capacity: 64,
    };
    let server = Arc::new(TestServer::start(
        vec![tone.clone()],
        tone_config(),
        Some(batching),
        true,
    ));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                let text = format!("Client {i} says hello. Then client {i} stops.");
                let bytes = body_bytes(server.post(&request("tone", &text, &[])).unwrap());
                (text, wav_samples(&bytes))
            })
        })
        .collect();
    for h in handles {
        let (text, got) = h.join().unwrap();
        assert_close(&got, &expected(&server, &text), 1.0 / 32767.0);
    }
    let stats = server.engine.get("tone").unwrap().batcher_stats().unwrap();
    assert_eq!(stats.units, 16);
    assert!(stats.largest_batch > 1, "{stats:?}");
}

#[test]
fn overflow_gets_429_and_nothing_inside_the_bound_is_lost() {
    let tone = Tone::new();
    let server = Arc::new(TestServer::start(
        vec![tone.clone()],
        ServerConfig {
            max_concurrent_requests: 3,
            ..tone_config()
        },
        None,
        true,
    ));
    let admitted: Vec<_> = (0..3)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                let text = format!("Number {i}, wait.");
                let bytes = body_bytes(server.post(&request("tone", &text, &[])).unwrap());
                (text, wav_samples(&bytes))
            })
        })
        .collect();
    tone.wait_started(3);
    for _ in 0..5 {
        let (code, error) = failure(server.post(&request("tone", "One too many.", &[])));
        assert_eq!(code, 429, "{error}");
    }
    tone.open();
    for h in admitted {
        let (text, got) = h.join().unwrap();
        assert_close(&got, &expected(&server, &text), 1.0 / 32767.0);
    }
    let metrics = server.get("/metrics").unwrap().into_string().unwrap();
    assert!(
        metrics.contains("ferrovox_requests_total{endpoint=\"speech\",status=\"429\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("ferrovox_errors_total{kind=\"overloaded\"} 5"));
    assert!(metrics.contains("ferrovox_requests_total{endpoint=\"speech\",status=\"200\"} 3"));
    assert!(metrics.contains("ferrovox_queue_depth 0"));
    // Slots free again once the admitted requests are done.
    assert_eq!(
        server
            .post(&request("tone", "Now it fits.", &[]))
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let tone = Tone::new();
    let mut server = TestServer::tone(&tone);
    let url = server.url.clone();
    let body = request("tone", "Before the stop. Then wait for the end.", &[]);
    let client = std::thread::spawn(move || {
        ureq::post(&format!("{url}/v1/audio/speech"))
            .set("content-type", "application/json")
            .send_string(&body)
            .map(body_bytes)
    });
    tone.wait_started(2);
    server.begin_stop();
    std::thread::sleep(Duration::from_millis(100));
    tone.open();
    let bytes = client.join().unwrap().unwrap();
    let want = expected(&server, "Before the stop. Then wait for the end.");
    assert_close(&wav_samples(&bytes), &want, 1.0 / 32767.0);
    assert!(server.stop().is_ok());
    assert!(server.get("/health").is_err(), "no longer listening");
}

#[test]
fn models_and_voices_are_listed() {
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let models: serde_json::Value = server.get("/v1/models").unwrap().into_json().unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tts-1", "tts-1-hd", "piper"]);
    let voices: serde_json::Value = server.get("/v1/voices").unwrap().into_json().unwrap();
    let v = &voices["data"][0];
    assert_eq!(
        (v["id"].as_str(), v["sample_rate"].as_u64()),
        (Some("tone"), Some(RATE as u64))
    );
    assert!(v["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "alloy"));
}

#[test]
fn the_joe_voice_serves_concurrent_clients_with_batching() {
    let joe = match ferrovox_engine::open_voice("en_US-joe-medium", &candle_core::Device::Cpu) {
        Ok(v) => v,
        Err(e) if std::env::var("FERROVOX_REQUIRE_VOICES").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: joe voice unavailable: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let config = ServerConfig {
        voices: vec!["en_US-joe-medium".into()],
        defaults: quiet(),
        ..Default::default()
    };
    let batching = BatcherConfig {
        max_batch: 4,
        max_wait: Duration::from_millis(30),
        queue_capacity: 16,
    };
    let server = Arc::new(TestServer::start(
        vec![joe.clone()],
        config,
        Some(batching),
        true,
    ));
    let texts = [
        "The sun is out today.",
        "Rain is coming later.",
        "Bring a coat.",
        "See you soon.",
    ];
    let handles: Vec<_> = texts
        .iter()
        .map(|t| {
            let (server, t) = (server.clone(), t.to_string());
            std::thread::spawn(move || body_bytes(server.post(&request("alloy", &t, &[])).unwrap()))
        })
        .collect();
    for (text, h) in texts.iter().zip(handles) {
        let wav = ferrovox_audio::read_wav(&h.join().unwrap()).unwrap();
        let alone = ferrovox_engine::Voice::new(joe.clone(), None)
            .synthesize(text, &SynthesisOptions { ..quiet() })
            .unwrap();
        assert_eq!(wav.sample_rate, 22050);
        assert_eq!(wav.samples.len(), alone.samples.len(), "{text}");
        // Batched with padding, the last decoder frames of a shorter unit may differ (as
        // upstream); everything before matches to 16-bit rounding.
        let head = alone.samples.len().saturating_sub(8 * 256 + 4410);
        let err = wav.samples[..head]
            .iter()
            .zip(&alone.samples[..head])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 2e-3, "{text}: {err}");
    }
    let stats = server
        .engine
        .get("en_US-joe-medium")
        .unwrap()
        .batcher_stats()
        .unwrap();
    assert!(stats.largest_batch > 1, "{stats:?}");
}

/// A request without `response_format` gets MP3 (OpenAI's default), streamed; WAV without
/// `stream_format` comes whole with its exact sizes and a `Content-Length`, and streamed with
/// `"audio"` carries placeholder sizes; Opus is Ogg; AAC is refused naming the formats there
/// are; `instructions` is accepted and ignored, and `/v1/models` says so.
#[test]
fn formats_default_to_mp3_and_whole_wav_files_carry_their_length() {
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let text = "One sentence. And another one here.";
    let want = expected(&server, text);
    let plain = json!({"model": "tts-1", "voice": "tone", "input": text}).to_string();
    let response = server.post(&plain).unwrap();
    assert_eq!(response.header("content-type"), Some("audio/mpeg"));
    let (mp3, rate) = ferrovox_audio::decode_audio(&body_bytes(response)).unwrap();
    assert_eq!(rate, RATE);
    // All of the audio after LAME's priming delay (1681 samples), the end padded to whole
    // frames.
    let extra = mp3.len() as i64 - (1681 + want.len()) as i64;
    assert!(
        (0..2 * 1152).contains(&extra),
        "{extra} samples past the audio"
    );

    let response = server.post(&request("tone", text, &[])).unwrap();
    let length: usize = response.header("content-length").unwrap().parse().unwrap();
    let wav = body_bytes(response);
    assert_eq!(length, wav.len());
    assert_eq!(
        u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize,
        2 * want.len(),
        "the data chunk's size"
    );
    assert_eq!(
        u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize,
        wav.len() - 8
    );
    assert_close(&wav_samples(&wav), &want, 1.0 / 32767.0);

    let streamed = server
        .post(&request("tone", text, &[("stream_format", json!("audio"))]))
        .unwrap();
    assert!(streamed.header("content-length").is_none());
    let streamed = body_bytes(streamed);
    assert_eq!(
        u32::from_le_bytes(streamed[40..44].try_into().unwrap()),
        u32::MAX - 36,
        "a streamed WAV's placeholder size"
    );
    assert_eq!(&streamed[44..], &wav[44..]);

    let opus = server
        .post(&request(
            "tone",
            text,
            &[("response_format", json!("opus"))],
        ))
        .unwrap();
    assert_eq!(opus.header("content-type"), Some("audio/ogg; codecs=opus"));
    let opus = body_bytes(opus);
    assert_eq!(&opus[..4], b"OggS");
    assert_eq!(&opus[28..36], b"OpusHead");

    let (code, error) =
        failure(server.post(&request("tone", text, &[("response_format", json!("aac"))])));
    assert_eq!(code, 422);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mp3, opus, wav, flac and pcm"),
        "{message}"
    );

    let instructed = server
        .post(&request(
            "tone",
            "Hi.",
            &[("instructions", json!("whisper"))],
        ))
        .unwrap();
    assert_eq!(instructed.status(), 200);
    let models: serde_json::Value = server.get("/v1/models").unwrap().into_json().unwrap();
    assert_eq!(models["data"][0]["instructions"], false);
}

/// The official `openai` client, default arguments and then each format, every body decoded by
/// PyAV (FFmpeg): each has the WAV's duration (MP3 within LAME's priming and padding, Opus at
/// 48 kHz) and the lossy ones match the WAV (SNR stated). Needs `FERROVOX_OPENAI_PYTHON` with
/// `tests/openai-requirements.txt` (`.ci/run` makes one).
#[test]
fn the_openai_client_default_request_plays_and_every_format_decodes() {
    let Some(python) = openai_python() else {
        return;
    };
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let text = "One sentence. And another one here. A third, to make it longer.";
    let want = expected(&server, text);
    let report = python_report(
        &python,
        "openai_formats.py",
        &[server.url.as_ref(), "tone".as_ref(), text.as_ref()],
    );
    eprintln!("openai client, formats decoded by PyAV: {report}");
    let f = &report["formats"];
    let seconds = want.len() as f64 / RATE as f64;
    assert_eq!(f["default"]["content_type"], "audio/mpeg");
    assert_eq!(f["default"]["codec"], "mp3float");
    assert_eq!(f["wav"]["samples"], want.len());
    assert_eq!(f["flac"]["samples"], want.len());
    for (name, min_snr) in [("default", 15.0), ("mp3", 15.0), ("opus", 10.0)] {
        let e = &f[name];
        // MP3 keeps LAME's priming delay: the audio starts `lag` samples in.
        let delay = e["lag"].as_f64().unwrap_or(0.0) / e["rate"].as_f64().unwrap();
        let got = e["seconds"].as_f64().unwrap() - delay;
        assert!(
            got >= seconds - 1e-3 && got - seconds < 0.15,
            "{name}: {got:.3} s of audio against {seconds:.3} s"
        );
        let snr = e["snr_db"].as_f64().unwrap();
        assert!(snr >= min_snr, "{name}: SNR {snr} dB");
    }
    assert_eq!(f["opus"]["rate"], 48_000);
    assert!(f["flac"].get("snr_db").is_none() || f["flac"]["snr_db"].as_f64().unwrap() > 90.0);
}
