//! Mirrors `S3Tokenizer.log_mel_spectrogram` (`chatterbox/models/s3tokenizer/s3tokenizer.py`):
//! Whisper's front end at 16 kHz with the wrapper's own buffers (librosa's Slaney filterbank,
//! `torch.hann_window(400)`): centred `torch.stft(n_fft 400, hop 160)` without its last frame,
//! power, mel, `log10(max(·, 1e-10))`, floored 8 below the clip's maximum, then `(x + 4) / 4`.

use candle_core::{Device, Tensor};
use ferrovox_audio::{hann_window_torch, mel_filterbank, SparseFilterbank, Stft};

use crate::{Error, Result};

/// The rate the tokenizer takes (`S3_SR`).
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size and window length.
pub const N_FFT: usize = 400;
/// Samples per mel frame (`S3_HOP`): 100 frames a second.
pub const HOP: usize = 160;
/// The shortest clip torch's centred STFT takes: its reflect padding of `N_FFT / 2` on each
/// side needs more samples than that.
pub const MIN_SAMPLES: usize = N_FFT / 2 + 1;

/// The tokenizer's log-mel front end.
#[derive(Debug, Clone)]
pub struct LogMelSpectrogram {
    stft: Stft,
    n_mels: usize,
    /// `n_mels x (N_FFT / 2 + 1)`.
    filterbank: SparseFilterbank,
}

impl LogMelSpectrogram {
    /// `librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)` (0 Hz to Nyquist).
    pub fn new(n_mels: usize) -> Result<Self> {
        if n_mels == 0 {
            return Err(Error::Config(
                "S3 tokenizer: n_mels must be positive".into(),
            ));
        }
        let stft = Stft::new(N_FFT, HOP, hann_window_torch(N_FFT))
            .map_err(|e| Error::Config(format!("S3 tokenizer STFT: {e}")))?;
        let filterbank = SparseFilterbank::new(
            mel_filterbank(
                SAMPLE_RATE,
                N_FFT,
                n_mels,
                0.0,
                f64::from(SAMPLE_RATE) / 2.0,
            ),
            stft.bins(),
        );
        Ok(Self {
            stft,
            n_mels,
            filterbank,
        })
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames of a clip of `samples` samples: the centred STFT's `1 + samples / HOP` less the
    /// dropped last one.
    pub fn frames_for(samples: usize) -> usize {
        samples / HOP
    }

    /// Checks a clip: non-empty, long enough for the STFT, every sample finite.
    pub fn check(wav: &[f32]) -> Result<()> {
        if wav.is_empty() {
            return Err(Error::Input("an empty clip has no speech tokens".into()));
        }
        if wav.len() < MIN_SAMPLES {
            return Err(Error::Input(format!(
                "a {}-sample clip is too short: the S3 tokenizer's STFT needs at least \
                 {MIN_SAMPLES} samples at 16 kHz",
                wav.len()
            )));
        }
        if let Some(i) = wav.iter().position(|x| !x.is_finite()) {
            return Err(Error::Input(format!(
                "sample {i} of the clip is {}: audio must be finite",
                wav[i]
            )));
        }
        Ok(())
    }

    /// The log-mel of one 16 kHz clip, mel-major `[n_mels * frames]`, with its frame count.
    pub fn compute(&self, wav: &[f32]) -> Result<(Vec<f32>, usize)> {
        Self::check(wav)?;
        let spec = self
            .stft
            .forward(wav, true)
            .map_err(|e| Error::Input(format!("S3 tokenizer STFT: {e}")))?;
        let bins = spec.bins;
        // Upstream drops the STFT's last frame (`stft[..., :-1]`).
        let frames = spec.frames - 1;
        // torch squares the f32 magnitude; the sum of squares in f64 rounds once instead.
        let power: Vec<f64> = spec.re[..frames * bins]
            .iter()
            .zip(&spec.im[..frames * bins])
            .map(|(&re, &im)| f64::from(re).powi(2) + f64::from(im).powi(2))
            .collect();
        let mut values = vec![0f32; self.n_mels * frames];
        for m in 0..self.n_mels {
            for t in 0..frames {
                let mel = self.filterbank.apply(m, &power[t * bins..(t + 1) * bins]);
                values[m * frames + t] = (mel as f32).max(1e-10).log10();
            }
        }
        let floor = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) - 8.0;
        for v in &mut values {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        Ok((values, frames))
    }

    /// [`Self::compute`] as a `[n_mels, frames]` f32 tensor on `device`.
    pub fn forward(&self, wav: &[f32], device: &Device) -> Result<Tensor> {
        let (values, frames) = self.compute(wav)?;
        Ok(Tensor::from_vec(values, (self.n_mels, frames), device)?)
    }
}
