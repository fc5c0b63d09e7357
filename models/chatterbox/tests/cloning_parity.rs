//! Voice cloning against upstream's `ChatterboxTTS.prepare_conditionals` (chatterbox-tts 0.1.7,
//! with `S3Token2Mel.embed_ref` making S3Gen's half) on the small random-weight encoders of
//! `ve.safetensors`, `s3tokenizer.safetensors` and `campplus.safetensors`, from
//! `cloning.safetensors` (`xtask/fixtures/chatterbox/gen_cloning.py`): a 3 s WAV through the
//! whole path, an 11 s closed-form clip past both of upstream's cuts (10 s for S3Gen, 6 s for
//! T3), T3's prompt length; the same clip through ferrovox-audio's resampler instead of
//! upstream's; loading from a model directory; bad audio.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{ids, max_abs_diff, Fixture, FormulaClip};
use ferrovox_audio::{ReferenceClip, ReferenceLimits};
use ferrovox_chatterbox::campplus::{self, CampPlus, CampPlusConfig};
use ferrovox_chatterbox::s3tokenizer::{self, S3Tokenizer, S3TokenizerConfig};
use ferrovox_chatterbox::t3::T3Config;
use ferrovox_chatterbox::voice_encoder::{VoiceEncConfig, VoiceEncoder};
use ferrovox_chatterbox::{
    ChatterboxTts, Conditionals, Error, ReferenceAudio, ReferenceRule, VoiceCloner,
};

const EXAGGERATION: f32 = 0.7;
/// Every float part against upstream, given upstream's signals.
const BOUND: f32 = 1e-4;

fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// The small encoders' fixtures and their configs.
struct Encoders {
    ve: (Fixture, VoiceEncConfig),
    tok: (Fixture, S3TokenizerConfig),
    cam: (Fixture, CampPlusConfig),
}

impl Encoders {
    fn load() -> Self {
        let ve = Fixture::load("ve");
        let tok = Fixture::load("s3tokenizer");
        let cam = Fixture::load("campplus");
        let (vc, tc, cc) = (
            from(&ve.config["ve_config"]),
            from(&tok.config["model_config"]),
            from(&cam.config["campplus"]),
        );
        Self {
            ve: (ve, vc),
            tok: (tok, tc),
            cam: (cam, cc),
        }
    }

    fn cloner(&self, prompt_len: usize) -> VoiceCloner {
        let ve = VoiceEncoder::new(&self.ve.1, self.ve.0.vb()).unwrap();
        let tok = S3Tokenizer::new(
            &self.tok.1,
            self.tok.0.vb().pp(s3tokenizer::CHECKPOINT_PREFIX),
        )
        .unwrap();
        let cam = CampPlus::new(&self.cam.1, self.cam.0.vb().pp(campplus::PREFIX)).unwrap();
        VoiceCloner::new(ve, tok, cam, prompt_len).unwrap()
    }
}

