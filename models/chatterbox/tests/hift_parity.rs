//! HiFT (`mel2wav`) parity against upstream, stage by stage, from `hift.safetensors` (small
//! config: base_channels 32, cond_channels 32; upstream's draws recorded as `noise.*`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use common::{max_abs_diff, Fixture};
use ferrovox_chatterbox::s3gen::hift::{
    fold_weight_norm, HiftConfig, HiftGenerator, RecordedSourceNoise,
};
use ferrovox_chatterbox::{Error, SeededSourceNoise};

fn config(fx: &Fixture) -> HiftConfig {
    let mut json = fx.config["hift"].clone();
    json["f0_predictor"] = fx.config["f0_predictor"].clone();
    serde_json::from_value(json).unwrap()
}

fn load() -> (Fixture, HiftGenerator) {
    let fx = Fixture::load("hift");
    let hift = HiftGenerator::new(&config(&fx), fx.vb().pp("mel2wav")).unwrap();
    (fx, hift)
}

fn noise(fx: &Fixture) -> RecordedSourceNoise {
    RecordedSourceNoise {
        phase_rand: fx.get("noise.phase_rand"),
        sine: fx.get("noise.sine"),
    }
}

fn check(tag: &str, got: &Tensor, want: &Tensor, bound: f32) {
    let err = max_abs_diff(got, want);
    eprintln!("{tag:24} max|diff| {err:.3e} (bound {bound:.0e})");
    assert!(err <= bound, "{tag}: max|diff| {err:e} > {bound:e}");
}

/// Bounds per recorded stage.
///
/// The F0 predictor's convs agree to ~1e-6 (f32 accumulation order, and the weight-norm fold
/// differs from torch's vectorised one by an ulp here and there), but its classifier multiplies
/// that error by the L1 norm of its weights (1.7e3 in the fixture, whose F0 spans 8-111 Hz):
/// F0 agrees to ~3e-4 Hz, bound 1e-3 Hz. Upstream's own recompute with 1-ulp different
/// weights moved F0 by 2e-4 Hz.
///
/// The source integrates F0: a phase error of `Δf0 · (h+1) · n / 24000` cycles after `n`
/// samples, ~1e-4 rad at the end of the 2880 samples for the 9th harmonic, scaled by 0.1 and
/// the tanh merge. Everything after the source (source STFT, source convs, stages, audio)
/// inherits it; 1e-3 absolute covers it for the source, spectra and audio (|x| <= ~1.5), as
/// §5 of the notes suggests, and 2e-3 for the stage activations, which reach ~9 (observed up
/// to 7.7e-4, i.e. ~1e-4 relative). Fed
/// upstream's F0 or upstream's source instead, the same stages agree to ~1e-6
/// (`source_from_recorded_f0_matches`, `decode_from_recorded_source_matches`).
fn bound(stage: &str) -> f32 {
    match stage {
        // Upstream of the source: plain f32 convs.
        "f0_condnet" | "conv_pre" | "ups.0" => 1e-5,
        "ups.1" | "source_resblocks.0" | "source_resblocks.1" | "stage.0" | "stage.1"
        | "stage.2" => 2e-3,
        _ => 1e-3,
    }
}

