//! The S3 speech tokenizer against upstream (Chatterbox's `S3Tokenizer` over s3tokenizer
//! 0.3.0's `S3TokenizerV2`) on the small random-weight build of `s3tokenizer.safetensors`
//! (`xtask/fixtures/chatterbox/gen_s3tokenizer.py`): the log-mel, each encoder stage, FSQ's
//! pre-round values and the tokens of every clip, a padded batch, `max_len`, and the windowed
//! path past 30 s; the released key set and sizes; bad input.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{ids, max_abs_diff, Fixture, FormulaClip};
use ferrovox_chatterbox::s3tokenizer::{
    log_mel::MIN_SAMPLES, pad_mels, FsqCodebook, S3Tokenizer, S3TokenizerConfig, BUFFER_KEYS,
    CHECKPOINT_PREFIX,
};
use ferrovox_chatterbox::Error;

const CLIPS: [&str; 2] = ["clip0", "clip1"];

fn small() -> (S3Tokenizer, Fixture) {
    let fx = Fixture::load("s3tokenizer");
    let cfg: S3TokenizerConfig = serde_json::from_value(fx.config["model_config"].clone()).unwrap();
    assert_eq!(
        (cfg.n_audio_state, cfg.n_audio_layer),
        (64, 2),
        "the small fixture config was read"
    );
    let tok = S3Tokenizer::new(&cfg, fx.vb().pp(CHECKPOINT_PREFIX)).unwrap();
    (tok, fx)
}

/// A stored clip: 16-bit PCM, the float clip upstream ran being `pcm / 32768`.
fn wav(fx: &Fixture, name: &str) -> Vec<f32> {
    fx.get(&format!("in.{name}.pcm"))
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<i16>()
        .unwrap()
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

fn check(what: &str, got: &Tensor, want: &Tensor, bound: f32) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let err = max_abs_diff(got, want);
    eprintln!("{what}: max|diff| {err:.2e} (bound {bound:.0e})");
    assert!(err <= bound, "{what}: {err} > {bound}");
    err
}

/// Upstream's padded `(B, T)` tokens cut to each row's length, and the lengths.
fn upstream_tokens(fx: &Fixture, prefix: &str) -> (Vec<Vec<u32>>, Vec<usize>) {
    let lens: Vec<usize> = ids(&fx.get(&format!("{prefix}.token_lens")))
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let padded = fx.get(&format!("{prefix}.tokens"));
    let width = padded.dim(1).unwrap();
    let flat = ids(&padded);
    let rows = lens
        .iter()
        .enumerate()
        .map(|(b, &n)| flat[b * width..b * width + n].to_vec())
        .collect();
    (rows, lens)
}

/// The smallest distance of upstream's pre-round FSQ values from a rounding boundary.
fn fsq_margin(fx: &Fixture) -> f32 {
    fx.config["fsq_margin_min"].as_f64().unwrap() as f32
}

/// Bound 1e-4: the STFT runs in f64 here, f32 in torch; log10 turns the power spectrum's
/// relative rounding into absolute error.
#[test]
fn log_mel_matches_upstream() {
    let (tok, fx) = small();
    for name in CLIPS {
        let samples = wav(&fx, name);
        let got = tok.log_mel_spectrogram(&samples).unwrap();
        let want = fx.get(&format!("{name}.log_mel"));
        assert_eq!(got.dim(1).unwrap(), samples.len() / 160, "{name}: frames");
        check(&format!("{name} log-mel"), &got, &want, 1e-4);
    }
}

