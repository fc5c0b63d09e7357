//! Kaldi filterbank features as `torchaudio.compliance.kaldi.fbank` computes them (Kaldi's
//! `compute-fbank-feats`): the front end of speaker encoders such as CAMPPlus.
//!
//! Frames are cut with `snip_edges` (only whole windows), each has its DC offset removed, is
//! pre-emphasised and povey-windowed, zero-padded to a power of two, and its power spectrum is
//! pooled by Kaldi's triangular mel banks (`mel = 1127 ln(1 + f / 700)`) and logged with an
//! epsilon floor. Options torchaudio exposes beyond [`FbankConfig`] stay at their defaults:
//! no dither, povey window, `use_energy = false`, `use_power = true`, no VTLN, no mean
//! subtraction.
//!
//! Each step rounds to f32 where torchaudio does (the window, the mel banks, the DC offset and
//! pre-emphasis); the FFT and the mel pooling run in f64 and round once, as in [`crate::Stft`].

use crate::filterbank::SparseFilterbank;
use crate::stft::{Stft, StftError};

/// `numeric_limits<float>::epsilon()`, the floor of every log torchaudio's Kaldi takes.
const EPSILON: f32 = f32::EPSILON;

/// The options of [`KaldiFbank`], named and defaulted as `torchaudio.compliance.kaldi.fbank`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    /// Hz (`sample_frequency`).
    pub sample_frequency: f64,
    /// Milliseconds per frame (`frame_length`).
    pub frame_length_ms: f64,
    /// Milliseconds between frame starts (`frame_shift`).
    pub frame_shift_ms: f64,
    pub num_mel_bins: usize,
    /// Lowest mel-bank edge, Hz.
    pub low_freq: f64,
    /// Highest mel-bank edge, Hz; zero or negative counts back from Nyquist.
    pub high_freq: f64,
    pub preemphasis_coefficient: f32,
    pub remove_dc_offset: bool,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            sample_frequency: 16_000.0,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            num_mel_bins: 23,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis_coefficient: 0.97,
            remove_dc_offset: true,
        }
    }
}

impl FbankConfig {
    /// torchaudio's defaults with `num_mel_bins` bins: `Kaldi.fbank(wav, num_mel_bins=n)`.
    pub fn with_mel_bins(num_mel_bins: usize) -> Self {
        Self {
            num_mel_bins,
            ..Self::default()
        }
    }
}

/// Log mel energies, frame-major like torchaudio's `(frames, num_mel_bins)`: bin `m` of frame
/// `t` is `values[t * n_mels + m]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fbank {
    pub frames: usize,
    pub n_mels: usize,
    pub values: Vec<f32>,
}

/// A Kaldi fbank front end with its window, mel banks and FFT plan made once.
#[derive(Debug, Clone)]
pub struct KaldiFbank {
    config: FbankConfig,
    window_size: usize,
    window_shift: usize,
    padded_size: usize,
    /// The povey window, `window_size` values.
    window: Vec<f32>,
    /// An FFT of `padded_size` points advancing one whole frame: the frames are laid end to
    /// end after their own preprocessing, which a sliding transform cannot do.
    stft: Stft,
    /// `num_mel_bins x (padded_size / 2 + 1)`; the Nyquist column is zero.
    banks: SparseFilterbank,
}

/// Kaldi's povey window as torchaudio builds it in f32:
/// `torch.hann_window(n, periodic=False).pow(0.85)`, the symmetric Hann being
/// `0.5 - 0.5 * cos(k * f32(2π / (n - 1)))`.
pub fn povey_window(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![1.0];
    }
    let step = (2.0 * std::f64::consts::PI / (n - 1) as f64) as f32;
    (0..n)
        .map(|k| {
            let angle = k as f32 * step;
            // Correctly rounded cos and pow of the f32 values; torch's vectorised ones are
            // within an ulp of them.
            let hann = 0.5 - 0.5 * (angle as f64).cos() as f32;
            (hann as f64).powf(0.85) as f32
        })
        .collect()
}

/// Kaldi's mel scale, `1127 ln(1 + f / 700)`, evaluated in f32 as torchaudio's tensor version.
fn mel_scale_f32(hz: f32) -> f32 {
    1127.0 * ((1.0 + hz / 700.0) as f64).ln() as f32
}

