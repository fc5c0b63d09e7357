//! The voice encoder against upstream chatterbox-tts 0.1.7 on the small random-weight build of
//! `ve.safetensors` (`xtask/fixtures/chatterbox/gen_ve.py`): librosa's 20 dB trim, the power
//! mel, the partials, the LSTM, the partial and clip embeddings and the speaker embedding
//! `prepare_conditionals` makes; the released sizes and key set; bad input.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{max_abs_diff, Fixture};
use ferrovox_chatterbox::voice_encoder::{
    frame_levels_db, frame_step, num_wins, trim_indices, EmbedOptions, MelSpec, VoiceEncConfig,
    VoiceEncoder, LSTM_LAYERS,
};
use ferrovox_chatterbox::Error;

const SR: u32 = 16_000;

fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn small() -> (VoiceEncoder, Fixture) {
    let fx = Fixture::load("ve");
    let cfg: VoiceEncConfig = from(&fx.config["ve_config"]);
    assert_eq!(
        (cfg.ve_hidden_size, cfg.speaker_embed_size),
        (32, 32),
        "the small fixture config was read"
    );
    (VoiceEncoder::new(&cfg, fx.vb()).unwrap(), fx)
}

fn wav(fx: &Fixture, i: usize) -> Vec<f32> {
    fx.get(&format!("in.wav{i}")).to_vec1().unwrap()
}

fn trim_index(fx: &Fixture, i: usize) -> std::ops::Range<usize> {
    let v: Vec<i64> = fx.get(&format!("trim{i}.index")).to_vec1().unwrap();
    v[0] as usize..v[1] as usize
}

fn check(what: &str, got: &Tensor, want: &Tensor, bound: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err = max_abs_diff(got, want);
    eprintln!("{what}: max|diff| {err:.2e} (bound {bound:.0e})");
    assert!(err <= bound, "{what}: {err} > {bound}");
}

/// `max|diff| <= bound * max|want|`: the power mel spans seven decades, so its error is judged
/// against the clip's loudest bin.
fn check_relative(what: &str, got: &Tensor, want: &Tensor, bound: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err = max_abs_diff(got, want);
    let peak = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rel = err / peak;
    eprintln!("{what}: max|diff| {err:.2e} = {rel:.2e} x max|mel| {peak:.3} (bound {bound:.0e} x max|mel|)");
    assert!(rel <= bound, "{what}: {rel} > {bound} relative to {peak}");
}

fn expect_input<T: std::fmt::Debug>(what: &str, r: ferrovox_chatterbox::Result<T>, needle: &str) {
    match r {
        Err(Error::Input(msg)) => {
            eprintln!("{what}: {msg}");
            assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
        }
        other => panic!("{what}: expected Error::Input, got {other:?}"),
    }
}

/// Trim points are frame decisions: they must be identical. The per-frame levels differ only
/// by f32 rounding (librosa sums in f32); bound 1e-3 dB, while the fixture keeps every level
/// at least 0.05 dB from the threshold.
#[test]
fn trim_matches_librosa() {
    let fx = Fixture::load("ve");
    for i in 0..2 {
        let w = wav(&fx, i);
        let levels = frame_levels_db(&w);
        let want = fx.get(&format!("trim{i}.db"));
        let got = Tensor::new(levels.as_slice(), want.device()).unwrap();
        check(&format!("trim{i} frame dB"), &got, &want, 1e-3);
        let range = trim_index(&fx, i);
        assert_eq!(trim_indices(&w, 20.0), range, "trim{i} index");
        assert!(
            range.start > 0 && range.end < w.len(),
            "the trim cuts both ends"
        );
        eprintln!(
            "trim{i}: [{}, {}) of {} identical",
            range.start,
            range.end,
            w.len()
        );
    }
}