fn setup() -> (Encoders, Fixture) {
    let enc = Encoders::load();
    let fx = Fixture::load("cloning");
    // The generator checked its encoders equal to these fixtures' weights.
    for (key, cfg) in [
        ("ve_config", enc.ve.0.config["ve_config"].clone()),
        (
            "s3tokenizer_config",
            enc.tok.0.config["model_config"].clone(),
        ),
        ("campplus_config", enc.cam.0.config["campplus"].clone()),
    ] {
        assert_eq!(fx.config[key], cfg, "{key}");
    }
    (enc, fx)
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The short clip: the WAV's 16-bit samples, as `librosa.load` read them (`pcm / 32768`).
fn short_pcm(fx: &Fixture) -> Vec<i16> {
    fx.get("short.pcm")
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<i16>()
        .unwrap()
}

fn short_clip(fx: &Fixture) -> Vec<f32> {
    short_pcm(fx)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

/// The long clip at `rate`, rebuilt: the generator's closed form in the same f64 operations,
/// in the same order, with the same LCG and 16-bit rounding.
fn long_clip(fx: &Fixture, rate: u32) -> Vec<f32> {
    let p = &fx.config["long"];
    // Literals, checked against the config: JSON float parsing need not round correctly.
    let (f0, f0_depth, f0_rate, am_rate, env_base, env_depth, amp, noise) =
        (150.0, 25.0, 0.4, 3.3, 0.6, 0.4, 0.3, 0.02);
    for (key, value) in [
        ("f0", f0),
        ("f0_depth", f0_depth),
        ("f0_rate", f0_rate),
        ("am_rate", am_rate),
        ("env_base", env_base),
        ("env_depth", env_depth),
        ("amp", amp),
        ("noise", noise),
        ("seconds", 11.0),
    ] {
        let stored = p[key].as_f64().unwrap();
        assert!((stored - value).abs() < 1e-12, "long.{key}: {stored}");
    }
    let harmonics = p["harmonics"].as_u64().unwrap();
    assert_eq!(harmonics, 5);
    FormulaClip {
        f0,
        f0_depth,
        f0_rate,
        am_rate,
        env_base,
        env_depth,
        amp,
        noise,
        harmonics,
        seed: p["seed"].as_u64().unwrap(),
    }
    .samples(11 * rate as usize, rate)
}

/// How far a voice is from upstream's: the float parts' max|diff| and the share of identical
/// tokens (S3Gen's, T3's).
#[derive(Debug)]
struct Distance {
    speaker_emb: f32,
    prompt_feat: f32,
    xvector: f32,
    /// Cosine similarity of the x-vectors (what a speaker-verification score compares).
    xvector_cos: f64,
    s3gen_tokens: f64,
    t3_tokens: f64,
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (vec(a), vec(b));
    let dot: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(&a) * norm(&b))
}

fn same_share(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(b.len()).max(1) as f64
}

fn distance(case: &str, got: &Conditionals, fx: &Fixture) -> Distance {
    let want_feat = fx.get(&format!("{case}.gen.prompt_feat"));
    assert_eq!(got.gen.prompt_feat.dims(), want_feat.dims(), "prompt_feat");
    let got_t3 = ids(got.t3.cond_prompt_speech_tokens.as_ref().unwrap());
    let want_xvector = fx.get(&format!("{case}.gen.embedding"));
    Distance {
        speaker_emb: max_abs_diff(
            &got.t3.speaker_emb,
            &fx.get(&format!("{case}.t3.speaker_emb")),
        ),
        prompt_feat: max_abs_diff(&got.gen.prompt_feat, &want_feat),
        xvector: max_abs_diff(&got.gen.xvector, &want_xvector),
        xvector_cos: cosine(&got.gen.xvector, &want_xvector),
        s3gen_tokens: same_share(
            &got.gen.prompt_tokens,
            &ids(&fx.get(&format!("{case}.gen.prompt_token"))),
        ),
        t3_tokens: same_share(
            &got_t3,
            &ids(&fx.get(&format!("{case}.t3.cond_prompt_speech_tokens"))),
        ),
    }
}

/// Every part of `got` against upstream's `case`: floats within [`BOUND`], tokens identical.
fn check_parity(case: &str, got: &Conditionals, fx: &Fixture) {
    let d = distance(case, got, fx);
    eprintln!(
        "{case}: speaker_emb {:.2e}, prompt_feat {:.2e}, x-vector {:.2e} (bound {BOUND:.0e}); \
         S3Gen tokens {}, T3 tokens {} identical",
        d.speaker_emb,
        d.prompt_feat,
        d.xvector,
        got.gen.prompt_tokens.len(),
        got.t3
            .cond_prompt_speech_tokens
            .as_ref()
            .unwrap()
            .dim(1)
            .unwrap(),
    );
    for (part, err) in [
        ("speaker_emb", d.speaker_emb),
        ("prompt_feat", d.prompt_feat),
        ("x-vector", d.xvector),
    ] {
        assert!(err <= BOUND, "{case}: {part} max|diff| {err:e} > {BOUND:e}");
    }
    let want_tokens = ids(&fx.get(&format!("{case}.gen.prompt_token")));
    assert_eq!(got.gen.prompt_tokens, want_tokens, "{case}: S3Gen tokens");
    let want_len = ids(&fx.get(&format!("{case}.gen.prompt_token_len")));
    assert_eq!(want_len, [want_tokens.len() as u32]);
    assert_eq!(
        ids(got.t3.cond_prompt_speech_tokens.as_ref().unwrap()),
        ids(&fx.get(&format!("{case}.t3.cond_prompt_speech_tokens"))),
        "{case}: T3 tokens"
    );
    assert_eq!(
        got.t3.cond_prompt_speech_tokens.as_ref().unwrap().dims()[0],
        1
    );
    let emotion = vec(&fx.get(&format!("{case}.t3.emotion_adv")));
    assert_eq!(emotion, [EXAGGERATION]);
    assert_eq!(got.t3.emotion_adv, EXAGGERATION);
}

/// The 3 s WAV: upstream's two 16 kHz copies given, every part is upstream's. Its length is not
/// a multiple of 40 ms, so `embed_ref` cuts its 76 tokens to the mel's 150 frames / 2.
#[test]
fn a_short_clip_gives_upstreams_conditionals() {
    let (enc, fx) = setup();
    let cloner = enc.cloner(150);
    let (clip, librosa_16k, embed_ref_16k) = (
        short_clip(&fx),
        vec(&fx.get("short.librosa_16k")),
        vec(&fx.get("short.embed_ref_16k")),
    );
    let got = cloner
        .conditionals_with(
            &ReferenceAudio {
                clip_24k: &clip,
                clip_16k: &librosa_16k,
                s3gen_16k: Some(&embed_ref_16k),
            },
            EXAGGERATION,
        )
        .unwrap();
    check_parity("short", &got, &fx);
    let (untrimmed, _) = cloner
        .tokenizer()
        .tokenize(&[&embed_ref_16k], None)
        .unwrap();
    assert_eq!(untrimmed[0], ids(&fx.get("short.embed_ref.tokens")));
    assert_eq!((untrimmed[0].len(), got.gen.prompt_tokens.len()), (76, 75));
    assert_eq!(got.gen.prompt_feat.dims(), [1, 150, 80]);
}

/// 11 s: S3Gen's half from the first 10 s (500 mel frames, 250 tokens), T3's tokens from the
/// first 6 s (150), the voice encoder over all 11 s; and with a T3 prompt of 100 tokens, the
/// tokenizer's `max_len` cut.
#[test]
fn a_long_clip_is_cut_as_upstream_cuts_it() {
    let (enc, fx) = setup();
    let (c24, c16) = (long_clip(&fx, 24_000), long_clip(&fx, 16_000));
    let p = &fx.config["long"];
    assert_eq!(c24.len() as u64, p["samples_24k"].as_u64().unwrap());
    assert_eq!(c16.len() as u64, p["samples_16k"].as_u64().unwrap());
    // embed_ref's copy is the 16 kHz clip's first 10 s; the cloner cuts it there itself.
    let audio = ReferenceAudio {
        clip_24k: &c24,
        clip_16k: &c16,
        s3gen_16k: Some(&c16),
    };
    let got = enc
        .cloner(150)
        .conditionals_with(&audio, EXAGGERATION)
        .unwrap();
    check_parity("long", &got, &fx);
    assert_eq!(got.gen.prompt_feat.dims(), [1, 500, 80]);
    assert_eq!(got.gen.prompt_tokens.len(), 250);

    let short_prompt = enc.cloner(100).t3_cond(&c16, EXAGGERATION).unwrap();
    let tokens = ids(short_prompt.cond_prompt_speech_tokens.as_ref().unwrap());
    assert_eq!(
        tokens,
        ids(&fx.get("long_plen100.t3.cond_prompt_speech_tokens"))
    );
    assert_eq!(tokens.len(), 100);
}

/// A mono 16-bit WAV file of `pcm` at `rate`.
fn wav_bytes(pcm: &[i16], rate: u32) -> Vec<u8> {
    let mut bytes = ferrovox_audio::wav_header(rate, Some(pcm.len())).to_vec();
    bytes.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
    bytes
}

/// The same WAV through ferrovox-audio (decoded, checked, resampled with rubato) instead of
/// librosa's soxr and torchaudio's sinc resamplers: the 24 kHz clip is the same samples, so the
/// prompt mel stays at parity; what comes from the 16 kHz copies moves. Bounds are the values
/// measured on this clip (the comments) with a margin of about 1.5x; token shares are floors.
#[test]
fn the_rubato_path_stays_near_upstream() {
    let (enc, fx) = setup();
    let cloner = enc.cloner(150);
    let clip = ReferenceClip::from_bytes(
        &wav_bytes(&short_pcm(&fx), 24_000),
        24_000,
        &ReferenceLimits::chatterbox(),
    )
    .unwrap();
    let exact_24k = short_clip(&fx);
    assert_eq!(
        clip.samples, exact_24k,
        "the clip is kept whole, bit for bit"
    );

    // Only embed_ref's copy from rubato: the x-vector and S3Gen's tokens move.
    let librosa_16k = vec(&fx.get("short.librosa_16k"));
    let ours = cloner
        .conditionals(&exact_24k, &librosa_16k, EXAGGERATION)
        .unwrap();
    let d = distance("short", &ours, &fx);
    eprintln!("embed_ref's 16 kHz by rubato: {d:?}");
    assert!(d.prompt_feat <= BOUND, "{d:?}");
    assert!(d.speaker_emb <= BOUND && d.t3_tokens == 1.0, "{d:?}");
    assert!(d.xvector <= XVECTOR_BOUND, "{d:?}");
    assert!(d.xvector_cos >= XVECTOR_COS_FLOOR, "{d:?}");
    assert!(d.s3gen_tokens >= S3GEN_TOKENS_FLOOR, "{d:?}");

    // Both 16 kHz copies from rubato.
    let all = cloner.from_clip(&clip, EXAGGERATION).unwrap();
    let d = distance("short", &all, &fx);
    eprintln!("both 16 kHz copies by rubato: {d:?}");
    assert!(d.prompt_feat <= BOUND, "{d:?}");
    assert!(d.xvector <= XVECTOR_BOUND, "{d:?}");
    assert!(d.xvector_cos >= XVECTOR_COS_FLOOR, "{d:?}");
    assert!(d.speaker_emb <= SPEAKER_EMB_BOUND, "{d:?}");
    assert!(d.s3gen_tokens >= S3GEN_TOKENS_FLOOR, "{d:?}");
    assert!(d.t3_tokens >= T3_TOKENS_FLOOR, "{d:?}");

    // Both rates are made from the clip's source, whichever rate the clip was read at.
    let at_16k = clip.at_rate(16_000).unwrap();
    let via_16k = cloner.from_clip(&at_16k, EXAGGERATION).unwrap();
    assert_eq!(
        max_abs_diff(&via_16k.gen.prompt_feat, &all.gen.prompt_feat),
        0.0
    );
    assert_eq!(max_abs_diff(&via_16k.gen.xvector, &all.gen.xvector), 0.0);
    assert_eq!(
        max_abs_diff(&via_16k.t3.speaker_emb, &all.t3.speaker_emb),
        0.0
    );
}

/// Measured 0.347 (the x-vector's largest value is 3.9).
const XVECTOR_BOUND: f32 = 0.5;
/// Measured 0.9973 against upstream's x-vector.
const XVECTOR_COS_FLOOR: f64 = 0.99;
/// Measured 1.9e-6: the voice encoder's 40 power-mel bands barely see the resampler.
const SPEAKER_EMB_BOUND: f32 = 3e-6;
/// Measured 65 of 75 identical (0.867); the floor allows 15 to differ.
const S3GEN_TOKENS_FLOOR: f64 = 0.8;
/// Measured 75 of 76 identical (0.987); the floor allows 3 to differ.
const T3_TOKENS_FLOOR: f64 = 0.95;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovox-cloning-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    let cpu: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(&Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&cpu, path).unwrap();
}