/// Each stage from upstream's own log-mel, bound 1e-4 (f32 convs, attention and MLPs); the
/// codes of this port's pre-round values are upstream's tokens, the measured pre-round error
/// staying below the fixture's recorded FSQ margin.
#[test]
fn encoder_stages_and_fsq_match_upstream_on_each_clip() {
    let (tok, fx) = small();
    for name in CLIPS {
        let mel = fx.get(&format!("{name}.log_mel"));
        let frames = mel.dim(1).unwrap();
        let stages = tok
            .encoder()
            .forward_stages(&mel.unsqueeze(0).unwrap(), &[frames])
            .unwrap();
        check(
            &format!("{name} conv1"),
            &stages.conv1,
            &fx.get(&format!("{name}.conv1")),
            1e-4,
        );
        check(
            &format!("{name} conv2"),
            &stages.conv2,
            &fx.get(&format!("{name}.conv2")),
            1e-4,
        );
        for (i, block) in stages.blocks.iter().enumerate() {
            check(
                &format!("{name} block {i}"),
                block,
                &fx.get(&format!("{name}.block{i}")),
                1e-4,
            );
        }
        let pre = tok.quantizer().pre_round(&stages.hidden).unwrap();
        let err = check(
            &format!("{name} FSQ pre-round"),
            &pre,
            &fx.get(&format!("{name}.fsq_pre")),
            1e-4,
        );
        assert!(
            err < fsq_margin(&fx),
            "{name}: pre-round error {err} reaches the margin {}",
            fsq_margin(&fx)
        );
        let (want, lens) = upstream_tokens(&fx, name);
        assert_eq!(stages.lens, lens, "{name}: token lengths");
        assert_eq!(FsqCodebook::codes(&pre).unwrap(), want, "{name}: codes");
    }
}

/// The wrapper's `forward([wav])` end to end: tokens identical, lengths equal.
#[test]
fn tokens_match_upstream_on_each_clip() {
    let (tok, fx) = small();
    eprintln!(
        "FSQ margin of the fixture: {:.2e} (min over kept tokens of ||h| - 0.5|)",
        fsq_margin(&fx)
    );
    assert!(
        fsq_margin(&fx) >= 1e-3,
        "the fixture keeps FSQ off its boundaries"
    );
    for name in CLIPS {
        let samples = wav(&fx, name);
        let (tokens, lens) = tok.tokenize(&[&samples], None).unwrap();
        let (want, want_lens) = upstream_tokens(&fx, name);
        eprintln!("{name}: {} samples, {} tokens", samples.len(), lens[0]);
        assert_eq!(lens, want_lens, "{name}: token lengths");
        assert_eq!(tokens, want, "{name}: tokens");
    }
    assert_ne!(
        wav(&fx, "clip0").len() % 160,
        0,
        "clip0 is not a whole number of hops"
    );
}

/// `forward([clip0, clip1])`: the mels zero-padded to the longer one, the encoder's masks. The
/// padded batch's stages are compared whole (padded positions too) at 1e-4; each row's tokens
/// and length equal upstream's and the clip's own.
#[test]
fn padded_batch_matches_upstream() {
    let (tok, fx) = small();
    let mels: Vec<Tensor> = CLIPS
        .iter()
        .map(|n| fx.get(&format!("{n}.log_mel")))
        .collect();
    let (batch, lens) = pad_mels(&mels).unwrap();
    let want_lens: Vec<usize> = ids(&fx.get("batch.mel_lens"))
        .into_iter()
        .map(|n| n as usize)
        .collect();
    assert_eq!(lens, want_lens, "mel lengths");
    assert_ne!(lens[0], lens[1], "the batch pads one row");
    let stages = tok.encoder().forward_stages(&batch, &lens).unwrap();
    check("batch conv2", &stages.conv2, &fx.get("batch.conv2"), 1e-4);
    let last = stages.blocks.len() - 1;
    check(
        "batch last block",
        &stages.hidden,
        &fx.get(&format!("batch.block{last}")),
        1e-4,
    );
    let pre = tok.quantizer().pre_round(&stages.hidden).unwrap();
    check("batch FSQ pre-round", &pre, &fx.get("batch.fsq_pre"), 1e-4);

    let clips: Vec<Vec<f32>> = CLIPS.iter().map(|n| wav(&fx, n)).collect();
    let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
    let (tokens, token_lens) = tok.tokenize(&refs, None).unwrap();
    let (want, want_token_lens) = upstream_tokens(&fx, "batch");
    assert_eq!(token_lens, want_token_lens, "batch token lengths");
    assert_eq!(tokens, want, "batch tokens");
    for (row, name) in tokens.iter().zip(CLIPS) {
        assert_eq!(
            row,
            &upstream_tokens(&fx, name).0[0],
            "{name} alone = in the batch"
        );
    }
}

