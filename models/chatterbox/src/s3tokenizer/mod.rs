//! Mirrors Chatterbox's `S3Tokenizer` (`chatterbox/models/s3tokenizer/s3tokenizer.py`), the
//! wrapper over s3tokenizer 0.3.0's `S3TokenizerV2`: 16 kHz audio to 25 Hz speech tokens, the
//! codes T3 predicts and S3Gen decodes. Loads from a released `s3gen.safetensors` under its
//! `tokenizer.` prefix.
//!
//! | module | upstream |
//! |---|---|
//! | this one | the wrapper's `forward` and `S3TokenizerV2.quantize` (`model_v2.py`), with `padding` and `merge_tokenized_segments` (`utils.py`) |
//! | [`config`] | `ModelConfig` (`model_v2.py`) |
//! | [`log_mel`] | the wrapper's `log_mel_spectrogram` |
//! | [`model`] | `AudioEncoderV2`, `FSMNMultiHeadAttention`, `FSQCodebook` (`model_v2.py`) |

pub mod config;
pub mod log_mel;
pub mod model;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

pub use config::S3TokenizerConfig;
pub use log_mel::LogMelSpectrogram;
pub use model::{AudioEncoderV2, EncoderStages, FsqCodebook};

use crate::{Error, Result};

/// Where S3Gen's state dict keeps the tokenizer (`S3Token2Wav.tokenizer`).
pub const CHECKPOINT_PREFIX: &str = "tokenizer";

/// The wrapper's buffers (`_mel_filters`, `window`): in a full state dict, computed at
/// construction, and allowed to be missing from a checkpoint (`ignore_state_dict_missing`).
/// This port computes both itself and reads neither.
pub const BUFFER_KEYS: [&str; 2] = ["tokenizer._mel_filters", "tokenizer.window"];

/// Tokens a second (`S3_TOKEN_RATE`): 4 mel frames each.
pub const TOKEN_RATE: usize = 25;
/// Mel frames a token spans.
pub const FRAMES_PER_TOKEN: usize = 4;
/// Mel frames above which a clip is tokenized in windows (30 s).
pub const MAX_FRAMES: usize = 3000;
/// Frames between window starts: 30 s windows overlapping by 4 s.
pub const WINDOW_STRIDE: usize = 2600;
/// Tokens each inner edge of a window gives up to its neighbour: half the 4 s overlap.
pub const OVERLAP_TOKENS: usize = 2 * TOKEN_RATE;

/// The speech tokenizer: log-mel, encoder and FSQ.
#[derive(Debug, Clone)]
pub struct S3Tokenizer {
    cfg: S3TokenizerConfig,
    mel: LogMelSpectrogram,
    encoder: AudioEncoderV2,
    quantizer: FsqCodebook,
    device: Device,
}