/// The tensors of `fx` whose names pass `keep`.
fn part(fx: &Fixture, keep: impl Fn(&str) -> bool) -> HashMap<String, Tensor> {
    fx.tensors
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The two cloning encoders of an `s3gen.safetensors`.
fn s3gen_encoders(enc: &Encoders) -> HashMap<String, Tensor> {
    let mut all = part(&enc.tok.0, |k| k.starts_with("tokenizer."));
    all.extend(part(&enc.cam.0, |k| k.starts_with("speaker_encoder.")));
    all
}

/// A hub-layout directory of the small model: T3, S3Gen (flow, HiFT and the two encoders),
/// the voice encoder, the tokenizer, the built-in voice, and the sizes.
fn small_model_dir(enc: &Encoders, tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    let mut sizes: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("small_model.json")).unwrap(),
    )
    .unwrap();
    sizes["voice_encoder"] = enc.ve.0.config["ve_config"].clone();
    sizes["s3tokenizer"] = enc.tok.0.config["model_config"].clone();
    sizes["campplus"] = enc.cam.0.config["campplus"].clone();
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();

    let t3_cfg: T3Config = from(&sizes["t3"]);
    let t3_keys = ferrovox_chatterbox::t3::T3::expected_keys(&t3_cfg);
    save(
        &part(&Fixture::load("t3"), |k| t3_keys.iter().any(|e| e == k)),
        &dir.join("t3_cfg.safetensors"),
    );
    let mut s3gen = s3gen_encoders(enc);
    for name in ["encoder", "cfm", "hift"] {
        s3gen.extend(part(&Fixture::load(name), |k| {
            k.starts_with("flow.") || k.starts_with("mel2wav.")
        }));
    }
    save(&s3gen, &dir.join("s3gen.safetensors"));
    let ve_keys = VoiceEncoder::expected_keys();
    save(
        &part(&enc.ve.0, |k| {
            ve_keys.iter().any(|e| e == k) || k.starts_with("similarity_")
        }),
        &dir.join("ve.safetensors"),
    );
    for (from, to) in [
        ("t3_tokenizer_vocab.json", "tokenizer.json"),
        ("conds_small.pt", "conds.pt"),
    ] {
        std::fs::copy(common::fixtures().join(from), dir.join(to)).unwrap();
    }
    dir
}

