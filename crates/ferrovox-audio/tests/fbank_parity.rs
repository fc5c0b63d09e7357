//! Parity of the Kaldi fbank front end against `torchaudio.compliance.kaldi.fbank(wav,
//! num_mel_bins=80)` (torchaudio 2.6), the call CAMPPlus's `extract_feature` makes, from
//! `tests/fixtures/fbank.safetensors` (written by `xtask/fixtures/chatterbox/gen_campplus.py`).

use ferrovox_audio::{FbankConfig, KaldiFbank};

mod common;

use common::Fixture;

/// The largest absolute difference and where it is.
fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold(
            (0.0, 0),
            |(m, at), (i, d)| if d > m { (d, i) } else { (m, at) },
        )
}

fn check(tag: &str, got: &[f32], want: &[f32], bound: f32) {
    let (err, at) = max_abs_diff(got, want);
    eprintln!("{tag:24} max|diff| {err:.3e} at {at} (bound {bound:.0e})");
    assert!(err <= bound, "{tag}: max|diff| {err:e} at {at} > {bound:e}");
}

fn campplus_fbank() -> KaldiFbank {
    KaldiFbank::new(FbankConfig::with_mel_bins(80)).unwrap()
}

#[test]
fn povey_window_and_mel_banks_match_torchaudio() {
    let fx = Fixture::own("fbank");
    let fb = campplus_fbank();
    let (_, window) = fx.get("const.povey_window");
    // torch's vectorised cos and pow are within an ulp of the correctly rounded ones.
    check("povey window", fb.window(), &window, 2e-7);
    let (shape, banks) = fx.get("const.mel_banks");
    assert_eq!(shape, [80, 256]);
    // torchaudio's banks stop before the Nyquist bin; fbank pads that column with zeros.
    let padded: Vec<f32> = banks
        .chunks(256)
        .flat_map(|row| row.iter().copied().chain([0.0]))
        .collect();
    // Edges and slopes round in f32 at torchaudio's points. A 1-ulp difference of a bin's
    // f32 mel (torch's vectorised log against a correctly rounded one; 2.4e-4 near 2840 mel)
    // over a 34.7-mel triangle side moves its weight by 7e-6.
    check("mel banks", fb.mel_banks(), &padded, 1e-5);
}

/// Every clip's log mel energies, bounded absolutely on ln(energy) at 1e-4. Two roundings of
/// torch's own dominate: its f32 FFT carries ~1e-7 error relative to a frame's largest bins,
/// far more than an ulp of the lowest mel bands (30 dB down after pre-emphasis; torch's f32
/// fbank differs from its f64 one by up to 7.9e-5 there on these clips); and its vectorised
/// f32 log puts 21 of the 256 bin centres of the mel banks an ulp from the correctly rounded
/// one, which moves a band by up to 7.6e-5 where a strong harmonic sits on a small weight
/// (measured by swapping torch's log for a correctly rounded one).
#[test]
fn fbank_matches_torchaudio() {
    let fx = Fixture::own("fbank");
    let fb = campplus_fbank();
    for clip in ["a", "b", "c"] {
        let (_, wav) = fx.get(&format!("in.{clip}"));
        let (shape, want) = fx.get(&format!("fbank.{clip}"));
        let got = fb.compute(&wav).unwrap();
        assert_eq!(
            [got.frames, got.n_mels],
            [shape[0], shape[1]],
            "clip {clip}"
        );
        assert_eq!(got.frames, fb.frames_for(wav.len()));
        check(&format!("fbank clip {clip}"), &got.values, &want, 1e-4);
    }
}

/// Clip c opens with 560 samples of digital silence: its first two frames take the epsilon
/// floor in every bin, exactly.
#[test]
fn silence_takes_the_epsilon_floor() {
    let fx = Fixture::own("fbank");
    let (_, wav) = fx.get("in.c");
    let (_, want) = fx.get("fbank.c");
    let got = campplus_fbank().compute(&wav).unwrap();
    let floor = (f32::EPSILON as f64).ln() as f32;
    assert!(want[..160].iter().all(|&v| v == floor));
    assert_eq!(&got.values[..160], &want[..160]);
    assert!(got.values[160..].iter().any(|&v| v > floor));
}

#[test]
fn too_short_is_an_error() {
    let fb = campplus_fbank();
    assert!(fb.compute(&[]).is_err());
    assert!(fb.compute(&[0.1; 399]).is_err());
    assert_eq!(fb.compute(&[0.1; 400]).unwrap().frames, 1);
}