/// `forward([clip0, clip1], max_len=30)`: mels cut to 120 frames (clip0 is shorter).
#[test]
fn max_len_cuts_the_mels() {
    let (tok, fx) = small();
    let max_len = fx.config["max_len"].as_u64().unwrap() as usize;
    let clips: Vec<Vec<f32>> = CLIPS.iter().map(|n| wav(&fx, n)).collect();
    let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
    let (tokens, lens) = tok.tokenize(&refs, Some(max_len)).unwrap();
    let (want, want_lens) = upstream_tokens(&fx, "batch_maxlen");
    assert_eq!(lens, want_lens);
    assert_eq!(lens[1], max_len, "clip1 is cut");
    assert_eq!(tokens, want);
}

/// The long clip of the fixture config, rebuilt: the generator's closed form evaluated in the
/// same f64 operations, in the same order, with the same LCG and 16-bit rounding.
fn long_clip(fx: &Fixture) -> Vec<f32> {
    let p = &fx.config["long"];
    // Literals, checked against the config: JSON float parsing need not round correctly.
    let (f0, f0_depth, f0_rate, am_rate, amp, noise) = (140.0, 30.0, 0.3, 3.1, 0.3, 0.01);
    for (key, value) in [
        ("f0", f0),
        ("f0_depth", f0_depth),
        ("f0_rate", f0_rate),
        ("am_rate", am_rate),
        ("amp", amp),
        ("noise", noise),
    ] {
        let stored = p[key].as_f64().unwrap();
        assert!((stored - value).abs() < 1e-12, "long.{key}: {stored}");
    }
    let harmonics = p["harmonics"].as_u64().unwrap();
    assert_eq!(harmonics, 4);
    FormulaClip {
        f0,
        f0_depth,
        f0_rate,
        am_rate,
        env_base: 0.55,
        env_depth: 0.45,
        amp,
        noise,
        harmonics,
        seed: p["seed"].as_u64().unwrap(),
    }
    .samples(p["samples"].as_u64().unwrap() as usize, 16_000)
}

/// Past 3000 mel frames upstream tokenizes 30 s windows every 26 s and merges them; alone and
/// beside a short clip (its mixed-batch path) the tokens are upstream's.
#[test]
fn long_clip_windows_match_upstream() {
    let (tok, fx) = small();
    let long = long_clip(&fx);
    let p = &fx.config["long"];
    assert_eq!(long.len() / 160, p["frames"].as_u64().unwrap() as usize);
    assert_eq!(p["windows"].as_u64(), Some(2));
    let (tokens, lens) = tok.tokenize(&[&long], None).unwrap();
    let (want, want_lens) = upstream_tokens(&fx, "long");
    eprintln!("long: {} samples, {} tokens", long.len(), lens[0]);
    assert_eq!(lens, want_lens, "long token length");
    let differing = tokens[0]
        .iter()
        .zip(&want[0])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "long: {differing} tokens differ");

    let clip0 = wav(&fx, "clip0");
    let (mixed, mixed_lens) = tok.tokenize(&[&clip0, &long], None).unwrap();
    let want_mixed_lens: Vec<usize> = ids(&fx.get("mixed.token_lens"))
        .into_iter()
        .map(|n| n as usize)
        .collect();
    assert_eq!(mixed_lens, want_mixed_lens, "mixed token lengths");
    assert_eq!(mixed[0], upstream_tokens(&fx, "clip0").0[0], "mixed: clip0");
    assert_eq!(mixed[1], want[0], "mixed: long");
}

