//! The engine registry: voices by id (an MMS-TTS directory here, from the VITS parity
//! fixtures), warm-up at load, batched and unbatched voices agreeing, and long-input chunking.

use std::path::PathBuf;
use std::sync::Arc;

use ferrovox_engine::{BatcherConfig, Engine, EngineConfig, EngineError, SynthesisOptions};

fn mms_dir(tag: &str) -> PathBuf {
    let fixtures =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/vits/tests/fixtures");
    let dir = std::env::temp_dir().join(format!("ferrovox-mms-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures.join("tiny_sdp.config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::copy(fixtures.join("vocab.json"), dir.join("vocab.json")).unwrap();
    let weights: std::collections::HashMap<_, _> = candle_core::safetensors::load(
        fixtures.join("tiny_sdp.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .into_iter()
    .filter(|(k, _)| !k.starts_with("io."))
    .collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    dir
}

const QUIET: SynthesisOptions = SynthesisOptions {
    length_scale: None,
    noise_scale: Some(0.0),
    noise_w: Some(0.0),
    speaker: None,
    unit_silence: 0.05,
    seed: 0,
    normalize: false,
};

#[test]
fn an_mms_directory_loads_warms_up_and_speaks() {
    let dir = mms_dir("load");
    let engine = Engine::new(EngineConfig {
        batching: None,
        ..Default::default()
    });
    let id = dir.to_str().unwrap();
    let voice = engine.voice(id).unwrap();
    assert!(voice.warm_up_time().is_some());
    assert_eq!(engine.loaded(), [id]);
    assert!(
        Arc::ptr_eq(&voice, &engine.voice(id).unwrap()),
        "loaded once"
    );
    let audio = voice
        .synthesize("hello world. second sentence.", &QUIET)
        .unwrap();
    assert_eq!(audio.sample_rate, voice.model().sample_rate());
    assert!(audio.samples.len() > 100);
    assert!(audio.samples.iter().all(|s| s.is_finite()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn batched_and_direct_voices_give_the_same_audio() {
    let dir = mms_dir("batch");
    let id = dir.to_str().unwrap();
    let direct = Engine::new(EngineConfig {
        batching: None,
        warm_up: false,
        ..Default::default()
    });
    let batched = Engine::new(EngineConfig {
        batching: Some(BatcherConfig::default()),
        warm_up: false,
        ..Default::default()
    });
    let text = "The first one. Then a second, longer sentence.";
    let a = direct.voice(id).unwrap().synthesize(text, &QUIET).unwrap();
    let b = batched.voice(id).unwrap().synthesize(text, &QUIET).unwrap();
    assert_eq!(a, b);
    assert_eq!(batched.voice(id).unwrap().batcher_stats().unwrap().units, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_long_sentence_is_cut_into_crossfaded_units() {
    let dir = mms_dir("long");
    let engine = Engine::new(EngineConfig {
        batching: None,
        warm_up: false,
        ..Default::default()
    });
    let voice = engine.voice(dir.to_str().unwrap()).unwrap();
    // 1,300 characters, no sentence end until the last word.
    let text = format!("{} the end.", "one more clause of words, ".repeat(50));
    let units = voice.prepare(&text, &QUIET).unwrap();
    assert!(units.len() >= 3, "{} units", units.len());
    assert!(units[..units.len() - 1].iter().all(|u| !u.ends_sentence));
    assert!(units.last().unwrap().ends_sentence);
    let whole = voice.synthesize(&text, &QUIET).unwrap();
    let pieces: usize = units
        .iter()
        .map(|u| voice.synthesize_units(vec![u.clone()], &QUIET).unwrap()[0].len())
        .sum();
    // Each cut overlaps 20 ms; the end gets the sentence silence.
    let overlap = voice.model().sample_rate() as usize / 50;
    let silence = (0.05 * voice.model().sample_rate() as f64) as usize;
    assert_eq!(
        whole.samples.len(),
        pieces - (units.len() - 1) * overlap + silence
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_voices_and_bad_options_are_named() {
    let engine = Engine::new(EngineConfig::default());
    let err = engine.voice("xx_XX-nobody").unwrap_err();
    assert!(matches!(err, EngineError::Voice(_)), "{err}");
    assert!(err.to_string().contains("xx_XX-nobody"));
    let dir = mms_dir("bad");
    let voice = engine.voice(dir.to_str().unwrap()).unwrap();
    let bad = SynthesisOptions {
        length_scale: Some(50.0),
        ..QUIET
    };
    let err = voice.synthesize("hello.", &bad).unwrap_err();
    assert!(err.to_string().contains("length_scale"), "{err}");
    let err = voice.synthesize("  ", &QUIET).unwrap_err();
    assert!(matches!(err, EngineError::EmptyInput(_)), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