fn short_audio(fx: &Fixture) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        short_clip(fx),
        vec(&fx.get("short.librosa_16k")),
        vec(&fx.get("short.embed_ref_16k")),
    )
}

/// A model directory's cloner (through `ChatterboxTts::from_dir` and `cloner`, and
/// `VoiceCloner::from_dir`) is the one built from parts; its checkpoints are checked key by key.
#[test]
fn a_model_directory_loads_the_cloner_and_names_bad_checkpoints() {
    let (enc, fx) = setup();
    let dir = small_model_dir(&enc, "dir");
    let device = common::device();
    let (c24, c16, e16) = short_audio(&fx);
    let audio = ReferenceAudio {
        clip_24k: &c24,
        clip_16k: &c16,
        s3gen_16k: Some(&e16),
    };
    let want = enc
        .cloner(150)
        .conditionals_with(&audio, EXAGGERATION)
        .unwrap();
    let tts = ChatterboxTts::from_dir(&dir, &device).unwrap();
    for cloner in [
        tts.cloner().unwrap(),
        VoiceCloner::from_dir(&dir, &device).unwrap(),
    ] {
        assert_eq!(cloner.speech_cond_prompt_len(), 150);
        let got = cloner.conditionals_with(&audio, EXAGGERATION).unwrap();
        assert_eq!(max_abs_diff(&got.t3.speaker_emb, &want.t3.speaker_emb), 0.0);
        assert_eq!(
            max_abs_diff(&got.gen.prompt_feat, &want.gen.prompt_feat),
            0.0
        );
        assert_eq!(max_abs_diff(&got.gen.xvector, &want.gen.xvector), 0.0);
        assert_eq!(got.gen.prompt_tokens, want.gen.prompt_tokens);
    }

    // A missing CAMPPlus tensor, then a tokenizer tensor the small tokenizer does not have.
    let s3gen_path = dir.join("s3gen.safetensors");
    let mut broken = s3gen_encoders(&enc);
    let gone = "speaker_encoder.xvector.dense.linear.weight";
    broken.remove(gone).unwrap();
    save(&broken, &s3gen_path);
    let err = VoiceCloner::from_dir(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { reason, .. } if reason.contains(gone)),
        "{err}"
    );
    let mut extra = s3gen_encoders(&enc);
    let stray = "tokenizer.encoder.blocks.7.attn.query.weight";
    extra.insert(
        stray.into(),
        Tensor::zeros((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    save(&extra, &s3gen_path);
    let err = VoiceCloner::from_dir(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { reason, .. } if reason.contains(stray)),
        "{err}"
    );
    // Sizes that do not fit each other are refused before any file is read.
    let mut sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ferrovox-voice.json")).unwrap())
            .unwrap();
    sizes["campplus"]["embedding_size"] = 80.into();
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();
    let err = VoiceCloner::from_dir(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("x-vector")),
        "{err}"
    );
    std::fs::remove_file(dir.join("ve.safetensors")).unwrap();
    let err = tts.cloner().unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { path, .. } if path.ends_with("ve.safetensors")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // A model built from parts has no directory to load the encoders from.
    let parts = ChatterboxTts::new(
        tts.t3().clone(),
        common::small_s3gen().0,
        ferrovox_chatterbox::tokenizer::EnTokenizer::from_file(
            &common::fixtures().join("t3_tokenizer_vocab.json"),
        )
        .unwrap(),
        tts.builtin_voice().clone(),
        &device,
    )
    .unwrap();
    assert!(matches!(parts.cloner(), Err(Error::Input(_))));
}

