//! Mirrors `VoiceEncConfig` (`voice_encoder/config.py`). `Default` is the released
//! `ve.safetensors` (40 power-mel bins at 16 kHz, a 3-layer LSTM of 256, 256-d embeddings); the
//! fixtures' small build deserializes into the same struct.

use serde::Deserialize;

use crate::{Error, Result};

/// What the mel front end hands the LSTM (`mel_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelType {
    /// The filterbank output itself (the released model).
    Amp,
    /// `20 * log10(max(stft_magnitude_min, mel))`.
    Db,
}

/// The voice encoder's front end and network sizes, under upstream's field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VoiceEncConfig {
    pub num_mels: usize,
    pub sample_rate: u32,
    pub speaker_embed_size: usize,
    pub ve_hidden_size: usize,
    /// cuDNN weight packing upstream; it does not change the results, so it is read and unused.
    pub flatten_lstm_params: bool,
    pub n_fft: usize,
    pub hop_size: usize,
    pub win_size: usize,
    pub fmax: f64,
    pub fmin: f64,
    /// Pre-emphasis coefficient; 0 leaves the audio as it is.
    pub preemphasis: f64,
    /// Exponent applied to the STFT magnitudes before the filterbank (2: power).
    pub mel_power: f64,
    pub mel_type: MelType,
    /// Rescales the mel from dB to [0, 1] (and makes the encoder reject mels outside it).
    pub normalized_mels: bool,
    /// Frames per partial utterance (1.6 s at the released hop).
    pub ve_partial_frames: usize,
    pub ve_final_relu: bool,
    pub stft_magnitude_min: f64,
}

impl Default for VoiceEncConfig {
    fn default() -> Self {
        Self {
            num_mels: 40,
            sample_rate: 16_000,
            speaker_embed_size: 256,
            ve_hidden_size: 256,
            flatten_lstm_params: false,
            n_fft: 400,
            hop_size: 160,
            win_size: 400,
            fmax: 8000.0,
            fmin: 0.0,
            preemphasis: 0.0,
            mel_power: 2.0,
            mel_type: MelType::Amp,
            normalized_mels: false,
            ve_partial_frames: 160,
            ve_final_relu: true,
            stft_magnitude_min: 1e-4,
        }
    }
}

impl VoiceEncConfig {
    /// Checks what the front end and the network rely on (upstream asserts `fmax <= sr // 2`).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("voice encoder: {m}")));
        if self.num_mels == 0 || self.ve_hidden_size == 0 || self.speaker_embed_size == 0 {
            return bad(format!(
                "num_mels ({}), ve_hidden_size ({}) and speaker_embed_size ({}) must be positive",
                self.num_mels, self.ve_hidden_size, self.speaker_embed_size
            ));
        }
        if self.n_fft == 0 || self.hop_size == 0 || self.win_size == 0 || self.win_size > self.n_fft
        {
            return bad(format!(
                "n_fft {}, hop_size {}, win_size {}: need positive sizes and win_size <= n_fft",
                self.n_fft, self.hop_size, self.win_size
            ));
        }
        let nyquist = (self.sample_rate / 2) as f64;
        if !(0.0 <= self.fmin && self.fmin < self.fmax && self.fmax <= nyquist) {
            return bad(format!(
                "mel band {}..{} Hz is not within 0..{nyquist} Hz",
                self.fmin, self.fmax
            ));
        }
        if self.ve_partial_frames == 0 {
            return bad("ve_partial_frames must be positive".into());
        }
        if !(self.preemphasis.is_finite() && self.preemphasis >= 0.0) {
            return bad(format!(
                "preemphasis {} must be finite and >= 0",
                self.preemphasis
            ));
        }
        if !(self.mel_power.is_finite() && self.mel_power > 0.0) {
            return bad(format!("mel_power {} must be positive", self.mel_power));
        }
        if !(self.stft_magnitude_min.is_finite() && self.stft_magnitude_min > 0.0) {
            return bad(format!(
                "stft_magnitude_min {} must be positive",
                self.stft_magnitude_min
            ));
        }
        Ok(())
    }
}