/// Kaldi's mel scale in f64 (torchaudio's `mel_scale_scalar`, on Python floats).
fn mel_scale_f64(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// `torchaudio.compliance.kaldi.get_mel_banks(num_bins, padded, sample_freq, low, high, ...)`
/// without VTLN, padded with the zero Nyquist column `fbank` adds: `num_bins` rows of
/// `padded / 2 + 1` weights. The edges are Python floats (f64) and everything after them f32
/// tensors, rounded here at the same points.
pub fn kaldi_mel_banks(
    num_bins: usize,
    padded_size: usize,
    sample_freq: f64,
    low_freq: f64,
    high_freq: f64,
) -> Vec<f32> {
    let num_fft_bins = padded_size / 2;
    let fft_bin_width = (sample_freq / padded_size as f64) as f32;
    let mel_low = mel_scale_f64(low_freq);
    let mel_high = mel_scale_f64(high_freq);
    let delta = ((mel_high - mel_low) / (num_bins + 1) as f64) as f32;
    let mel_low = mel_low as f32;
    let fft_mels: Vec<f32> = (0..num_fft_bins)
        .map(|k| mel_scale_f32(fft_bin_width * k as f32))
        .collect();
    let mut banks = Vec::with_capacity(num_bins * (num_fft_bins + 1));
    for b in 0..num_bins {
        let b = b as f32;
        let left = mel_low + b * delta;
        let center = mel_low + (b + 1.0) * delta;
        let right = mel_low + (b + 2.0) * delta;
        banks.extend(fft_mels.iter().map(|&mel| {
            let up = (mel - left) / (center - left);
            let down = (right - mel) / (right - center);
            up.min(down).max(0.0)
        }));
        banks.push(0.0);
    }
    banks
}

impl KaldiFbank {
    /// Checks the options as torchaudio asserts them and builds the window and mel banks.
    pub fn new(config: FbankConfig) -> Result<Self, StftError> {
        let params = |msg: String| Err(StftError::Params(msg));
        let sr = config.sample_frequency;
        if sr.is_nan() || sr <= 0.0 {
            return params(format!("sample frequency {sr} must be positive"));
        }
        // torchaudio truncates `sample_frequency * ms * 0.001` on Python floats.
        let window_shift = (sr * config.frame_shift_ms * 0.001) as usize;
        let window_size = (sr * config.frame_length_ms * 0.001) as usize;
        if window_shift == 0 || window_size < 2 {
            return params(format!(
                "a frame of {window_size} samples every {window_shift}: the frame needs at \
                 least 2 samples and the shift 1"
            ));
        }
        let padded_size = window_size.next_power_of_two();
        if !(0.0..=1.0).contains(&config.preemphasis_coefficient) {
            return params(format!(
                "pre-emphasis coefficient {} is not within 0..=1",
                config.preemphasis_coefficient
            ));
        }
        if config.num_mel_bins <= 3 {
            return params(format!(
                "{} mel bins: Kaldi's mel banks need at least 4",
                config.num_mel_bins
            ));
        }
        let nyquist = 0.5 * sr;
        let high = if config.high_freq <= 0.0 {
            config.high_freq + nyquist
        } else {
            config.high_freq
        };
        let low = config.low_freq;
        if !((0.0..nyquist).contains(&low) && 0.0 < high && high <= nyquist && low < high) {
            return params(format!(
                "mel band {low}..{high} Hz is not within 0..{nyquist} Hz"
            ));
        }
        let mut frame_window = povey_window(window_size);
        let window = frame_window.clone();
        frame_window.resize(padded_size, 0.0);
        let stft = Stft::new(padded_size, padded_size, frame_window)?;
        let banks = SparseFilterbank::new(
            kaldi_mel_banks(config.num_mel_bins, padded_size, sr, low, high),
            padded_size / 2 + 1,
        );
        Ok(Self {
            config,
            window_size,
            window_shift,
            padded_size,
            window,
            stft,
            banks,
        })
    }

    pub fn config(&self) -> &FbankConfig {
        &self.config
    }

    /// Samples per frame (400 at 16 kHz and 25 ms).
    pub fn window_size(&self) -> usize {
        self.window_size
    }

    /// Samples between frame starts (160 at 16 kHz and 10 ms).
    pub fn window_shift(&self) -> usize {
        self.window_shift
    }

    /// The FFT size, the frame length rounded up to a power of two.
    pub fn padded_size(&self) -> usize {
        self.padded_size
    }

    /// The povey window, [`Self::window_size`] values.
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// The mel banks, `num_mel_bins x (padded_size / 2 + 1)` row-major.
    pub fn mel_banks(&self) -> &[f32] {
        self.banks.weights()
    }

    /// Frames for `len` samples: only whole windows (`snip_edges`); 0 when shorter than one.
    pub fn frames_for(&self, len: usize) -> usize {
        if len < self.window_size {
            0
        } else {
            1 + (len - self.window_size) / self.window_shift
        }
    }

    /// The log mel energies of mono `samples` at the configured rate. Fewer samples than one
    /// frame is an error (torchaudio asserts); non-finite samples propagate as in torch.
    pub fn compute(&self, samples: &[f32]) -> Result<Fbank, StftError> {
        let frames = self.frames_for(samples.len());
        if frames == 0 {
            return Err(StftError::TooShort {
                what: "a Kaldi fbank frame",
                len: samples.len(),
                needed: self.window_size,
            });
        }
        let (size, padded) = (self.window_size, self.padded_size);
        let coeff = self.config.preemphasis_coefficient;
        let mut laid_out = vec![0f32; frames * padded];
        for (f, slot) in laid_out.chunks_exact_mut(padded).enumerate() {
            let frame = &mut slot[..size];
            frame.copy_from_slice(&samples[f * self.window_shift..f * self.window_shift + size]);
            if self.config.remove_dc_offset {
                // torch's CPU mean is an accurate f32 sum divided in f32.
                let sum: f64 = frame.iter().map(|&x| x as f64).sum();
                let mean = sum as f32 / size as f32;
                frame.iter_mut().for_each(|x| *x -= mean);
            }
            if coeff != 0.0 {
                // x[j] -= coeff * x[j - 1], the first sample against itself (replicate pad).
                for j in (1..size).rev() {
                    frame[j] -= coeff * frame[j - 1];
                }
                frame[0] -= coeff * frame[0];
            }
        }
        let spec = self.stft.forward(&laid_out, false)?;
        let bins = spec.bins;
        let power: Vec<f32> = spec
            .re
            .iter()
            .zip(&spec.im)
            .map(|(&re, &im)| (re as f64 * re as f64 + im as f64 * im as f64) as f32)
            .collect();
        let n_mels = self.config.num_mel_bins;
        let mut values = vec![0f32; frames * n_mels];
        for (t, row) in values.chunks_exact_mut(n_mels).enumerate() {
            let column = &power[t * bins..(t + 1) * bins];
            for (m, value) in row.iter_mut().enumerate() {
                let energy = self.banks.apply(m, column);
                *value = ((energy as f32).max(EPSILON) as f64).ln() as f32;
            }
        }
        Ok(Fbank {
            frames,
            n_mels,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn povey_window_is_symmetric_and_zero_at_the_edges() {
        let w = povey_window(400);
        assert_eq!(w.len(), 400);
        assert_eq!(w[0], 0.0);
        assert!(w[399].abs() < 1e-6);
        for k in 0..200 {
            assert!((w[k] - w[399 - k]).abs() < 1e-6, "{k}");
        }
        assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }

    #[test]
    fn mel_banks_are_triangles_within_the_band() {
        let banks = kaldi_mel_banks(80, 512, 16_000.0, 20.0, 8_000.0);
        assert_eq!(banks.len(), 80 * 257);
        for row in banks.chunks(257) {
            assert_eq!(row[256], 0.0);
            assert!(row.iter().all(|&w| (0.0..=1.0).contains(&w)));
            assert!(row.iter().any(|&w| w > 0.0));
        }
        // Bin 0 (DC) sits below 20 Hz: no bank takes it.
        assert!(banks.chunks(257).all(|row| row[0] == 0.0));
    }

    #[test]
    fn frames_and_errors() {
        let fb = KaldiFbank::new(FbankConfig::with_mel_bins(80)).unwrap();
        assert_eq!(
            (fb.window_size(), fb.window_shift(), fb.padded_size()),
            (400, 160, 512)
        );
        assert_eq!(fb.frames_for(399), 0);
        assert_eq!(fb.frames_for(400), 1);
        assert_eq!(fb.frames_for(559), 1);
        assert_eq!(fb.frames_for(560), 2);
        assert!(matches!(
            fb.compute(&[0.0; 399]),
            Err(StftError::TooShort { needed: 400, .. })
        ));
        // Silence floors every bin at ln(eps).
        let out = fb.compute(&[0.0; 560]).unwrap();
        assert_eq!((out.frames, out.n_mels), (2, 80));
        assert!(out
            .values
            .iter()
            .all(|&v| v == (f32::EPSILON as f64).ln() as f32));
        for bad in [
            FbankConfig {
                num_mel_bins: 3,
                ..FbankConfig::default()
            },
            FbankConfig {
                low_freq: 9_000.0,
                ..FbankConfig::default()
            },
            FbankConfig {
                preemphasis_coefficient: 1.5,
                ..FbankConfig::default()
            },
            FbankConfig {
                frame_shift_ms: 0.0,
                ..FbankConfig::default()
            },
        ] {
            assert!(KaldiFbank::new(bad).is_err());
        }
    }
}