impl S3Tokenizer {
    /// Loads `encoder.*` and `quantizer._codebook.project_down.*` from `vb`, the tokenizer's
    /// root: `vb.pp(CHECKPOINT_PREFIX)` over a released `s3gen.safetensors`.
    pub fn new(cfg: &S3TokenizerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg: cfg.clone(),
            mel: LogMelSpectrogram::new(cfg.n_mels)?,
            encoder: AudioEncoderV2::new(cfg, vb.pp("encoder"))?,
            quantizer: FsqCodebook::new(cfg.n_audio_state, vb.pp("quantizer._codebook"))?,
            device: vb.device().clone(),
        })
    }

    /// Every tensor name [`S3Tokenizer::new`] reads for `cfg`, as S3Gen's checkpoint names them
    /// (under [`CHECKPOINT_PREFIX`]); a full state dict also holds [`BUFFER_KEYS`].
    pub fn expected_keys(cfg: &S3TokenizerConfig) -> Vec<String> {
        let mut keys: Vec<String> = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
            .map(|k| format!("encoder.{k}"))
            .to_vec();
        for i in 0..cfg.n_audio_layer {
            for k in [
                "attn.query.weight",
                "attn.query.bias",
                "attn.key.weight",
                "attn.value.weight",
                "attn.value.bias",
                "attn.out.weight",
                "attn.out.bias",
                "attn.fsmn_block.weight",
                "attn_ln.weight",
                "attn_ln.bias",
                "mlp.0.weight",
                "mlp.0.bias",
                "mlp.2.weight",
                "mlp.2.bias",
                "mlp_ln.weight",
                "mlp_ln.bias",
            ] {
                keys.push(format!("encoder.blocks.{i}.{k}"));
            }
        }
        keys.extend(["weight", "bias"].map(|p| format!("quantizer._codebook.project_down.{p}")));
        keys.into_iter()
            .map(|k| format!("{CHECKPOINT_PREFIX}.{k}"))
            .collect()
    }

    pub fn config(&self) -> &S3TokenizerConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn encoder(&self) -> &AudioEncoderV2 {
        &self.encoder
    }

    pub fn quantizer(&self) -> &FsqCodebook {
        &self.quantizer
    }

    /// The log-mel `[n_mels, frames]` of one 16 kHz clip (`log_mel_spectrogram`).
    pub fn log_mel_spectrogram(&self, wav_16k: &[f32]) -> Result<Tensor> {
        self.mel.forward(wav_16k, &self.device)
    }

    /// The wrapper's `forward(wavs, max_len=max_len)`: each clip's tokens (its row of
    /// upstream's padded output, cut to its length) and the token counts. `max_len` cuts each
    /// clip's mel to `4 * max_len` frames first. Clips must be 16 kHz, finite and at least
    /// [`log_mel::MIN_SAMPLES`] long.
    pub fn tokenize(
        &self,
        wavs_16k: &[&[f32]],
        max_len: Option<usize>,
    ) -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
        if wavs_16k.is_empty() {
            return Err(Error::Input("no clips to tokenize".into()));
        }
        if max_len == Some(0) {
            return Err(Error::Input(
                "max_len 0 leaves no mel frames to tokenize".into(),
            ));
        }
        let mut mels = Vec::with_capacity(wavs_16k.len());
        for (i, wav) in wavs_16k.iter().enumerate() {
            let mel = self.log_mel_spectrogram(wav).map_err(|e| match e {
                Error::Input(why) => Error::Input(format!("clip {i}: {why}")),
                other => other,
            })?;
            let frames = mel.dim(1)?;
            mels.push(match max_len {
                Some(n) if FRAMES_PER_TOKEN * n < frames => {
                    mel.narrow(1, 0, FRAMES_PER_TOKEN * n)?
                }
                _ => mel,
            });
        }
        self.quantize(&mels)
    }

    /// `padding(mels)` then `S3TokenizerV2.quantize`: tokens and token counts of unpadded
    /// `[n_mels, frames]` mels. With every clip at most [`MAX_FRAMES`] long, one padded batch;
    /// otherwise each clip on its own, a long one in 30 s windows every 26 s whose tokens are
    /// merged dropping [`OVERLAP_TOKENS`] at each inner edge. Upstream runs the windows and the
    /// short clips beside them as one batch padded to 3000 frames; a valid position never sees
    /// padding (inputs are masked, padded keys get no attention weight), so each on its own
    /// gives the same tokens.
    pub fn quantize(&self, mels: &[Tensor]) -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
        if mels.is_empty() {
            return Err(Error::Input("no mels to quantize".into()));
        }
        let mut frames = Vec::with_capacity(mels.len());
        for mel in mels {
            match mel.dims() {
                &[n, t] if n == self.cfg.n_mels && t > 0 => frames.push(t),
                dims => {
                    return Err(Error::Input(format!(
                        "a mel of shape {dims:?}: the S3 tokenizer takes [{}, frames > 0]",
                        self.cfg.n_mels
                    )))
                }
            }
        }
        if frames.iter().all(|&t| t <= MAX_FRAMES) {
            let (batch, lens) = pad_mels(mels)?;
            let (hidden, token_lens) = self.encoder.forward(&batch, &lens)?;
            let mut codes = self.quantizer.encode(&hidden)?;
            for (row, &n) in codes.iter_mut().zip(&token_lens) {
                row.truncate(n);
            }
            return Ok((codes, token_lens));
        }
        let mut codes = Vec::with_capacity(mels.len());
        for (mel, &t) in mels.iter().zip(&frames) {
            if t <= MAX_FRAMES {
                codes.push(self.encode_one(mel)?);
                continue;
            }
            let windows = (0..t)
                .step_by(WINDOW_STRIDE)
                .map(|start| self.encode_one(&mel.narrow(1, start, MAX_FRAMES.min(t - start))?))
                .collect::<Result<Vec<_>>>()?;
            codes.push(merge_windows(&windows));
        }
        let lens = codes.iter().map(Vec::len).collect();
        Ok((codes, lens))
    }

    /// The tokens of one unpadded `[n_mels, frames]` mel.
    fn encode_one(&self, mel: &Tensor) -> Result<Vec<u32>> {
        let t = mel.dim(1)?;
        let (hidden, _) = self.encoder.forward(&mel.unsqueeze(0)?, &[t])?;
        let mut codes = self.quantizer.encode(&hidden)?;
        Ok(codes.swap_remove(0))
    }
}

