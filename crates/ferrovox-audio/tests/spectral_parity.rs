//! Parity of the STFT, iSTFT and S3Gen mel front end against upstream torch, from the fixture
//! Chatterbox's tests share (`models/chatterbox/tests/fixtures/mel.safetensors`, made by
//! `xtask/fixtures/chatterbox/gen_s3gen.py` with torch 2.6 / librosa 0.11).

use ferrovox_audio::{
    hann_window_scipy, hann_window_torch, reflect_pad, MelSpectrogram, Spectrogram, Stft,
};

mod common;

use common::Fixture;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(tag: &str, got: &[f32], want: &[f32], bound: f32) {
    let err = max_abs_diff(got, want);
    eprintln!("{tag:28} max|diff| {err:.3e} (bound {bound:.0e})");
    assert!(err <= bound, "{tag}: max|diff| {err:e} > {bound:e}");
}

/// `[bins, frames]` (torch, batch 1) to frame-major.
fn frame_major(values: &[f32], bins: usize, frames: usize) -> Vec<f32> {
    (0..frames)
        .flat_map(|f| (0..bins).map(move |k| values[k * frames + f]))
        .collect()
}

#[test]
fn windows_match_torch_and_scipy() {
    let fx = Fixture::chatterbox("mel");
    let (_, mel_window) = fx.get("const.mel_window");
    let (_, hift_window) = fx.get("const.hift_window");
    // torch's window goes through its vectorised f32 cos (SLEEF, within 1 ulp but not correctly
    // rounded): 64 of the 1920 values differ from the correctly rounded cosine by one ulp.
    check(
        "window.torch(1920)",
        &hann_window_torch(1920),
        &mel_window,
        6e-8,
    );
    // scipy's is f64 arithmetic rounded once: exact.
    check(
        "window.scipy(16)",
        &hann_window_scipy(16),
        &hift_window,
        0.0,
    );
}

#[test]
fn filterbank_matches_librosa() {
    let fx = Fixture::chatterbox("mel");
    let (shape, want) = fx.get("const.mel_filterbank");
    assert_eq!(shape, [80, 961]);
    let mel = MelSpectrogram::s3gen().unwrap();
    // librosa's own f64 arithmetic with its two f32 roundings: bit-exact.
    check("mel.filterbank", mel.filterbank(), &want, 0.0);
}

#[test]
fn mel_stft_and_log_mel_match_torch() {
    let fx = Fixture::chatterbox("mel");
    let (_, wav) = fx.get("in.wav");
    let (_, want_re) = fx.get("stft.re");
    let (_, want_im) = fx.get("stft.im");
    let (shape, want_mel) = fx.get("out.mel");
    assert_eq!(shape, [1, 80, 25]);

    let stft = Stft::new(1920, 480, hann_window_torch(1920)).unwrap();
    let spec = stft
        .forward(&reflect_pad(&wav, 720, 720).unwrap(), false)
        .unwrap();
    assert_eq!((spec.frames, spec.bins), (25, 961));
    // 1920-point transforms of a signal with |x| <= 1: bins reach ~10^2, where torch's own f32
    // FFT rounding is ~1e-5 (observed 1.5e-5; ours runs in f64).
    check(
        "mel.stft.re",
        &spec.re,
        &frame_major(&want_re, 961, 25),
        5e-5,
    );
    check(
        "mel.stft.im",
        &spec.im,
        &frame_major(&want_im, 961, 25),
        5e-5,
    );

    let mel = MelSpectrogram::s3gen().unwrap().compute(&wav).unwrap();
    assert_eq!((mel.n_mels, mel.frames), (80, 25));
    // Log of sums of ~hundreds of magnitudes: relative f32 noise ~1e-6 (observed 2.9e-6).
    check("mel.out", &mel.values, &want_mel, 2e-5);
}

#[test]
fn hift_stft_and_istft_match_torch() {
    let fx = Fixture::chatterbox("mel");
    let (_, wav) = fx.get("in.wav");
    let (_, want_re) = fx.get("hift_stft.re");
    let (_, want_im) = fx.get("hift_stft.im");
    let (_, want_roundtrip) = fx.get("hift_stft.roundtrip");
    let stft = Stft::new(16, 4, hann_window_scipy(16)).unwrap();

    let spec = stft.forward(&wav[..2400], true).unwrap();
    assert_eq!((spec.frames, spec.bins), (601, 9));
    check(
        "hift_stft.re",
        &spec.re,
        &frame_major(&want_re, 9, 601),
        1e-6,
    );
    check(
        "hift_stft.im",
        &spec.im,
        &frame_major(&want_im, 9, 601),
        1e-6,
    );

    // The round trip starts from torch's spectrum, so this checks the inverse alone.
    let torch_spec = Spectrogram::new(
        601,
        9,
        frame_major(&want_re, 9, 601),
        frame_major(&want_im, 9, 601),
    )
    .unwrap();
    let roundtrip = stft.inverse(&torch_spec).unwrap();
    check("hift_stft.roundtrip", &roundtrip, &want_roundtrip, 1e-6);

    // HiFT's `_istft`: clip magnitudes at 100, polar to rectangular in f32, inverse.
    let (shape, magnitude) = fx.get("istft.in.magnitude");
    let (_, phase) = fx.get("istft.in.phase");
    let (_, want) = fx.get("istft.out");
    assert_eq!(shape, [1, 9, 41]);
    let magnitude: Vec<f32> = magnitude.iter().map(|&m| m.min(100.0)).collect();
    let re: Vec<f32> = magnitude
        .iter()
        .zip(&phase)
        .map(|(m, p)| m * p.cos())
        .collect();
    let im: Vec<f32> = magnitude
        .iter()
        .zip(&phase)
        .map(|(m, p)| m * p.sin())
        .collect();
    let spec = Spectrogram::new(41, 9, frame_major(&re, 9, 41), frame_major(&im, 9, 41)).unwrap();
    let audio = stft.inverse(&spec).unwrap();
    // Magnitudes up to 100: a few ulp of 100 / 16 per sample (observed 9.5e-7).
    check("istft.out", &audio, &want, 5e-6);
}

#[test]
fn prompt_mel_of_the_e2e_reference_matches() {
    // The e2e fixture's prompt mel (`in.prompt_feat`, time-major [1, 10, 80]) is this front end
    // applied to its 4800-sample reference.
    let fx = Fixture::chatterbox("s3gen_e2e");
    let (_, wav) = fx.get("in.ref_wav");
    let (shape, want) = fx.get("in.prompt_feat");
    assert_eq!(shape, [1, 10, 80]);
    let mel = MelSpectrogram::s3gen().unwrap().compute(&wav).unwrap();
    assert_eq!((mel.n_mels, mel.frames), (80, 10));
    let time_major: Vec<f32> = (0..10)
        .flat_map(|t| (0..80).map(move |m| (m, t)))
        .map(|(m, t)| mel.values[m * 10 + t])
        .collect();
    check("e2e.prompt_feat", &time_major, &want, 2e-5);
}