#[test]
fn stages_match_upstream() {
    let (fx, hift) = load();
    let mut stages: HashMap<String, Tensor> = HashMap::new();
    let out = hift
        .inference_recorded(&fx.get("in.mel"), None, &mut noise(&fx), &mut |name, t| {
            stages.insert(name.to_string(), t.clone());
        })
        .unwrap();
    for name in [
        "f0_condnet",
        "f0",
        "source",
        "source_stft",
        "conv_pre",
        "ups.0",
        "ups.1",
        "source_downs.0",
        "source_downs.1",
        "source_resblocks.0",
        "source_resblocks.1",
        "stage.0",
        "stage.1",
        "stage.2",
        "phase",
    ] {
        let want = if name == "source" { "out.source" } else { name };
        check(name, &stages[name], &fx.get(want), bound(name));
    }
    // Magnitudes are exp of the conv output and reach ~1e2 before the clip: bound relative.
    let magnitude = &stages["magnitude"];
    let want = fx.get("magnitude");
    let rel = ((magnitude - &want).unwrap().abs().unwrap() / (want.abs().unwrap() + 1.0).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!(
        "{:24} max|diff|/(1+|m|) {rel:.3e} (bound 1e-3)",
        "magnitude"
    );
    assert!(rel <= 1e-3, "magnitude: relative error {rel:e}");
    check("out.source", &out.source, &fx.get("out.source"), 1e-3);
    check("out.audio", &out.audio, &fx.get("out.audio"), 1e-3);
}

#[test]
fn the_phase_draw_maps_as_torch_uniform() {
    let (fx, hift) = load();
    let uniform = fx
        .get("noise.phase_rand")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let phase = hift.m_source().sine_gen().initial_phase(&uniform);
    let want = fx
        .get("noise.phase")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // -π + u·2π in f32 with the fundamental's phase forced to 0: exact.
    assert_eq!(phase, want);
}

#[test]
fn source_from_recorded_f0_matches() {
    // The source alone, fed upstream's F0: isolates SineGen (f64 cumsum) from F0 errors.
    let (fx, hift) = load();
    let source = hift.source(&fx.get("f0"), &mut noise(&fx)).unwrap();
    check("source (upstream f0)", &source, &fx.get("out.source"), 1e-5);
}

#[test]
fn decode_from_recorded_source_matches() {
    // decode() fed upstream's excitation: the filter network and iSTFT alone, every stage
    // within 1e-4 (f32 accumulation order only; no F0 integration in the loop).
    let (fx, hift) = load();
    let mut stages: HashMap<String, Tensor> = HashMap::new();
    let audio = hift
        .decode_recorded(&fx.get("in.mel"), &fx.get("out.source"), &mut |name, t| {
            stages.insert(name.to_string(), t.clone());
        })
        .unwrap();
    for name in [
        "source_stft",
        "conv_pre",
        "ups.0",
        "ups.1",
        "source_downs.0",
        "source_downs.1",
        "source_resblocks.0",
        "source_resblocks.1",
        "stage.0",
        "stage.1",
        "stage.2",
        "phase",
    ] {
        check(
            &format!("{name} (upstream source)"),
            &stages[name],
            &fx.get(name),
            1e-4,
        );
    }
    check(
        "audio (upstream source)",
        &audio,
        &fx.get("out.audio"),
        1e-4,
    );
}

/// `decode` through its graph cache (on CUDA: eager the first time a shape is seen, captured
/// the second, replayed after) gives each input its own audio: upstream's excitation and a
/// scaled copy alternate, and every call matches the direct `decode_recorded` of its inputs.
#[test]
fn decode_replays_match_the_direct_run() {
    let (fx, hift) = load();
    let mel = fx.get("in.mel");
    let sources = [fx.get("out.source"), (fx.get("out.source") * 0.5).unwrap()];
    let direct: Vec<Tensor> = sources
        .iter()
        .map(|s| hift.decode_recorded(&mel, s, &mut |_, _| {}).unwrap())
        .collect();
    assert!(
        max_abs_diff(&direct[0], &direct[1]) > 1e-3,
        "the inputs differ"
    );
    for call in 0..6 {
        let i = call % 2;
        let got = hift.decode(&mel, &sources[i]).unwrap();
        check(
            &format!("decode call {call} (input {i})"),
            &got,
            &direct[i],
            1e-5,
        );
    }
}

#[test]
fn cache_source_overrides_the_start() {
    let (fx, hift) = load();
    let cache = fx.get("cache.in.cache_source");
    let out = hift
        .inference(&fx.get("in.mel"), Some(&cache), &mut noise(&fx))
        .unwrap();
    check(
        "cache.source[..960]",
        &out.source.narrow(2, 0, 960).unwrap(),
        &cache,
        0.0,
    );
    check(
        "cache.out.audio",
        &out.audio,
        &fx.get("cache.out.audio"),
        1e-3,
    );
    // An empty cache is no cache.
    let empty = Tensor::zeros((1, 1, 0), DType::F32, &common::device()).unwrap();
    let plain = hift
        .inference(&fx.get("in.mel"), Some(&empty), &mut noise(&fx))
        .unwrap();
    check(
        "empty cache audio",
        &plain.audio,
        &fx.get("out.audio"),
        1e-3,
    );
}

#[test]
fn old_weight_norm_names_load_the_same() {
    // `weight_g` / `weight_v` (pre-parametrization checkpoints) fold to the same weights.
    let fx = Fixture::load("hift");
    let renamed: HashMap<String, Tensor> = fx
        .tensors
        .iter()
        .map(|(k, v)| {
            let k = k
                .replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v");
            (k, v.clone())
        })
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(renamed, DType::F32, &common::device());
    let hift = HiftGenerator::new(&config(&fx), vb.pp("mel2wav")).unwrap();
    let audio = hift
        .decode(&fx.get("in.mel"), &fx.get("out.source"))
        .unwrap();
    check("audio (weight_g/v)", &audio, &fx.get("out.audio"), 1e-4);
}

#[test]
fn weight_norm_fold_is_per_row() {
    // v rows (3, 4) and (0, 5): norms 5 and 5; g = (10, 1).
    let v = Tensor::new(&[[[3f32], [4.]], [[0.], [5.]]], &common::device()).unwrap();
    let g = Tensor::new(&[[[10f32]], [[1.]]], &common::device()).unwrap();
    let w = fold_weight_norm(&g, &v).unwrap();
    let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(w, [6.0, 8.0, 0.0, 1.0]);
}

#[test]
fn builds_at_full_size_from_zeros() {
    // The released model's shapes: every key exists under the upstream names.
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &common::device());
    let cfg = HiftConfig::default();
    assert_eq!(cfg.samples_per_frame(), 480);
    assert_eq!(cfg.source_down_rates(), [15, 3, 1]);
    let hift = HiftGenerator::new(&cfg, vb.pp("mel2wav")).unwrap();
    let mel = Tensor::zeros((1, 80, 2), DType::F32, &common::device()).unwrap();
    let out = hift
        .inference(&mel, None, &mut SeededSourceNoise::new(7))
        .unwrap();
    assert_eq!(out.audio.dims(), [1, 960]);
    assert_eq!(out.source.dims(), [1, 1, 960]);
}

