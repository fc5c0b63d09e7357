//! Chatterbox over HTTP: the small random-weight model of the parity fixtures, laid out as a
//! model directory and loaded as a released one is (its sizes from `ferrovox-voice.json`),
//! streamed through `/v1/audio/speech` with its own controls, and through the official
//! `openai` Python client.

// ureq's error type is what the shared client returns.
#![allow(clippy::result_large_err)]

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use common::chatterbox::small_chatterbox_dir;
use common::*;
use serde_json::json;

fn serve(dir: &Path) -> TestServer {
    let id = dir.to_str().unwrap().to_string();
    let model = ferrovox_engine::open_voice(&id, &Device::Cpu).unwrap();
    assert_eq!(model.family(), ferrovox_voices::Family::Chatterbox);
    let config = ferrovox_server::ServerConfig {
        voices: vec![id],
        ..Default::default()
    };
    TestServer::start(vec![model], config, None, true)
}

fn speech(dir: &Path, extra: serde_json::Value) -> String {
    let mut body = json!({
        "model": "chatterbox", "voice": dir.to_str().unwrap(), "input": "Hello there, a small test.",
        "response_format": "pcm", "max_new_tokens": 60,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

/// Streamed 24 kHz PCM with the request's controls and seed (the same seed, the same audio);
/// another family's control, an unknown field or an out-of-range control is a 422 naming it.
#[test]
fn chatterbox_streams_with_its_own_controls() {
    let dir = small_chatterbox_dir("http");
    let server = serve(&dir);
    let voices: serde_json::Value = server.get("/v1/voices").unwrap().into_json().unwrap();
    assert_eq!(voices["data"][0]["model"], "chatterbox");
    assert_eq!(voices["data"][0]["sample_rate"], 24_000);
    let controls = json!({"exaggeration": 0.7, "cfg_weight": 0.3, "temperature": 0.9, "seed": 5});
    let a = body_bytes(server.post(&speech(&dir, controls.clone())).unwrap());
    assert!(a.len() > 2 * 24_000 / 5, "{} bytes", a.len());
    let b = body_bytes(server.post(&speech(&dir, controls)).unwrap());
    assert_eq!(a, b, "a seed gives the same audio");
    let other = body_bytes(server.post(&speech(&dir, json!({"seed": 6}))).unwrap());
    assert_ne!(a, other);
    for (extra, field) in [
        (json!({"noise_scale": 0.5}), "noise_scale"),
        (json!({"temperature": 50}), "temperature"),
        (json!({"max_new_tokens": 0}), "max_new_tokens"),
        (json!({"bogus": 1}), "bogus"),
        (json!({"speed": 1.5}), "speed"),
    ] {
        let err = server.post(&speech(&dir, extra.clone())).unwrap_err();
        let ureq::Error::Status(status, response) = err else {
            panic!("{extra}: {err}")
        };
        let body: serde_json::Value = response.into_json().unwrap();
        assert_eq!(status, 422, "{extra}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{extra}: {body}"
        );
    }
    // Only punctuation: the client's error, named, not a 500.
    let err = server
        .post(&speech(&dir, json!({"input": "?!"})))
        .unwrap_err();
    let ureq::Error::Status(status, _) = err else {
        panic!("{err}")
    };
    assert_eq!(status, 400);
    // Random weights never sample the stop token: each generation above ran out of tokens,
    // and says so.
    let metrics = server.get("/metrics").unwrap().into_string().unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ferrovox_chatterbox_unstopped_generations_total"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!line.ends_with(" 0"), "{line}");
    // A VITS model name for a Chatterbox voice.
    let err = server
        .post(&speech(&dir, json!({"model": "piper"})))
        .unwrap_err();
    assert!(matches!(err, ureq::Error::Status(404, _)), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The official `openai` Python client streams Chatterbox audio (its `extra_body` carries the
/// controls) and gets a 422 as its own error type. Needs `FERROVOX_OPENAI_PYTHON`, a Python
/// with `openai` (`.ci/run` makes one); skipped without it unless `FERROVOX_REQUIRE_OPENAI=1`.
#[test]
fn the_openai_client_streams_chatterbox_audio() {
    let Some(python) = openai_python() else {
        return;
    };
    let dir = small_chatterbox_dir("openai");
    let server = serve(&dir);
    let report = python_report(
        &python,
        "openai_client.py",
        &[server.url.as_ref(), dir.as_os_str()],
    );
    eprintln!("openai client: {report}");
    assert_eq!(report["status"], 200);
    assert!(
        report["bytes"].as_u64().unwrap() > 2 * 24_000 / 5,
        "{report}"
    );
    assert!(report["chunks"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["bad"][0], "UnprocessableEntityError", "{report}");
    assert!(
        report["bad"][2].as_str().unwrap().contains("temperature"),
        "{report}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Concurrent streamed requests decode T3 as one batch (continuous batching) and each gets
/// exactly the audio it gets alone from a voice without batching: the same bytes per seed.
#[test]
fn concurrent_requests_decode_together_and_each_gets_its_own_audio() {
    let dir = small_chatterbox_dir("batch");
    let id = dir.to_str().unwrap().to_string();
    // Audio that stays the same under batching is a property of f32 products: with bf16 ones
    // a padded item's mel moves by bf16 rounding (`batch.rs` bounds it), which the small
    // model's HiFT turns into another phase.
    let exact = || {
        let mut tts = ferrovox_chatterbox::ChatterboxTts::from_dir(&dir, &Device::Cpu).unwrap();
        tts.bf16_products(false).unwrap();
        tts
    };
    let voice = |slots| -> Arc<dyn ferrovox_engine::TtsModel> {
        Arc::new(ferrovox_engine::ChatterboxVoice::with_slots(&id, exact(), slots).unwrap())
    };
    let config = || ferrovox_server::ServerConfig {
        voices: vec![id.clone()],
        ..Default::default()
    };
    let seeds = 1..=6u64;
    let body = |seed: u64| {
        speech(
            &dir,
            json!({"seed": seed, "input": format!("Request {seed} speaks.")}),
        )
    };
    let alone = TestServer::start(vec![voice(0)], config(), None, true);
    let want: Vec<Vec<u8>> = seeds
        .clone()
        .map(|s| body_bytes(alone.post(&body(s)).unwrap()))
        .collect();
    let metrics = alone.get("/metrics").unwrap().into_string().unwrap();
    assert!(
        !metrics.contains("chatterbox_t3_decode_steps_total"),
        "no decode batch: {metrics}"
    );

    let batched = TestServer::start(vec![voice(4)], config(), None, true);
    let start = Arc::new(std::sync::Barrier::new(want.len()));
    let got: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let threads: Vec<_> = seeds
            .clone()
            .map(|s| {
                let (start, body, server) = (start.clone(), body(s), &batched);
                scope.spawn(move || {
                    start.wait();
                    body_bytes(server.post(&body).unwrap())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(w.len() > 24_000, "request {i}: {} bytes", w.len());
        assert_eq!(
            g, w,
            "request {i}: batched audio differs from its audio alone"
        );
    }
    assert_ne!(want[0], want[1]);
    let metrics = batched.get("/metrics").unwrap().into_string().unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("ferrovox_{name}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (largest, steps, tokens) = (
        value("chatterbox_t3_largest_decode_batch"),
        value("chatterbox_t3_decode_steps_total"),
        value("chatterbox_t3_batched_tokens_total"),
    );
    eprintln!(
        "{} concurrent requests: {steps} decode steps for {tokens} tokens, at most {largest} \
         generations in one step",
        want.len()
    );
    assert!((2..=4).contains(&largest), "largest decode batch {largest}");
    assert!(
        tokens > steps,
        "{tokens} tokens in {steps} steps: no step was shared"
    );

    // S3Gen's flow batched across the requests too: each request's audio stays its audio
    // alone within f32 summation order (`flow_batch.rs` bounds the samples by 1e-2).
    let flow_voice: Arc<dyn ferrovox_engine::TtsModel> = {
        Arc::new(
            ferrovox_engine::ChatterboxVoice::with_slots(&id, exact(), 4)
                .unwrap()
                .with_flow_batch(ferrovox_chatterbox::FlowBatchConfig::new(6)),
        )
    };
    let flowing = TestServer::start(vec![flow_voice], config(), None, true);
    let start = Arc::new(std::sync::Barrier::new(want.len()));
    let got: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let threads: Vec<_> = seeds
            .clone()
            .map(|s| {
                let (start, body, server) = (start.clone(), body(s), &flowing);
                scope.spawn(move || {
                    start.wait();
                    body_bytes(server.post(&body).unwrap())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let samples = |b: &[u8]| -> Vec<i32> {
        b.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
            .collect()
    };
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (g, w) = (samples(g), samples(w));
        assert_eq!(g.len(), w.len(), "request {i}: length");
        let max = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).max().unwrap();
        eprintln!("request {i}, flow batched: max |diff| {max} of 32767");
        assert!(max <= 328, "request {i}: flow-batched audio moved by {max}");
    }
    let metrics = flowing.get("/metrics").unwrap().into_string().unwrap();
    let batched_runs = metrics
        .lines()
        .find(|l| l.starts_with("ferrovox_chatterbox_s3gen_flow_batched_runs_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("flow batch counters in {metrics}"));
    assert!(batched_runs >= 1, "no flow run was shared: {metrics}");
    std::fs::remove_dir_all(dir).ok();
}

/// A decode batch of one slot and a queue of one: past the running generation, the one held
/// for the next free slot and the one queued, requests are refused at once as overloaded;
/// generations whose owner went away leave, and the batch takes requests again.
#[test]
fn a_full_decode_queue_refuses_and_recovers() {
    use ferrovox_chatterbox::t3::{BatchConfig, Flow, SeededNoise};
    use ferrovox_chatterbox::GenerateOptions;
    let dir = small_chatterbox_dir("queue");
    let tts = ferrovox_chatterbox::ChatterboxTts::from_dir(&dir, &Device::Cpu).unwrap();
    let t3 = tts.t3();
    let text = tts.text_tokens("A long generation.").unwrap();
    let g = GenerateOptions {
        sampling: ferrovox_chatterbox::t3::SamplingOptions {
            max_new_tokens: 100,
            ..Default::default()
        },
        ..Default::default()
    };
    let config = BatchConfig::for_lengths(t3, 1, text.len(), 100);
    let decoder = ferrovox_engine::T3Decoder::start(t3, config, 1, &Device::Cpu).unwrap();
    let submit = |seed| {
        let request = tts
            .t3_request(
                &text,
                tts.builtin_voice(),
                &g,
                Box::new(SeededNoise::new(seed)),
            )
            .unwrap();
        decoder.submit(request)
    };
    let results: Vec<_> = (0..6).map(submit).collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ferrovox_engine::EngineError::Overloaded)))
        .count();
    assert!(refused >= 3, "{refused} of 6 refused");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(ferrovox_engine::EngineError::Overloaded))));
    drop(results);
    // The abandoned generations leave at their next step; a new one then runs to its end.
    let generated = loop {
        match submit(99) {
            Ok(generation) => break generation.run(&mut |_| Ok(Flow::Continue)).unwrap(),
            Err(ferrovox_engine::EngineError::Overloaded) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        generated.stopped || generated.tokens.len() == 100,
        "{} tokens, no stop",
        generated.tokens.len()
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A multilingual model directory (the multilingual repository's layout) is found as a
/// Chatterbox voice, speaks the language a request names (its tag and preprocessing reach T3;
/// English when none is named) and refuses one it does not speak with a 422 naming the 23. The
/// English model refuses other languages; a directory whose only multilingual T3 is v2 loads it
/// with the stop detector, refused here naming the file and why (the small T3 has too few
/// layers for the detector's heads).
#[test]
fn a_multilingual_voice_speaks_the_language_asked_for() {
    use common::chatterbox::multilingual_chatterbox_dir;
    use ferrovox_chatterbox::ChatterboxTts;
    let dir = multilingual_chatterbox_dir("mtl");
    let tts = ChatterboxTts::from_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(tts.languages().len(), 23);
    let tokens = |lang: Option<&str>| tts.text_tokens_in("Bonjour à tous.", lang).unwrap();
    let (fr, de) = (tokens(Some("fr")), tokens(Some("de")));
    assert_ne!(fr[1], de[1], "the language tag follows the request");
    assert_eq!(fr[2..], de[2..], "the same Latin text past the tag");
    assert_eq!(tokens(None), tokens(Some("en")));
    assert_eq!(tokens(Some("fr-CA")), fr);
    let zh = tts.text_tokens_in("火车八点到。", Some("zh")).unwrap();
    assert!(zh.len() > 10, "Cangjie codes: {zh:?}");
    drop(tts);

    // The request's language reaches the units the engine hands T3.
    let model = ferrovox_engine::open_voice(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let units = |language: &str| {
        let options = ferrovox_engine::SynthesisOptions {
            language: Some(language.into()),
            ..Default::default()
        };
        model.prepare("Bonjour à tous.", &options).unwrap()[0]
            .ids
            .clone()
    };
    assert!(units("fr") == fr && units("de") == de);
    drop(model);

    let server = serve(&dir);
    let voices: serde_json::Value = server.get("/v1/voices").unwrap().into_json().unwrap();
    assert_eq!(voices["data"][0]["languages"].as_array().unwrap().len(), 23);
    speaks_french(&server, &dir);
    let err = server
        .post(&speech(&dir, json!({"language": "xx"})))
        .unwrap_err();
    let ureq::Error::Status(status, response) = err else {
        panic!("{err}")
    };
    let body: serde_json::Value = response.into_json().unwrap();
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`xx`") && message.contains("zh"),
        "{message}"
    );
    drop(server);

    let english = small_chatterbox_dir("mtl-en");
    let e = ChatterboxTts::from_dir(&english, &Device::Cpu)
        .unwrap()
        .text_tokens_in("Bonjour.", Some("fr"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("only English") && e.contains("`fr`"), "{e}");

    std::fs::rename(
        dir.join("t3_mtl23ls_v3.safetensors"),
        dir.join("t3_mtl23ls_v2.safetensors"),
    )
    .unwrap();
    // v2 runs the stop detector on heads of layers 9, 12 and 13, which this 2-layer T3 lacks.
    let e = ChatterboxTts::from_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t3_mtl23ls_v2.safetensors") && e.contains("stop detector"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(english).ok();
}

/// `dir`'s voice speaks a French sentence of a fifth of a second or more.
fn speaks_french(server: &TestServer, dir: &Path) {
    let audio = body_bytes(
        server
            .post(&speech(
                dir,
                json!({"language": "fr", "input": "Bonjour à tous.", "seed": 3}),
            ))
            .unwrap(),
    );
    assert!(audio.len() > 24_000 / 5, "{} bytes", audio.len());
}

/// A multilingual directory whose T3 is v2 loads it with upstream's stop detector on: its
/// generations decode alone (no decode batch), and it speaks the language asked for, through
/// the server, ending on a stop the detector allowed or forced.
#[test]
fn a_multilingual_v2_voice_speaks_with_its_stop_detector() {
    use common::chatterbox::multilingual_v2_chatterbox_dir;
    use ferrovox_chatterbox::ChatterboxTts;
    let dir = multilingual_v2_chatterbox_dir("mtl-v2");
    let tts = ChatterboxTts::from_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(
        tts.t3().config().alignment_heads,
        ferrovox_chatterbox::t3::ALIGNED_HEADS.to_vec()
    );
    let voice = ferrovox_engine::ChatterboxVoice::with_slots("mtl-v2", tts, 4).unwrap();
    assert!(
        voice.decoder().is_none(),
        "a detector's generations decode alone"
    );
    drop(voice);

    let server = serve(&dir);
    speaks_french(&server, &dir);
    drop(server);
    std::fs::remove_dir_all(dir).ok();
}

/// A directory holding both of the repository's models (a whole hub snapshot) loads English by
/// default and the multilingual model when asked for it (what `chatterbox-multilingual`
/// resolves to).
#[test]
fn a_snapshot_with_both_models_loads_either() {
    use common::chatterbox::{multilingual_chatterbox_dir, small_chatterbox_dir};
    use ferrovox_chatterbox::ChatterboxTts;
    let dir = multilingual_chatterbox_dir("both");
    let english = small_chatterbox_dir("both-en");
    for f in ["t3_cfg.safetensors", "tokenizer.json"] {
        std::fs::copy(english.join(f), dir.join(f)).unwrap();
    }
    let languages = |multilingual| {
        ChatterboxTts::from_dir_as(&dir, multilingual, &Device::Cpu)
            .unwrap()
            .languages()
            .len()
    };
    assert_eq!(
        ChatterboxTts::from_dir(&dir, &Device::Cpu)
            .unwrap()
            .languages()
            .len(),
        1
    );
    assert_eq!((languages(false), languages(true)), (1, 23));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(english).ok();
}

/// A Chatterbox Turbo directory is found as a Turbo voice and speaks through the server with
/// Turbo's controls; the controls Turbo lacks are a 422 naming them.
#[test]
fn a_turbo_voice_speaks_and_refuses_the_controls_it_lacks() {
    use common::chatterbox::turbo_chatterbox_dir;
    let dir = turbo_chatterbox_dir("turbo");
    match ferrovox_voices::resolve(dir.to_str().unwrap()).unwrap() {
        ferrovox_voices::VoiceFiles::Chatterbox { model, .. } => {
            assert_eq!(model, ferrovox_voices::ChatterboxModel::Turbo)
        }
        other => panic!("{other:?}"),
    }
    let server = serve(&dir);
    let voices: serde_json::Value = server.get("/v1/voices").unwrap().into_json().unwrap();
    assert_eq!(voices["data"][0]["languages"], json!(["en"]));
    let controls = json!({"input": "Oh, that's funny [laugh] really.", "temperature": 0.9, "top_p": 0.9, "seed": 4});
    let audio = body_bytes(server.post(&speech(&dir, controls.clone())).unwrap());
    assert!(audio.len() > 24_000 / 5, "{} bytes", audio.len());
    assert_eq!(
        body_bytes(server.post(&speech(&dir, controls)).unwrap()),
        audio,
        "the same seed, the same audio"
    );
    for field in ["cfg_weight", "exaggeration", "min_p"] {
        let (status, body) = failure(server.post(&speech(&dir, json!({ field: 0.3 }))));
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    drop(server);
    std::fs::remove_dir_all(dir).ok();
}

/// Every Chatterbox variant speaks a WAV over HTTP from its small random-weight model directory
/// (English; multilingual, in French; Turbo; Nano: Turbo's layout under Nano's T3 file name):
/// a 24 kHz mono 16-bit RIFF with sound in it. With `FERROVOX_SAMPLES_DIR` set each one is also
/// written there as `<variant>.wav` (random weights: the audio is not speech).
#[test]
fn every_variant_speaks_a_wav() {
    use common::chatterbox::{multilingual_chatterbox_dir, turbo_chatterbox_dir};
    let nano = turbo_chatterbox_dir("wav-nano");
    std::fs::rename(
        nano.join("t3_turbo_v1.safetensors"),
        nano.join("t3_nano_v1.safetensors"),
    )
    .unwrap();
    let variants = [
        ("chatterbox", small_chatterbox_dir("wav-en"), json!({})),
        (
            "chatterbox-multilingual",
            multilingual_chatterbox_dir("wav-mtl"),
            json!({"language": "fr", "input": "Bonjour, un petit essai."}),
        ),
        (
            "chatterbox-turbo",
            turbo_chatterbox_dir("wav-turbo"),
            json!({}),
        ),
        ("chatterbox-nano", nano, json!({})),
    ];
    let samples = std::env::var_os("FERROVOX_SAMPLES_DIR").map(std::path::PathBuf::from);
    for (variant, dir, mut extra) in variants {
        let server = serve(&dir);
        extra["response_format"] = json!("wav");
        extra["seed"] = json!(1);
        let mut wav = body_bytes(server.post(&speech(&dir, extra)).unwrap());
        assert!(
            wav.len() > 44 + 24_000 / 5,
            "{variant}: {} bytes",
            wav.len()
        );
        let u16_at = |i: usize| u16::from_le_bytes([wav[i], wav[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([wav[i], wav[i + 1], wav[i + 2], wav[i + 3]]);
        assert_eq!(&wav[..4], b"RIFF", "{variant}");
        assert_eq!(&wav[8..16], b"WAVEfmt ", "{variant}");
        assert_eq!(
            (u16_at(22), u32_at(24), u16_at(34)),
            (1, 24_000, 16),
            "{variant}"
        );
        assert_eq!(&wav[36..40], b"data", "{variant}");
        let peak = wav[44..]
            .chunks_exact(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs())
            .max()
            .unwrap();
        assert!(peak > 30, "{variant}: silent (peak {peak})");
        if let Some(out) = &samples {
            // A streamed WAV's header leaves the sizes open; a file gets them filled in.
            let len = wav.len() as u32;
            wav[4..8].copy_from_slice(&(len - 8).to_le_bytes());
            wav[40..44].copy_from_slice(&(len - 44).to_le_bytes());
            std::fs::create_dir_all(out).unwrap();
            std::fs::write(out.join(format!("{variant}.wav")), &wav).unwrap();
        }
        drop(server);
        std::fs::remove_dir_all(dir).ok();
    }
}
