//! The engine registry: voices by id (an MMS-TTS directory here, from the VITS parity
//! fixtures), warm-up at load, batched and unbatched voices agreeing, and long-input chunking.

use std::path::PathBuf;
use std::sync::Arc;

use ferrovox_engine::{
    BatcherConfig, ChatterboxOptions, Engine, EngineConfig, EngineError, SynthesisOptions,
    VitsOptions,
};

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

fn quiet() -> SynthesisOptions {
    SynthesisOptions {
        vits: VitsOptions {
            noise_scale: Some(0.0),
            noise_w: Some(0.0),
            ..Default::default()
        },
        unit_silence: 0.05,
        ..Default::default()
    }
}

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
        .synthesize("hello world. second sentence.", &quiet())
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
    let a = direct
        .voice(id)
        .unwrap()
        .synthesize(text, &quiet())
        .unwrap();
    let b = batched
        .voice(id)
        .unwrap()
        .synthesize(text, &quiet())
        .unwrap();
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
    let units = voice.prepare(&text, &quiet()).unwrap();
    assert!(units.len() >= 3, "{} units", units.len());
    assert!(units[..units.len() - 1].iter().all(|u| !u.ends_sentence));
    assert!(units.last().unwrap().ends_sentence);
    let whole = voice.synthesize(&text, &quiet()).unwrap();
    let pieces: usize = units
        .iter()
        .map(|u| voice.synthesize_units(vec![u.clone()], &quiet()).unwrap()[0].len())
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
        vits: VitsOptions {
            length_scale: Some(50.0),
            ..Default::default()
        },
        ..quiet()
    };
    let err = voice.synthesize("hello.", &bad).unwrap_err();
    assert!(err.to_string().contains("length_scale"), "{err}");
    // Another family's option is refused, named, not ignored.
    let foreign = SynthesisOptions {
        chatterbox: ChatterboxOptions {
            exaggeration: Some(0.7),
            ..Default::default()
        },
        ..quiet()
    };
    let err = voice.synthesize("hello.", &foreign).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidOption {
                field: "exaggeration",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_input_error());
    for speed in [0.1, 5.0] {
        let err = voice
            .synthesize(
                "hello.",
                &SynthesisOptions {
                    speed: Some(speed),
                    ..quiet()
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, EngineError::InvalidOption { field: "speed", .. }),
            "{err}"
        );
    }
    // Only punctuation: nothing to speak is the caller's error.
    let err = voice.synthesize("?! ...", &quiet()).unwrap_err();
    assert!(err.is_input_error(), "{err}");
    let err = voice.synthesize("  ", &quiet()).unwrap_err();
    assert!(matches!(err, EngineError::EmptyInput(_)), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// With noise on, a request's audio depends on its own seed alone: the same whether it runs
/// alone or batched beside another request with another seed.
#[test]
fn a_seed_gives_the_same_audio_alone_or_batched() {
    let dir = mms_dir("seed");
    let alone_engine = Engine::new(EngineConfig {
        batching: None,
        warm_up: false,
        ..Default::default()
    });
    let batched_engine = std::sync::Arc::new(Engine::new(EngineConfig {
        batching: Some(BatcherConfig {
            max_batch: 8,
            max_wait: std::time::Duration::from_millis(200),
            queue_capacity: 8,
        }),
        warm_up: false,
        ..Default::default()
    }));
    let id = dir.to_str().unwrap().to_string();
    // The prior's noise on, the durations' off: the same text then takes the same frames in
    // both requests, so no item is padded (padding moves a short item's audio in this tiny
    // model, noise or not: see `batched_units_match_units_alone` in joe.rs), and only the
    // seeds tell the two apart.
    let noisy = |seed| SynthesisOptions {
        seed,
        unit_silence: 0.05,
        vits: VitsOptions {
            noise_w: Some(0.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let texts = ["hello world.", "hello world."];
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .zip([7u64, 9])
        .map(|(t, seed)| {
            alone_engine
                .voice(&id)
                .unwrap()
                .synthesize(t, &noisy(seed))
                .unwrap()
                .samples
        })
        .collect();
    let handles: Vec<_> = texts
        .iter()
        .zip([7u64, 9])
        .map(|(t, seed)| {
            let (engine, id, t) = (batched_engine.clone(), id.clone(), t.to_string());
            std::thread::spawn(move || {
                engine
                    .voice(&id)
                    .unwrap()
                    .synthesize(&t, &noisy(seed))
                    .unwrap()
                    .samples
            })
        })
        .collect();
    let batched: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let stats = batched_engine.voice(&id).unwrap().batcher_stats().unwrap();
    assert!(
        stats.largest_batch > 1,
        "the two requests did not share a batch: {stats:?}"
    );
    assert_ne!(alone[0], alone[1], "two seeds, two waveforms");
    for (a, b) in alone.iter().zip(&batched) {
        assert_eq!(a.len(), b.len());
        let err = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("batched vs alone: max abs diff {err:.2e}");
        assert!(err < 1e-4, "{err}");
    }
    assert_ne!(
        alone[0],
        alone_engine
            .voice(&id)
            .unwrap()
            .synthesize(texts[0], &noisy(8))
            .unwrap()
            .samples
    );
    std::fs::remove_dir_all(dir).unwrap();
}