/// The multilingual repository keeps the encoders as PyTorch files (`ve.pt`, `s3gen.pt`): the
/// cloner reads them as it reads the safetensors, and clones the same voice.
#[test]
fn the_encoders_load_from_pytorch_files_too() {
    let (enc, fx) = setup();
    let dir = small_model_dir(&enc, "pt");
    let device = common::device();
    let (c24, c16, e16) = short_audio(&fx);
    let audio = ReferenceAudio {
        clip_24k: &c24,
        clip_16k: &c16,
        s3gen_16k: Some(&e16),
    };
    let want = VoiceCloner::from_dir(&dir, &device)
        .unwrap()
        .conditionals_with(&audio, EXAGGERATION)
        .unwrap();
    for name in ["ve", "s3gen"] {
        let from = dir.join(format!("{name}.safetensors"));
        let tensors = candle_core::safetensors::load(&from, &Device::Cpu).unwrap();
        common::torch_save::save_pt(&tensors, &dir.join(format!("{name}.pt")));
        std::fs::remove_file(from).unwrap();
    }
    let (ve, s3gen) = VoiceCloner::encoder_files(&dir).unwrap();
    assert!(ve.ends_with("ve.pt") && s3gen.ends_with("s3gen.pt"));
    let got = VoiceCloner::from_dir(&dir, &device)
        .unwrap()
        .conditionals_with(&audio, EXAGGERATION)
        .unwrap();
    assert_eq!(max_abs_diff(&got.t3.speaker_emb, &want.t3.speaker_emb), 0.0);
    assert_eq!(
        max_abs_diff(&got.gen.prompt_feat, &want.gen.prompt_feat),
        0.0
    );
    assert_eq!(max_abs_diff(&got.gen.xvector, &want.gen.xvector), 0.0);
    assert_eq!(got.gen.prompt_tokens, want.gen.prompt_tokens);
    // Neither file: the voice encoder is named, with the other name it may have.
    std::fs::remove_file(dir.join("ve.pt")).unwrap();
    let err = VoiceCloner::from_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ve.safetensors") && err.contains("ve.pt"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Audio with no voice in it, two signals that are not the same clip, and an exaggeration
/// outside 0..=2 are input errors, never a panic.
#[test]
fn bad_audio_is_refused_with_the_reason() {
    let (enc, fx) = setup();
    let cloner = enc.cloner(150);
    let (c24, c16, _) = short_audio(&fx);
    let input = |r: ferrovox_chatterbox::Result<Conditionals>, needle: &str| match r {
        Err(Error::Input(m)) => assert!(m.contains(needle), "{m} (wanted `{needle}`)"),
        other => panic!("expected an input error about `{needle}`, got {other:?}"),
    };
    // 0.1 s at both rates.
    input(
        cloner.conditionals(&c24[..2400], &c16[..1600], EXAGGERATION),
        "at least 0.2 s",
    );
    input(
        cloner.conditionals(&vec![0.0; 48_000], &vec![0.0; 32_000], EXAGGERATION),
        "silent",
    );
    let mut nan = c16.clone();
    nan[100] = f32::NAN;
    input(cloner.conditionals(&c24, &nan, EXAGGERATION), "non-finite");
    input(
        cloner.conditionals(&c24, &c16[..32_000], EXAGGERATION),
        "same audio",
    );
    // The two rates swapped.
    input(cloner.conditionals(&c16, &c24, EXAGGERATION), "same audio");
    input(
        cloner.conditionals_with(
            &ReferenceAudio {
                clip_24k: &c24,
                clip_16k: &c16,
                s3gen_16k: Some(&c16[..20_000]),
            },
            EXAGGERATION,
        ),
        "embed_ref",
    );
    input(cloner.conditionals(&c24, &c16, 2.5), "exaggeration");
    input(cloner.conditionals(&c24, &c16, f32::NAN), "exaggeration");
    assert!(matches!(
        cloner.speaker_reference(&c24[..1000], None),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        cloner.t3_cond(&vec![0.0; 16_000], 0.5),
        Err(Error::Input(_))
    ));
    // Upstream's T3 always has a prompt length.
    let ve = enc.cloner(150).voice_encoder().clone();
    let tok = enc.cloner(150).tokenizer().clone();
    let cam = enc.cloner(150).speaker_encoder().clone();
    assert!(matches!(
        VoiceCloner::new(ve, tok, cam, 0),
        Err(Error::Config(_))
    ));
}

/// The released `s3gen.safetensors` key set passes the cloner's key checks: every tensor name
/// under `tokenizer.` and `speaker_encoder.` is one it reads, or one it may skip (the
/// tokenizer's buffers, CAMPPlus's step counters). Stand-in tensors of shape `[1]` then fail
/// on the first shape, which names the tensor.
#[test]
fn the_released_key_set_passes_the_key_checks() {
    let shapes = common::full_size_shapes("s3gen_full_keys.json");
    let dir = temp_dir("keys");
    let path = dir.join("s3gen.safetensors");
    let stand_ins: HashMap<String, Tensor> = shapes
        .keys()
        .filter(|k| k.starts_with("tokenizer.") || k.starts_with("speaker_encoder."))
        .map(|k| {
            let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
            (k.clone(), t)
        })
        .collect();
    assert!(stand_ins.len() > 1000, "{}", stand_ins.len());
    save(&stand_ins, &path);
    let err = ferrovox_chatterbox::cloning::load_s3gen_encoders(
        &path,
        &S3TokenizerConfig::default(),
        &CampPlusConfig::default(),
        &Device::Cpu,
    )
    .unwrap_err();
    match &err {
        Error::Checkpoint { reason, .. } => assert!(
            reason.contains("shape") && !reason.contains("missing"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The clip `gen_loudness.py` describes by its parameters, computed as it computes it (f64,
/// then f32).
fn loudness_clip(case: &serde_json::Value) -> (Vec<f32>, u32) {
    let rate = case["rate"].as_u64().unwrap() as u32;
    let seconds = case["seconds"].as_f64().unwrap();
    let amplitude = case["amplitude"].as_f64().unwrap();
    let quiet = case["quiet"].as_array().map(|q| {
        let q: Vec<f64> = q.iter().map(|v| v.as_f64().unwrap()).collect();
        (q[0], q[1], q[2])
    });
    let tau = 2.0 * std::f64::consts::PI;
    let samples = (0..(seconds * rate as f64) as usize)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let mut x =
                amplitude * (0.7 * (tau * 220.0 * t).sin() + 0.3 * (tau * 3100.0 * t).sin());
            x *= 0.6 + 0.4 * (tau * 3.0 * t).sin();
            if let Some((start, end, level)) = quiet {
                if t >= start && t < end {
                    x *= level;
                }
            }
            x as f32
        })
        .collect();
    (samples, rate)
}

/// Turbo's loudness rule against pyloudnorm and `norm_loudness` (`turbo_loudness.json`): the
/// integrated loudness of four clips (three rates, two with a quiet stretch under the relative
/// gate) within 1e-6 LU, the gain within 1e-6 relative, the scaled samples within 2 ulp.
#[test]
fn turbos_loudness_rule_matches_pyloudnorm() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("turbo_loudness.json")).unwrap(),
    )
    .unwrap();
    let target = doc["target_lufs"].as_f64().unwrap();
    assert_eq!(Some(target), ReferenceRule::TURBO.target_lufs);
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let (clip, rate) = loudness_clip(case);
        let got = ferrovox_audio::upstream_integrated_loudness(&clip, rate).unwrap();
        let want = case["loudness_lufs"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "{case}: {got} LUFS");
        let gain = ferrovox_audio::loudness_gain(&clip, rate, target).unwrap() as f64;
        let want_gain = case["gain"].as_f64().unwrap();
        assert!((gain / want_gain - 1.0).abs() < 1e-6, "{case}: gain {gain}");
        let scaled = ferrovox_audio::normalize_loudness(&clip, rate, target);
        for (i, want) in case["normalized_head"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            // The clip's f64 sines may round to the neighbouring f32 on either side.
            let want = want.as_f64().unwrap() as f32;
            let ulps =
                (scaled[i] - want).abs() / (f32::EPSILON * want.abs()).max(f32::MIN_POSITIVE);
            assert!(
                ulps <= 2.0,
                "{case}: sample {i}: {} against {want}",
                scaled[i]
            );
        }
    }
}

