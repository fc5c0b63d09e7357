//! Mirrors `voice_encoder/melspec.py` (`melspectrogram` with `pad=True`): optional
//! pre-emphasis, `librosa.stft` (periodic Hann, centred, reflect padding), magnitudes raised to
//! `mel_power`, librosa's Slaney filterbank, then optionally dB and [0, 1] scaling. The released
//! config stops after the filterbank: an unlogged 40-bin power mel.

use ferrovox_audio::{hann_window_scipy, mel_filterbank, SparseFilterbank, Stft};

use super::config::{MelType, VoiceEncConfig};
use crate::{Error, Result};

/// Headroom `_normalize` leaves above 0 dB.
const HEADROOM_DB: f64 = 15.0;

/// The voice encoder's mel front end, with its FFT plan and filterbank made once.
#[derive(Debug, Clone)]
pub struct MelSpec {
    cfg: VoiceEncConfig,
    stft: Stft,
    /// `num_mels x (n_fft / 2 + 1)`, as `librosa.filters.mel` returns it (float32).
    filterbank: SparseFilterbank,
}

impl MelSpec {
    pub fn new(cfg: &VoiceEncConfig) -> Result<Self> {
        cfg.validate()?;
        // librosa: get_window("hann", win_length, fftbins=True), centred in n_fft zeros.
        let mut window = vec![0f32; cfg.n_fft];
        let left = (cfg.n_fft - cfg.win_size) / 2;
        window[left..left + cfg.win_size].copy_from_slice(&hann_window_scipy(cfg.win_size));
        let stft = Stft::new(cfg.n_fft, cfg.hop_size, window)
            .map_err(|e| Error::Config(format!("voice encoder: {e}")))?;
        let filterbank = SparseFilterbank::new(
            mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax),
            stft.bins(),
        );
        Ok(Self {
            cfg: cfg.clone(),
            stft,
            filterbank,
        })
    }

    /// The filterbank, `num_mels x (n_fft / 2 + 1)` row-major.
    pub fn filterbank(&self) -> &[f32] {
        self.filterbank.weights()
    }

    /// The shortest clip the centred STFT can pad: librosa's reflect padding of `n_fft / 2`
    /// samples mirrors a shorter clip more than once, which [`ferrovox_audio::reflect_pad`]
    /// refuses.
    pub fn min_samples(&self) -> usize {
        self.cfg.n_fft / 2 + 1
    }

    /// Frames for `len` samples: `1 + len / hop_size` (upstream asserts it).
    pub fn frames_for(&self, len: usize) -> usize {
        1 + len / self.cfg.hop_size
    }

    /// The mel of `wav`, frame-major (`melspectrogram(wav, hp).T`, `(frames, num_mels)`),
    /// computed in f64 and rounded to f32 once per stage where numpy rounds.
    pub fn compute(&self, wav: &[f32]) -> Result<Vec<f32>> {
        if wav.len() < self.min_samples() {
            return Err(Error::Input(format!(
                "{} samples are too few for the voice encoder's mel: at least {} are needed \
                 (n_fft / 2 + 1)",
                wav.len(),
                self.min_samples()
            )));
        }
        let emphasized;
        let wav = if self.cfg.preemphasis > 0.0 {
            emphasized = preemphasis(wav, self.cfg.preemphasis);
            &emphasized[..]
        } else {
            wav
        };
        let spec = self
            .stft
            .forward(wav, true)
            .map_err(|e| Error::Input(format!("voice encoder mel: {e}")))?;
        let (frames, bins) = (spec.frames, spec.bins);
        debug_assert_eq!(frames, self.frames_for(wav.len()));
        // numpy: np.abs on complex64 (hypot, rounded to f32), then `**= mel_power` in f32.
        let power = self.cfg.mel_power;
        let magnitude: Vec<f32> = spec
            .re
            .iter()
            .zip(&spec.im)
            .map(|(&re, &im)| {
                let m = (re as f64).hypot(im as f64) as f32;
                if power == 2.0 {
                    m * m
                } else {
                    (m as f64).powf(power) as f32
                }
            })
            .collect();
        let n_mels = self.cfg.num_mels;
        let min_level_db = 20.0 * self.cfg.stft_magnitude_min.log10();
        let mut out = vec![0f32; frames * n_mels];
        for m in 0..n_mels {
            for t in 0..frames {
                let mel = self
                    .filterbank
                    .apply(m, &magnitude[t * bins..(t + 1) * bins]);
                let mut v = mel as f32;
                if self.cfg.mel_type == MelType::Db {
                    v = (20.0 * (v as f64).max(self.cfg.stft_magnitude_min).log10()) as f32;
                }
                if self.cfg.normalized_mels {
                    v = ((v as f64 - min_level_db) / (-min_level_db + HEADROOM_DB)) as f32;
                }
                out[t * n_mels + m] = v;
            }
        }
        Ok(out)
    }
}

/// `scipy.signal.lfilter([1, -p], [1], wav)` on float32 audio (float32 arithmetic: the
/// delayed term first, then the current sample), clipped to [-1, 1] as upstream does.
fn preemphasis(wav: &[f32], coefficient: f64) -> Vec<f32> {
    let b1 = -coefficient as f32;
    let mut previous = 0f32;
    wav.iter()
        .map(|&x| {
            let y = b1 * previous + x;
            previous = x;
            y.clamp(-1.0, 1.0)
        })
        .collect()
}