/// `padding(mels)`: `[n_mels, frames]` mels zero-padded at the end to the longest, stacked
/// `[b, n_mels, max_frames]`, with each one's frame count.
pub fn pad_mels(mels: &[Tensor]) -> Result<(Tensor, Vec<usize>)> {
    let lens = mels
        .iter()
        .map(|m| m.dim(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let longest = lens.iter().copied().max().unwrap_or(0);
    let padded = mels
        .iter()
        .zip(&lens)
        .map(|(m, &t)| m.pad_with_zeros(1, 0, longest - t))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((Tensor::stack(&padded, 0)?, lens))
}

/// `merge_tokenized_segments(windows, overlap=4, token_rate=25)`: each window's tokens less
/// [`OVERLAP_TOKENS`] at each edge it shares with a neighbour (Python slices: a window shorter
/// than what it drops gives nothing).
pub fn merge_windows(windows: &[Vec<u32>]) -> Vec<u32> {
    let last = windows.len().saturating_sub(1);
    windows
        .iter()
        .enumerate()
        .flat_map(|(i, tokens)| {
            let n = tokens.len();
            let start = if i == 0 { 0 } else { OVERLAP_TOKENS.min(n) };
            let end = if i == last {
                n
            } else {
                n.saturating_sub(OVERLAP_TOKENS)
            };
            tokens[start..end.max(start)].iter().copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_drops_half_the_overlap_at_inner_edges() {
        let w = |lo: u32, n: u32| (lo..lo + n).collect::<Vec<u32>>();
        assert_eq!(merge_windows(&[w(0, 120)]), w(0, 120));
        let merged = merge_windows(&[w(0, 750), w(1000, 113)]);
        assert_eq!(merged.len(), 700 + 63);
        assert_eq!(merged[699], 699);
        assert_eq!(merged[700], 1050);
        // A last window shorter than the overlap adds nothing; a middle one loses both edges.
        assert_eq!(merge_windows(&[w(0, 750), w(1000, 30)]), w(0, 700));
        assert_eq!(
            merge_windows(&[w(0, 750), w(1000, 120), w(2000, 60)]),
            [w(0, 700), w(1050, 20), w(2050, 10)].concat()
        );
        assert!(merge_windows(&[]).is_empty());
    }

    #[test]
    fn released_key_set() {
        let keys = S3Tokenizer::expected_keys(&S3TokenizerConfig::default());
        assert_eq!(keys.len(), 4 + 6 * 16 + 2);
        assert!(keys.iter().all(|k| k.starts_with("tokenizer.")));
        assert!(keys.contains(&"tokenizer.encoder.blocks.5.attn.fsmn_block.weight".to_string()));
    }
}