/// A directory laid out as Turbo's (`t3_turbo_v1.safetensors`, the encoders inside
/// `s3gen_meanflow.safetensors`) clones under Turbo's rule: a clip of 5 s or less is refused by
/// its length; a longer one is scaled by upstream's loudness gain before every encoder, and T3's
/// prompt tokens come from its first 15 s (375 tokens at most), not 6 s.
#[test]
fn a_turbo_directory_clones_under_turbos_rule() {
    let (enc, fx) = setup();
    let device = common::device();
    let dir = small_model_dir(&enc, "turbo");
    std::fs::rename(
        dir.join("t3_cfg.safetensors"),
        dir.join("t3_turbo_v1.safetensors"),
    )
    .unwrap();
    std::fs::rename(
        dir.join("s3gen.safetensors"),
        dir.join("s3gen_meanflow.safetensors"),
    )
    .unwrap();
    let marker = dir.join("ferrovox-voice.json");
    let mut sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    // The small voice encoder is 32 wide: the marker keeps the small T3, with Turbo's prompt.
    sizes["t3"]["speech_cond_prompt_len"] = 375.into();
    std::fs::write(&marker, sizes.to_string()).unwrap();
    assert_eq!(ReferenceRule::of_dir(&dir), ReferenceRule::TURBO);
    let cloner = VoiceCloner::from_dir(&dir, &device).unwrap();
    assert_eq!(cloner.rule(), ReferenceRule::TURBO);
    assert_eq!(
        cloner.speech_cond_prompt_len(),
        T3Config::turbo().speech_cond_prompt_len
    );

    let (c24, c16) = (long_clip(&fx, 24_000), long_clip(&fx, 16_000));
    let got = cloner.conditionals(&c24, &c16, EXAGGERATION).unwrap();
    let gain = ferrovox_audio::loudness_gain(&c24, 24_000, -27.0).unwrap();
    assert!(
        (gain - 1.0).abs() > 0.05,
        "the clip is already at -27 LUFS: {gain}"
    );
    let scale = |w: &[f32]| w.iter().map(|&s| s * gain).collect::<Vec<f32>>();
    let (s24, s16) = (scale(&c24), scale(&c16));
    let english = enc.cloner(T3Config::turbo().speech_cond_prompt_len);
    let want_gen = english.speaker_reference(&s24[..240_000], None).unwrap();
    assert_eq!(
        max_abs_diff(&got.gen.prompt_feat, &want_gen.prompt_feat),
        0.0
    );
    assert_eq!(max_abs_diff(&got.gen.xvector, &want_gen.xvector), 0.0);
    assert_eq!(got.gen.prompt_tokens, want_gen.prompt_tokens);
    // All 11 s of the clip (25 tokens a second) where the English rule takes 6 s.
    let (tokens, _) = english
        .tokenizer()
        .tokenize(&[&s16[..]], Some(375))
        .unwrap();
    let prompt = ids(got.t3.cond_prompt_speech_tokens.as_ref().unwrap());
    assert_eq!(prompt, tokens[0]);
    assert_eq!(prompt.len(), 11 * 25);
    let want_t3 = english.t3_cond(&s16, EXAGGERATION).unwrap();
    assert_eq!(max_abs_diff(&got.t3.speaker_emb, &want_t3.speaker_emb), 0.0);

    let err = cloner
        .conditionals(&c24[..5 * 24_000], &c16[..5 * 16_000], EXAGGERATION)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Input(m) if m.contains("more than 5 s")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
