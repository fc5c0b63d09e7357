//! Chatterbox Turbo end to end on a directory laid out as the released one, built from the
//! small parity fixtures (Turbo's T3 of `t3_turbo.safetensors`, S3Gen's encoder and HiFT with
//! the meanflow decoder of `s3gen_meanflow.safetensors`, the synthetic Turbo tokenizer): text
//! to audio through the stop guard and the silence tokens, and bad directories named. Each
//! stage's parity with upstream is in its own test (`t3_turbo_parity.rs`,
//! `s3gen_meanflow_parity.rs`, `turbo_tokenizer_parity.rs`, `s3gen_parity.rs`); the whole
//! pipeline against upstream's `generate` is `text_to_audio_matches_upstream`
//! (`turbo_e2e.safetensors`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{ids, Fixture};
use ferrovox_chatterbox::t3::{Flow, ReplayedNoise, SeededNoise, T3Cond, TurboOptions};
use ferrovox_chatterbox::{
    speech_tokens, Conditionals, RowFormat, SpeakerReference, TurboSize, TurboTts, GUARD_FLOOR,
    NANO_T3, TURBO_T3,
};

/// The silence token of the small S3Gen (256 codes; upstream's 4299 is outside them).
const SILENCE: u32 = 200;

fn part(fx: &Fixture, prefixes: &[&str]) -> HashMap<String, Tensor> {
    fx.tensors
        .iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn turbo_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovox-turbo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t3 = Fixture::load("t3_turbo");
    let save = |tensors: &HashMap<String, Tensor>, name: &str| {
        candle_core::safetensors::save(tensors, dir.join(name)).unwrap()
    };
    save(
        &part(
            &t3,
            &[
                "cond_enc.",
                "text_emb.",
                "speech_emb.",
                "speech_head.",
                "tfmr.",
                "text_head.",
            ],
        ),
        "t3_turbo_v1.safetensors",
    );
    let mut s3gen = part(&Fixture::load("encoder"), &["flow."]);
    s3gen.retain(|k, _| !k.starts_with("flow.decoder."));
    s3gen.extend(part(
        &Fixture::load("cfm"),
        &["flow.spk_embed_affine_layer."],
    ));
    s3gen.extend(part(&Fixture::load("s3gen_meanflow"), &["flow.decoder."]));
    s3gen.extend(part(&Fixture::load("hift"), &["mel2wav."]));
    save(&s3gen, "s3gen_meanflow.safetensors");
    for f in std::fs::read_dir(common::fixtures().join("turbo_tokenizer")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let small: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("small_model.json")).unwrap(),
    )
    .unwrap();
    let sizes = serde_json::json!({
        "family": "chatterbox",
        "t3": t3.config["t3_config"],
        "gpt2": t3.config["gpt2_config"],
        "s3gen": small["s3gen"],
        "silence_token": SILENCE,
    });
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();
    let e2e = Fixture::load("s3gen_e2e");
    let voice = Conditionals {
        t3: T3Cond {
            speaker_emb: t3.get("in.speaker_emb"),
            cond_prompt_speech_tokens: Some(t3.get("in.cond_prompt_speech_tokens")),
            emotion_adv: 0.0,
        },
        gen: SpeakerReference {
            prompt_tokens: ids(&e2e.get("in.prompt_tokens")),
            prompt_feat: e2e.get("in.prompt_feat"),
            xvector: e2e.get("in.xvector"),
        },
    };
    voice.save(&dir.join("conds.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> TurboTts {
    TurboTts::from_dir(dir, &Device::Cpu).unwrap()
}

/// Text with a tag to audio: the tag is one text token, S3Gen decodes the speech tokens and
/// the three silence tokens (960 samples each), and the same seed gives the same audio.
#[test]
fn text_becomes_audio_with_the_silence_tokens() {
    let dir = turbo_dir("speak");
    let tts = load(&dir);
    assert!(TurboTts::is_turbo_dir(&dir));
    let text = tts.text_tokens("hello there [laugh] how are you").unwrap();
    // punc_norm ends it with a full stop: the tag, then ".".
    let tag = tts.text_tokens("[laugh]").unwrap();
    assert_eq!(tag.len(), 2);
    assert!(text.contains(&tag[0]), "{text:?}");
    assert!(tts.text_tokens("  ").is_err());
    let options = TurboOptions {
        max_new_tokens: 40,
        ..TurboOptions::default()
    };
    let voice = tts.builtin_voice().clone();
    let run = || {
        tts.synthesize(&text, &voice, &options, 7, &mut SeededNoise::new(3))
            .unwrap()
    };
    let (audio, outcome) = run();
    assert!(outcome.tokens > 0 && outcome.tokens <= 40, "{outcome:?}");
    assert_eq!(audio.len(), (outcome.tokens + 3) * 960, "{outcome:?}");
    assert!(audio.iter().all(|s| s.is_finite()));
    assert!(audio.iter().map(|s| s.abs()).fold(0f32, f32::max) > 1e-3);
    assert_eq!(run().0, audio);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The whole pipeline against upstream's `ChatterboxTurboTTS.generate` (`turbo_e2e.safetensors`,
/// `gen_turbo_e2e.py`, whose own cross-check is bit-identical audio from upstream's `generate`):
/// text ids identical; speech tokens identical under the recorded draws, the stop token drawn;
/// the three silence tokens appended; audio within 1e-3 under the recorded S3Gen noise (S3Gen's
/// end-to-end bound: HiFT's F0 path amplifies f32 rounding).
#[test]
fn text_to_audio_matches_upstream() {
    let fx = Fixture::load("turbo_e2e");
    let dir = turbo_dir("e2e");
    let mut tts = load(&dir);
    // Parity is of f32 weights and products; the reduced ones are bounded against f32 by
    // their own tests.
    tts.pack_steps(RowFormat::F32).unwrap();
    tts.bf16_products(false).unwrap();
    let text = fx.config["text"]
        .as_str()
        .expect("the fixture names its text");
    let text_tokens = tts.text_tokens(text).unwrap();
    assert_eq!(text_tokens, ids(&fx.get("in.text_tokens")), "text tokens");
    let cond = T3Cond {
        speaker_emb: fx.get("voice.t3.speaker_emb"),
        cond_prompt_speech_tokens: Some(fx.get("voice.t3.cond_prompt_speech_tokens")),
        emotion_adv: 0.0,
    };
    let drawn = ids(&fx.get("out.drawn"));
    let draws = (0..drawn.len())
        .map(|i| fx.get(&format!("draw.q{i}")))
        .collect();
    // Upstream's 1000 would overrun the small GPT-2's 128 positions, which ferrovox refuses
    // up front; the run stops long before either.
    let options = TurboOptions {
        max_new_tokens: tts.t3().room(&cond, text_tokens.len()).unwrap(),
        ..TurboOptions::default()
    };
    let generated = tts
        .t3()
        .generate(
            &cond,
            &text_tokens,
            &options,
            &mut ReplayedNoise::new(draws),
            &mut |_| Ok(Flow::Continue),
        )
        .unwrap();
    assert_eq!(generated.tokens, drawn[..drawn.len() - 1], "T3 tokens");
    assert!(generated.stopped);
    let silence = fx.config["silence_token"].as_u64().unwrap() as u32;
    let mut speech = speech_tokens(&generated.tokens, tts.t3().config().start_speech_token);
    speech.extend([silence; 3]);
    assert_eq!(speech, ids(&fx.get("out.speech_tokens")), "speech tokens");
    let reference = SpeakerReference {
        prompt_tokens: ids(&fx.get("voice.gen.prompt_token")),
        prompt_feat: fx.get("voice.gen.prompt_feat"),
        xvector: fx.get("voice.gen.embedding"),
    };
    let audio = common::s3gen_replayed(tts.s3gen(), &speech, &reference, &fx);
    let err = common::max_abs_diff(&audio, &fx.get("out.audio"));
    eprintln!(
        "text -> audio: {} speech tokens identical, audio max|diff| {err:.2e} (bound 1e-3)",
        generated.tokens.len()
    );
    assert!(err <= 1e-3, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A directory laid out as `ResembleAI/chatterbox-nano` (Nano's T3 file where Turbo's was)
/// loads as Nano: with the sizes its marker declares it speaks as the same weights do in a
/// Turbo directory; without them Nano's released GPT-2 (small) is expected, and the fixture's
/// file is refused by name.
#[test]
fn a_nano_directory_loads_nanos_t3() {
    let (turbo, nano) = (turbo_dir("as-turbo"), turbo_dir("nano"));
    std::fs::rename(nano.join(TURBO_T3), nano.join(NANO_T3)).unwrap();
    assert_eq!(TurboSize::of_dir(&turbo), Some(TurboSize::Turbo));
    assert_eq!(TurboSize::of_dir(&nano), Some(TurboSize::Nano));
    let speak = |dir: &Path| {
        let tts = load(dir);
        let text = tts.text_tokens("hello there").unwrap();
        let options = TurboOptions {
            max_new_tokens: 30,
            ..TurboOptions::default()
        };
        let voice = tts.builtin_voice().clone();
        tts.synthesize(&text, &voice, &options, 5, &mut SeededNoise::new(9))
            .unwrap()
            .0
    };
    let audio = speak(&nano);
    assert!(!audio.is_empty());
    assert_eq!(audio, speak(&turbo));
    let marker = nano.join("ferrovox-voice.json");
    let mut sizes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    sizes.as_object_mut().unwrap().remove("gpt2");
    std::fs::write(&marker, sizes.to_string()).unwrap();
    let err = TurboTts::from_dir(&nano, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains(NANO_T3), "{err}");
    for dir in [turbo, nano] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Turbo has no stop detector: a generation is capped by the text's length.
#[test]
fn the_stop_guard_caps_a_run_on_generation() {
    assert_eq!(TurboTts::token_budget(2, 1000), GUARD_FLOOR);
    assert_eq!(TurboTts::token_budget(100, 1000), 1000);
    assert_eq!(TurboTts::token_budget(30, 1000), 600);
    assert_eq!(TurboTts::token_budget(30, 100), 100);
    let dir = turbo_dir("guard");
    let tts = load(&dir);
    let text = tts.text_tokens("A").unwrap();
    assert!(text.len() * 20 < GUARD_FLOOR);
    let generated = tts
        .generate_tokens(
            &text,
            tts.builtin_voice(),
            &TurboOptions::default(),
            &mut SeededNoise::new(1),
        )
        .unwrap();
    assert!(
        generated.tokens.len() <= GUARD_FLOOR,
        "{}",
        generated.tokens.len()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A missing checkpoint or tokenizer file is named; a silence token outside S3Gen's vocabulary
/// is refused at load.
#[test]
fn bad_directories_are_named() {
    let dir = turbo_dir("bad");
    std::fs::rename(dir.join("merges.txt"), dir.join("merges.bak")).unwrap();
    let err = TurboTts::from_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("merges.txt"), "{err}");
    std::fs::rename(dir.join("merges.bak"), dir.join("merges.txt")).unwrap();
    let marker = dir.join("ferrovox-voice.json");
    let mut sizes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    sizes["silence_token"] = 4299.into();
    std::fs::write(&marker, sizes.to_string()).unwrap();
    let err = TurboTts::from_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("silence token 4299"), "{err}");
    std::fs::remove_file(dir.join("s3gen_meanflow.safetensors")).unwrap();
    let err = TurboTts::from_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3gen_meanflow.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
