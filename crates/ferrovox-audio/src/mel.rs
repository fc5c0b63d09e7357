//! Log-mel spectrograms: librosa's Slaney filterbank (`librosa.filters.mel` defaults) and the
//! 24 kHz front end of Chatterbox's S3Gen (`chatterbox.models.s3gen.utils.mel.mel_spectrogram`),
//! which turns a reference recording into the prompt mel.

use crate::filterbank::SparseFilterbank;
use crate::stft::{hann_window_torch, reflect_pad, Stft, StftError};

/// Slaney's mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    if hz >= min_log_hz {
        let logstep = 6.4f64.ln() / 27.0;
        min_log_hz / f_sp + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

/// The inverse of [`hz_to_mel`] (librosa `mel_to_hz(htk=False)`).
fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    if mel >= min_log_mel {
        let logstep = 6.4f64.ln() / 27.0;
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` with its defaults (`htk=False`,
/// `norm="slaney"`, float32): `n_mels` rows of `n_fft / 2 + 1` weights, row-major.
///
/// The arithmetic follows librosa step for step in f64, including its two roundings: the
/// triangles are stored into a float32 array, then scaled in place by the f64 Slaney norm.
pub fn mel_filterbank(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    // np.fft.rfftfreq(n_fft, d=1/sr): k * (1 / (n * d)).
    let step = 1.0 / (n_fft as f64 * (1.0 / sample_rate as f64));
    let fft_hz: Vec<f64> = (0..bins).map(|k| k as f64 * step).collect();
    // np.linspace(min_mel, max_mel, n_mels + 2): start + i * step, the last point exactly max.
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let points = n_mels + 2;
    let mel_step = (hi - lo) / (points - 1) as f64;
    let mel_hz: Vec<f64> = (0..points)
        .map(|i| {
            if i == points - 1 {
                mel_to_hz(hi)
            } else {
                mel_to_hz(lo + i as f64 * mel_step)
            }
        })
        .collect();
    let mut weights = Vec::with_capacity(n_mels * bins);
    for i in 0..n_mels {
        let (left, centre, right) = (mel_hz[i], mel_hz[i + 1], mel_hz[i + 2]);
        let norm = 2.0 / (right - left);
        weights.extend(fft_hz.iter().map(|&f| {
            let lower = -(left - f) / (centre - left);
            let upper = (right - f) / (right - centre);
            let triangle = 0f64.max(lower.min(upper)) as f32;
            (triangle as f64 * norm) as f32
        }));
    }
    weights
}

/// Settings of a log-mel front end (window length = `n_fft`, periodic Hann as torch makes it).
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub fmin: f64,
    pub fmax: f64,
}

impl MelConfig {
    /// S3Gen's reference-audio mel (`mel_spectrogram` defaults in `s3gen/utils/mel.py`):
    /// 24 kHz, n_fft = win = 1920, hop 480 (50 frames/s), 80 mels over 0-8 kHz.
    pub fn s3gen() -> Self {
        Self {
            sample_rate: 24_000,
            n_fft: 1920,
            hop: 480,
            n_mels: 80,
            fmin: 0.0,
            fmax: 8000.0,
        }
    }
}

/// A log-mel spectrogram, mel-major like torch's `[n_mels, frames]`: the value of mel `m` in
/// frame `t` is `values[m * frames + t]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    pub n_mels: usize,
    pub frames: usize,
    pub values: Vec<f32>,
}

/// The log-mel front end: reflect pre-pad by `(n_fft - hop) / 2`, uncentred STFT, magnitude
/// `sqrt(re² + im² + 1e-9)`, mel filterbank, `ln(max(mel, 1e-5))`.
#[derive(Debug, Clone)]
pub struct MelSpectrogram {
    config: MelConfig,
    stft: Stft,
    filterbank: SparseFilterbank,
}