/// Bound: max|diff| <= 1e-4 x the clip's largest mel value (librosa computes the STFT in f64,
/// rounds to complex64 and multiplies in f32, as this port does up to summation order).
#[test]
fn mel_matches_librosa() {
    let (ve, fx) = small();
    for i in 0..2 {
        let w = wav(&fx, i);
        let got = ve.melspectrogram(&w[trim_index(&fx, i)]).unwrap();
        check_relative(&format!("mel{i}"), &got, &fx.get(&format!("mel{i}")), 1e-4);
    }
    // Pre-emphasis, dB and [0, 1] scaling: the config's branches the released model leaves off.
    let variant: VoiceEncConfig = from(&fx.config["variant_config"]);
    assert!(variant.preemphasis > 0.0 && variant.normalized_mels);
    let mel = MelSpec::new(&variant).unwrap();
    let w = wav(&fx, 0);
    let values = mel.compute(&w[trim_index(&fx, 0)]).unwrap();
    let want = fx.get("variant.mel");
    let got = Tensor::from_vec(values, want.dims(), want.device()).unwrap();
    check_relative(
        "variant mel (preemphasis, dB, normalized)",
        &got,
        &want,
        1e-4,
    );
}

/// The partial layout is integer arithmetic and copying: identical, bit for bit.
#[test]
fn partials_match_upstream() {
    let (ve, fx) = small();
    let cfg = ve.config();
    let step = frame_step(cfg, 0.5, Some(1.3)).unwrap();
    let mut all = Vec::new();
    for i in 0..2 {
        let layout = &fx.config["partial_layout"][i];
        let mel = fx.get(&format!("mel{i}"));
        let frames = mel.dim(0).unwrap();
        assert_eq!(frames as u64, layout["mel_frames"].as_u64().unwrap());
        assert_eq!(step as u64, layout["frame_step"].as_u64().unwrap());
        let (n, target) = num_wins(cfg, frames, step, 0.8);
        assert_eq!(n as u64, layout["n_partials"].as_u64().unwrap(), "clip {i}");
        assert_eq!(
            target as u64,
            layout["target_frames"].as_u64().unwrap(),
            "clip {i}"
        );
        all.push(ve.partials(&mel, step, 0.8).unwrap());
    }
    let got = Tensor::cat(&all, 0).unwrap();
    check("partials", &got, &fx.get("partials"), 0.0);
    // Without a rate the step comes from the overlap: 160 x 0.5.
    assert_eq!(frame_step(cfg, 0.5, None).unwrap(), 80);
}

/// Bound 1e-4 (f32): 3 x 160 recurrent steps of 32-wide gates; torch and candle sum the same
/// products in different orders.
#[test]
fn lstm_and_partial_embeddings_match_upstream() {
    let (ve, fx) = small();
    let partials = fx.get("partials");
    let h_n = ve.lstm_final_hidden(&partials).unwrap();
    assert_eq!(h_n.dims(), &[LSTM_LAYERS, 3, 32]);
    check("lstm h_n", &h_n, &fx.get("lstm.h_n"), 1e-4);
    let embeds = ve.forward(&partials).unwrap();
    check(
        "partial embeddings",
        &embeds,
        &fx.get("out.partial_embeds"),
        1e-4,
    );
}

/// From the clips themselves: trim, mel, partials, LSTM, mean and normalisation together.
/// Bound 1e-4 (f32).
#[test]
fn embeddings_match_upstream() {
    let (ve, fx) = small();
    let wavs = [wav(&fx, 0), wav(&fx, 1)];
    let opts = EmbedOptions::default();
    let got = ve.embeds_from_wavs(&wavs, SR, &opts).unwrap();
    check("embeds_from_wavs", &got, &fx.get("out.embeds"), 1e-4);
    let from_mels = ve
        .embeds_from_mels(&[fx.get("mel0"), fx.get("mel1")], &opts)
        .unwrap();
    check("embeds_from_mels", &from_mels, &fx.get("out.embeds"), 1e-4);
    let spk = ve
        .embeds_from_wavs(
            &wavs,
            SR,
            &EmbedOptions {
                as_spk: true,
                ..opts.clone()
            },
        )
        .unwrap();
    check("as_spk", &spk, &fx.get("out.spk_embed"), 1e-4);
    let cond = ve.speaker_emb(&wavs[1]).unwrap();
    check(
        "prepare_conditionals speaker_emb",
        &cond,
        &fx.get("out.cond_embed"),
        1e-4,
    );
    // Chunking the partials changes nothing.
    let one_by_one = ve
        .embeds_from_wavs(
            &wavs,
            SR,
            &EmbedOptions {
                batch_size: 1,
                ..opts
            },
        )
        .unwrap();
    check("batch_size 1", &one_by_one, &got, 1e-6);
}