#[test]
fn bad_input_is_a_typed_error() {
    let (fx, hift) = load();
    let mel = fx.get("in.mel");
    // Wrong channel count.
    let wrong = mel.narrow(1, 0, 79).unwrap();
    let err = hift.inference(&wrong, None, &mut noise(&fx)).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    // Not 3-D.
    let flat = mel.squeeze(0).unwrap();
    assert!(matches!(
        hift.inference(&flat, None, &mut noise(&fx)),
        Err(Error::Input(_))
    ));
    // No frames.
    let empty = mel.narrow(2, 0, 0).unwrap();
    assert!(matches!(
        hift.inference(&empty, None, &mut noise(&fx)),
        Err(Error::Input(_))
    ));
    // A cache longer than the excitation.
    let long = Tensor::zeros((1, 1, 2881), DType::F32, &common::device()).unwrap();
    assert!(matches!(
        hift.inference(&mel, Some(&long), &mut noise(&fx)),
        Err(Error::Input(_))
    ));
    // Recorded draws of the wrong length (a mel one frame shorter).
    let short = mel.narrow(2, 0, 5).unwrap();
    assert!(matches!(
        hift.inference(&short, None, &mut noise(&fx)),
        Err(Error::Input(_))
    ));
    // A source that does not fit the mel.
    let source = fx.get("out.source").narrow(2, 0, 2000).unwrap();
    assert!(matches!(hift.decode(&mel, &source), Err(Error::Input(_))));
    // A config that cannot work.
    let cfg = HiftConfig {
        upsample_kernel_sizes: vec![16, 11],
        ..config(&fx)
    };
    assert!(matches!(
        HiftGenerator::new(&cfg, fx.vb().pp("mel2wav")),
        Err(Error::Config(_))
    ));
    // A missing weight names its key.
    let vb = candle_nn::VarBuilder::from_tensors(HashMap::new(), DType::F32, &common::device());
    match HiftGenerator::new(&config(&fx), vb.pp("mel2wav")) {
        Err(Error::Checkpoint { path, .. }) => assert!(path.starts_with("mel2wav."), "{path}"),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}