impl MelSpectrogram {
    pub fn new(config: MelConfig) -> Result<Self, StftError> {
        if config.hop > config.n_fft || config.n_mels == 0 || config.sample_rate == 0 {
            return Err(StftError::Params(format!(
                "a mel front end needs hop <= n_fft, n_mels > 0 and a sample rate: {config:?}"
            )));
        }
        let nyquist = config.sample_rate as f64 / 2.0;
        if !(0.0 <= config.fmin && config.fmin < config.fmax && config.fmax <= nyquist) {
            return Err(StftError::Params(format!(
                "mel band {}..{} Hz is not within 0..{nyquist} Hz",
                config.fmin, config.fmax
            )));
        }
        let stft = Stft::new(config.n_fft, config.hop, hann_window_torch(config.n_fft))?;
        let filterbank = SparseFilterbank::new(
            mel_filterbank(
                config.sample_rate,
                config.n_fft,
                config.n_mels,
                config.fmin,
                config.fmax,
            ),
            stft.bins(),
        );
        Ok(Self {
            config,
            stft,
            filterbank,
        })
    }

    /// S3Gen's 24 kHz front end ([`MelConfig::s3gen`]).
    pub fn s3gen() -> Result<Self, StftError> {
        Self::new(MelConfig::s3gen())
    }

    pub fn config(&self) -> &MelConfig {
        &self.config
    }

    /// The filterbank, `n_mels x (n_fft / 2 + 1)` row-major.
    pub fn filterbank(&self) -> &[f32] {
        self.filterbank.weights()
    }

    /// Reflect padding on each side before framing.
    fn pre_pad(&self) -> usize {
        (self.config.n_fft - self.config.hop) / 2
    }

    /// Frames for `len` samples: `len / hop` at S3Gen's sizes (0 when too short to run).
    pub fn frames_for(&self, len: usize) -> usize {
        let padded = len + 2 * self.pre_pad();
        if len <= self.pre_pad() || padded < self.config.n_fft {
            0
        } else {
            1 + (padded - self.config.n_fft) / self.config.hop
        }
    }

    /// The log-mel spectrogram of mono `samples` at the configured rate. Samples beyond ±1 are
    /// used as they are (upstream only warns).
    pub fn compute(&self, samples: &[f32]) -> Result<LogMel, StftError> {
        let pad = self.pre_pad();
        let needed = (pad + 1).max(self.config.n_fft.saturating_sub(2 * pad));
        if samples.len() < needed {
            return Err(StftError::TooShort {
                what: "a mel spectrogram",
                len: samples.len(),
                needed,
            });
        }
        let padded = reflect_pad(samples, pad, pad)?;
        let spec = self.stft.forward(&padded, false)?;
        let (frames, bins) = (spec.frames, spec.bins);
        let magnitude: Vec<f32> = spec
            .re
            .iter()
            .zip(&spec.im)
            .map(|(&re, &im)| (re * re + im * im + 1e-9).sqrt())
            .collect();
        let n_mels = self.config.n_mels;
        let mut values = vec![0f32; n_mels * frames];
        for m in 0..n_mels {
            for t in 0..frames {
                let mel = self
                    .filterbank
                    .apply(m, &magnitude[t * bins..(t + 1) * bins]);
                values[m * frames + t] = (mel as f32).max(1e-5).ln();
            }
        }
        Ok(LogMel {
            n_mels,
            frames,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_bends_at_1khz() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(200.0) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn filterbank_shape_and_band_limit() {
        let fb = mel_filterbank(24_000, 1920, 80, 0.0, 8000.0);
        assert_eq!(fb.len(), 80 * 961);
        // 12.5 Hz bins: everything above bin 640 (8 kHz) is outside every triangle.
        for row in fb.chunks(961) {
            assert!(row[641..].iter().all(|&w| w == 0.0));
            assert!(row.iter().any(|&w| w > 0.0));
        }
    }

    #[test]
    fn s3gen_frames_and_errors() {
        let mel = MelSpectrogram::s3gen().unwrap();
        assert_eq!(mel.frames_for(12_000), 25);
        assert_eq!(mel.frames_for(4_800), 10);
        let out = mel.compute(&vec![0.0; 4_800]).unwrap();
        assert_eq!((out.n_mels, out.frames, out.values.len()), (80, 10, 800));
        // Silence hits the clamp: ln(1e-5) up to the 1e-9 magnitude floor.
        assert!(out.values.iter().all(|&v| v < -11.0));
        assert!(matches!(
            mel.compute(&[0.0; 720]),
            Err(StftError::TooShort { needed: 721, .. })
        ));
        assert!(mel.compute(&[]).is_err());
        assert!(MelSpectrogram::new(MelConfig {
            fmax: 20_000.0,
            ..MelConfig::s3gen()
        })
        .is_err());
    }
}