/// The config carries every `VoiceEncConfig` field, and its defaults are upstream's except
/// the two sizes the fixture shrinks.
#[test]
fn config_fields_and_defaults_are_upstreams() {
    let fx = Fixture::load("ve");
    let upstream = fx.config["ve_config"].as_object().unwrap();
    let fields = [
        "fmax",
        "fmin",
        "flatten_lstm_params",
        "hop_size",
        "mel_power",
        "mel_type",
        "n_fft",
        "normalized_mels",
        "num_mels",
        "preemphasis",
        "sample_rate",
        "speaker_embed_size",
        "stft_magnitude_min",
        "ve_final_relu",
        "ve_hidden_size",
        "ve_partial_frames",
        "win_size",
    ];
    let mut keys: Vec<&str> = upstream.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = fields.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "VoiceEncConfig's fields");
    let released = fx.config["released_sizes"].clone();
    let mut full = fx.config["ve_config"].clone();
    for k in ["ve_hidden_size", "speaker_embed_size"] {
        full[k] = released[k].clone();
    }
    assert_eq!(from::<VoiceEncConfig>(&full), VoiceEncConfig::default());
    assert_eq!(
        serde_json::from_str::<VoiceEncConfig>("{}").unwrap(),
        VoiceEncConfig::default()
    );
}

/// The released sizes (40 mels, LSTM 256, 256-d) build from zeros and give every stage its
/// shape; the values are meaningless (a zero projection normalises to NaN).
#[test]
fn released_sizes_from_zeros() {
    let cfg = VoiceEncConfig::default();
    let ve = VoiceEncoder::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap();
    let clip: Vec<f32> = (0..40_000)
        .map(|i| 0.3 * (i as f32 * 0.07).sin() * (i as f32 * 0.0003).sin())
        .collect();
    let mel = ve.melspectrogram(&clip).unwrap();
    assert_eq!(mel.dims(), &[1 + 40_000 / 160, 40]);
    let partials = ve.partials(&mel, 77, 0.8).unwrap();
    assert_eq!(partials.dims(), &[2, 160, 40]);
    assert_eq!(
        ve.lstm_final_hidden(&partials).unwrap().dims(),
        &[LSTM_LAYERS, 2, 256]
    );
    assert_eq!(ve.forward(&partials).unwrap().dims(), &[2, 256]);
    let embeds = ve
        .embeds_from_wavs(&[&clip[..], &clip[..20_000]], SR, &EmbedOptions::default())
        .unwrap();
    assert_eq!(embeds.dims(), &[2, 256]);
    assert_eq!(ve.speaker_emb(&clip).unwrap().dims(), &[1, 256]);
    let keys = VoiceEncoder::expected_keys();
    assert_eq!(keys.len(), 4 * LSTM_LAYERS + 2);
    assert!(keys.contains(&"lstm.weight_ih_l0".to_string()));
    assert!(keys.contains(&"lstm.bias_hh_l2".to_string()));
    assert!(keys.contains(&"proj.weight".to_string()));
}