/// The released size: the tensors `new` reads are exactly `expected_keys`, with upstream's
/// shapes, and with the buffers they are upstream's whole state dict. With every weight zero
/// each FSQ value is 0, digit 1 each: token Σ 3^i = 3280, 25 a second.
#[test]
fn full_size_reads_the_released_keys_and_runs() {
    let fx = Fixture::load("s3tokenizer");
    let manifest: HashMap<String, Vec<usize>> =
        serde_json::from_value(fx.config["full_size_keys"].clone()).unwrap();
    let shapes: HashMap<String, Vec<usize>> = manifest
        .iter()
        .map(|(k, v)| (format!("{CHECKPOINT_PREFIX}.{k}"), v.clone()))
        .collect();
    let cfg = S3TokenizerConfig::default();
    let mut expected = S3Tokenizer::expected_keys(&cfg);
    let mut all: Vec<String> = expected
        .iter()
        .cloned()
        .chain(BUFFER_KEYS.map(String::from))
        .collect();
    let mut upstream: Vec<String> = shapes.keys().cloned().collect();
    all.sort();
    upstream.sort();
    assert_eq!(
        all, upstream,
        "expected_keys + buffers = upstream's state dict"
    );

    let (vb, read) = common::manifest_vb(&shapes, &common::device());
    let tok = S3Tokenizer::new(&cfg, vb.pp(CHECKPOINT_PREFIX)).unwrap();
    let mut read = read.lock().unwrap().clone();
    read.sort();
    expected.sort();
    assert_eq!(read, expected, "tensors read = expected_keys");

    let second: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let short = &second[..8_037];
    let (tokens, lens) = tok.tokenize(&[&second, short], None).unwrap();
    assert_eq!(lens, [25, 13]);
    assert!(tokens.iter().flatten().all(|&t| t == 3280), "{tokens:?}");
}

/// From `VarBuilder::zeros` the full-size model builds and gives 25 tokens a second. Only
/// shapes are checked: that backend claims every name, so the FSMN conv loads as weight-normed
/// (`0 / ‖0‖`, NaN); `full_size_reads_the_released_keys_and_runs` checks values.
#[test]
fn full_size_builds_from_zeros() {
    let vb = VarBuilder::zeros(DType::F32, &common::device());
    let tok = S3Tokenizer::new(&S3TokenizerConfig::default(), vb.pp(CHECKPOINT_PREFIX)).unwrap();
    let clip = vec![0.1f32; 32_000];
    let (tokens, lens) = tok.tokenize(&[&clip], Some(40)).unwrap();
    assert_eq!((lens[0], tokens[0].len()), (40, 40));
    let mel = tok.log_mel_spectrogram(&clip).unwrap();
    assert_eq!(mel.dims(), [128, 200]);
}

#[test]
fn bad_input_is_an_error() {
    let (tok, _) = small();
    let is_input = |r: ferrovox_chatterbox::Result<(Vec<Vec<u32>>, Vec<usize>)>, what: &str| match r
    {
        Err(Error::Input(msg)) => {
            eprintln!("{what}: {msg}");
            msg
        }
        other => panic!("{what}: expected an input error, got {other:?}"),
    };
    let good = vec![0.1f32; 4_000];
    is_input(tok.tokenize(&[], None), "no clips");
    let msg = is_input(tok.tokenize(&[&[]], None), "empty clip");
    assert!(msg.contains("empty"));
    let short = vec![0.1f32; MIN_SAMPLES - 1];
    let msg = is_input(tok.tokenize(&[&good, &short], None), "too short");
    assert!(msg.contains("clip 1") && msg.contains("too short"), "{msg}");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut clip = good.clone();
        clip[123] = bad;
        let msg = is_input(tok.tokenize(&[&clip], None), "non-finite");
        assert!(msg.contains("sample 123"), "{msg}");
    }
    is_input(tok.tokenize(&[&good], Some(0)), "max_len 0");
    let wrong = Tensor::zeros((80, 10), DType::F32, tok.device()).unwrap();
    is_input(tok.quantize(&[wrong]), "80-bin mel");

    // The shortest clip the STFT takes gives one frame, one token.
    let (tokens, lens) = tok.tokenize(&[&vec![0.1f32; MIN_SAMPLES]], None).unwrap();
    assert_eq!((lens, tokens[0].len()), (vec![1], 1));

    let cfg = S3TokenizerConfig {
        n_audio_state: 64,
        n_audio_head: 2,
        ..S3TokenizerConfig::default()
    };
    assert!(matches!(cfg.validate(), Err(Error::Config(_))));
}