/// `load` reads upstream's state dict (the unused similarity scalars included) and names the
/// key of a checkpoint that is not a voice encoder's.
#[test]
fn load_checks_the_key_set() {
    let (ve, fx) = small();
    let cfg = ve.config().clone();
    let dir = std::env::temp_dir().join(format!("ferrovox-ve-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights: HashMap<String, Tensor> = fx
        .tensors
        .iter()
        .filter(|(k, _)| {
            k.starts_with("lstm.weight")
                || k.starts_with("lstm.bias")
                || k.starts_with("proj.")
                || k.starts_with("similarity_")
        })
        .map(|(k, v)| (k.clone(), v.to_device(&Device::Cpu).unwrap()))
        .collect();
    assert_eq!(weights.len(), 4 * LSTM_LAYERS + 4);
    let write = |name: &str, tensors: &HashMap<String, Tensor>| {
        let path = dir.join(name);
        candle_core::safetensors::save(tensors, &path).unwrap();
        path
    };

    let good = write("ve.safetensors", &weights);
    let loaded = VoiceEncoder::load(&good, &cfg, &Device::Cpu).unwrap();
    let partials = fx.get("partials").to_device(&Device::Cpu).unwrap();
    check(
        "loaded partial embeddings",
        &loaded.forward(&partials).unwrap(),
        &fx.get("out.partial_embeds")
            .to_device(&Device::Cpu)
            .unwrap(),
        1e-4,
    );

    let mut extra = weights.clone();
    extra.insert(
        "flow.encoder.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    match VoiceEncoder::load(&write("extra.safetensors", &extra), &cfg, &Device::Cpu) {
        Err(Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("flow.encoder.weight"), "{reason}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    let mut missing = weights.clone();
    missing.remove("proj.bias");
    match VoiceEncoder::load(&write("missing.safetensors", &missing), &cfg, &Device::Cpu) {
        Err(Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("`proj.bias`"), "{reason}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    // The small weights under the released config: a shape error naming the tensor.
    match VoiceEncoder::load(&good, &VoiceEncConfig::default(), &Device::Cpu) {
        Err(Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("lstm.weight_ih_l0"), "{reason}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    assert!(matches!(
        VoiceEncoder::load(&dir.join("absent.safetensors"), &cfg, &Device::Cpu),
        Err(Error::Checkpoint { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let (ve, fx) = small();
    let opts = EmbedOptions::default();
    let good = wav(&fx, 0);
    let none: [Vec<f32>; 0] = [];
    expect_input(
        "no clips",
        ve.embeds_from_wavs(&none, SR, &opts),
        "no clips",
    );
    expect_input(
        "empty clip",
        ve.embeds_from_wavs(&[good.clone(), Vec::new()], SR, &opts),
        "clip 1 is empty",
    );
    let mut nan = good.clone();
    nan[1234] = f32::NAN;
    expect_input(
        "NaN",
        ve.embeds_from_wavs(&[nan], SR, &opts),
        "non-finite sample (NaN) at 1234",
    );
    let mut inf = good.clone();
    inf[7] = f32::INFINITY;
    expect_input("inf", ve.embeds_from_wavs(&[inf], SR, &opts), "at 7");
    expect_input(
        "too short",
        ve.embeds_from_wavs(&[vec![0.1f32; 150]], SR, &opts),
        "at least 201",
    );
    expect_input(
        "sample rate",
        ve.embeds_from_wavs(&[&good[..]], 24_000, &opts),
        "24000 Hz",
    );
    for (what, bad, needle) in [
        (
            "min_coverage",
            EmbedOptions {
                min_coverage: 0.0,
                ..opts.clone()
            },
            "min_coverage",
        ),
        (
            "overlap",
            EmbedOptions {
                overlap: 1.0,
                ..opts.clone()
            },
            "overlap",
        ),
        (
            "rate",
            EmbedOptions {
                rate: Some(0.0),
                ..opts.clone()
            },
            "rate",
        ),
        (
            "slow rate",
            EmbedOptions {
                rate: Some(0.5),
                ..opts.clone()
            },
            "frame step",
        ),
        (
            "batch",
            EmbedOptions {
                batch_size: 0,
                ..opts.clone()
            },
            "batch_size",
        ),
        (
            "top_db",
            EmbedOptions {
                trim_top_db: Some(f32::NAN),
                ..opts.clone()
            },
            "trim_top_db",
        ),
    ] {
        expect_input(what, ve.embeds_from_wavs(&[&good[..]], SR, &bad), needle);
    }
    let wrong_width = Tensor::zeros((200, 80), DType::F32, ve.device()).unwrap();
    expect_input(
        "mel width",
        ve.partials(&wrong_width, 77, 0.8),
        "(frames > 0, 40)",
    );
    let no_frames = Tensor::zeros((2, 0, 40), DType::F32, ve.device()).unwrap();
    expect_input("no frames", ve.forward(&no_frames), "frames > 0");
    expect_input("no mels", ve.embeds_from_mels(&[], &opts), "no mels");
}
