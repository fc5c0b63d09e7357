//! Mirrors `VoiceEncoder` (`voice_encoder/voice_encoder.py`): a 3-layer LSTM over 160-frame
//! partials of a clip's mel, the last layer's final state projected (ReLU, L2 norm) to one
//! embedding per partial, and `inference` / `embeds_from_mels` / `embeds_from_wavs`, which trim,
//! cut each clip into partials (`get_frame_step`, `get_num_wins`), average a clip's partial
//! embeddings and L2-normalise the mean.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTM, RNN};
use candle_nn::{Linear, Module, VarBuilder};

use super::config::VoiceEncConfig;
use super::melspec::MelSpec;
use super::trim::trim_indices;
use crate::{Error, Result};

/// Upstream builds `nn.LSTM(..., num_layers=3)` whatever the config says.
pub const LSTM_LAYERS: usize = 3;

/// The partial rate `embeds_from_wavs` sets when none is given ("Resemble's default value").
pub const DEFAULT_RATE: f64 = 1.3;

/// Tensors of a released `ve.safetensors` that inference does not read (the GE2E training loss'
/// cosine-similarity scale and offset).
const UNUSED_KEYS: [&str; 2] = ["similarity_weight", "similarity_bias"];

/// How `embeds_from_wavs` / `embeds_from_mels` cut and reduce; `Default` is what
/// `embeds_from_wavs` does when called as `prepare_conditionals` calls it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    /// One speaker embedding (`(E,)`, the normalised mean of the clips' embeddings) instead of
    /// one per clip (`(B, E)`).
    pub as_spk: bool,
    /// Trim leading and trailing audio this many dB below the loudest frame; `None` or 0 keep
    /// the clip whole (upstream tests the value's truthiness). Wavs only.
    pub trim_top_db: Option<f32>,
    /// Partials per second of audio; when set it decides the frame step and `overlap` is unused.
    pub rate: Option<f64>,
    /// Overlap of consecutive partials when `rate` is `None`, in `[0, 1)`.
    pub overlap: f64,
    /// The share of a last, incomplete partial that must be covered by audio for it to count,
    /// in `(0, 1]`.
    pub min_coverage: f64,
    /// Partials per LSTM call (memory only; the results do not depend on it).
    pub batch_size: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            as_spk: false,
            trim_top_db: Some(20.0),
            rate: Some(DEFAULT_RATE),
            overlap: 0.5,
            min_coverage: 0.8,
            batch_size: 32,
        }
    }
}

impl EmbedOptions {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("voice encoder options: {m}")));
        if !(0.0..1.0).contains(&self.overlap) {
            return bad(format!("overlap {} is not in [0, 1)", self.overlap));
        }
        if !(self.min_coverage > 0.0 && self.min_coverage <= 1.0) {
            return bad(format!(
                "min_coverage {} is not in (0, 1]",
                self.min_coverage
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be positive".into());
        }
        if let Some(db) = self.trim_top_db.filter(|db| !db.is_finite()) {
            return bad(format!("trim_top_db {db} is not finite"));
        }
        Ok(())
    }
}

/// Frames between the starts of consecutive partials (`get_frame_step`):
/// `round(sample_rate / rate / partial_frames)` with a rate, else
/// `round(partial_frames * (1 - overlap))` (numpy rounds halves to even); it must lie in
/// `1..=partial_frames`.
pub fn frame_step(cfg: &VoiceEncConfig, overlap: f64, rate: Option<f64>) -> Result<usize> {
    let bad = |m: String| Err(Error::Input(format!("voice encoder partials: {m}")));
    if !(0.0..1.0).contains(&overlap) {
        return bad(format!("overlap {overlap} is not in [0, 1)"));
    }
    let frames = cfg.ve_partial_frames as f64;
    let step = match rate {
        None => (frames * (1.0 - overlap)).round_ties_even(),
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            (cfg.sample_rate as f64 / rate / frames).round_ties_even()
        }
        Some(rate) => return bad(format!("rate {rate} must be positive")),
    };
    if !(1.0..=frames).contains(&step) {
        return bad(format!(
            "a frame step of {step} (rate {rate:?}, overlap {overlap}) is not in 1..={frames}"
        ));
    }
    Ok(step as usize)
}

/// How many partials a mel of `n_frames` (> 0) gives, and the length it is cut or zero-padded
/// to (`get_num_wins`): every full window, plus the last partial one if its audio covers at
/// least `min_coverage` of it; never fewer than one.
pub fn num_wins(
    cfg: &VoiceEncConfig,
    n_frames: usize,
    step: usize,
    min_coverage: f64,
) -> (usize, usize) {
    let win = cfg.ve_partial_frames;
    let span = (n_frames + step).saturating_sub(win);
    let (mut n_wins, remainder) = (span / step, span % step);
    if n_wins == 0 || (remainder + win - step) as f64 / win as f64 >= min_coverage {
        n_wins += 1;
    }
    (n_wins, win + step * (n_wins - 1))
}

/// The speaker encoder whose embedding conditions T3.
#[derive(Debug, Clone)]
pub struct VoiceEncoder {
    cfg: VoiceEncConfig,
    mel: MelSpec,
    lstm: Vec<LSTM>,
    proj: Linear,
    device: Device,
}

impl VoiceEncoder {
    /// Builds from `vb` at the checkpoint root (upstream's `VoiceEncoder().state_dict()` keys:
    /// `lstm.weight_ih_l0`, ..., `proj.weight`, `proj.bias`).
    pub fn new(cfg: &VoiceEncConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        // candle's LSTM is torch's: gates (input, forget, cell, output) in that order along
        // the 4H rows, both biases added, the same `weight_ih_l{k}` names.
        let lstm = (0..LSTM_LAYERS)
            .map(|layer| {
                let input = if layer == 0 {
                    cfg.num_mels
                } else {
                    cfg.ve_hidden_size
                };
                let config = LSTMConfig {
                    layer_idx: layer,
                    ..LSTMConfig::default()
                };
                candle_nn::rnn::lstm(input, cfg.ve_hidden_size, config, vb.pp("lstm"))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            mel: MelSpec::new(cfg)?,
            lstm,
            proj: candle_nn::linear(cfg.ve_hidden_size, cfg.speaker_embed_size, vb.pp("proj"))?,
            device: vb.device().clone(),
            cfg: cfg.clone(),
        })
    }

    /// Loads a `ve.safetensors` onto `device` (float32: the model is small and its LSTM runs
    /// hundreds of sequential steps). A missing, misshapen or unexpected tensor (another
    /// model's file) is an error naming the file and the key.
    pub fn load(path: &Path, cfg: &VoiceEncConfig, device: &Device) -> Result<Self> {
        crate::checkpoint::load_checked(
            path,
            &Self::expected_keys(),
            |k| UNUSED_KEYS.contains(&k),
            "a voice encoder checkpoint",
            DType::F32,
            device,
            |vb| Self::new(cfg, vb),
        )
    }

    /// Every tensor name [`VoiceEncoder::new`] reads.
    pub fn expected_keys() -> Vec<String> {
        let mut keys = Vec::new();
        for layer in 0..LSTM_LAYERS {
            for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                keys.push(format!("lstm.{name}_l{layer}"));
            }
        }
        keys.extend(["proj.weight".to_string(), "proj.bias".to_string()]);
        keys
    }

    pub fn config(&self) -> &VoiceEncConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The mel front end.
    pub fn mel_spec(&self) -> &MelSpec {
        &self.mel
    }

    /// `melspectrogram(wav, hp).T` of a 16 kHz clip: `(frames, num_mels)` on the model's device.
    pub fn melspectrogram(&self, wav: &[f32]) -> Result<Tensor> {
        let values = self.mel.compute(wav)?;
        let frames = values.len() / self.cfg.num_mels;
        Ok(Tensor::from_vec(
            values,
            (frames, self.cfg.num_mels),
            &self.device,
        )?)
    }

    /// One clip's partials (`stride_as_partials`): its `(frames, num_mels)` mel cut or
    /// zero-padded to [`num_wins`]'s length, then windows of `ve_partial_frames` every `step`
    /// frames: `(n_partials, ve_partial_frames, num_mels)`.
    pub fn partials(&self, mel: &Tensor, step: usize, min_coverage: f64) -> Result<Tensor> {
        let (frames, mels) = mel.dims2()?;
        if frames == 0 || mels != self.cfg.num_mels {
            return Err(Error::Input(format!(
                "a voice encoder mel must be (frames > 0, {}), got {:?}",
                self.cfg.num_mels,
                mel.dims()
            )));
        }
        if step == 0 || step > self.cfg.ve_partial_frames {
            return Err(Error::Input(format!(
                "frame step {step} is not in 1..={}",
                self.cfg.ve_partial_frames
            )));
        }
        let (n_wins, target) = num_wins(&self.cfg, frames, step, min_coverage);
        let mel = if target > frames {
            let pad = Tensor::zeros((target - frames, mels), mel.dtype(), mel.device())?;
            Tensor::cat(&[mel, &pad], 0)?
        } else {
            mel.narrow(0, 0, target)?
        };
        let windows = (0..n_wins)
            .map(|i| mel.narrow(0, i * step, self.cfg.ve_partial_frames))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&windows, 0)?)
    }

    /// Each LSTM layer's final hidden state (torch's `h_n`) for a batch of partials
    /// `(N, frames, num_mels)`: `(LSTM_LAYERS, N, ve_hidden_size)`.
    pub fn lstm_final_hidden(&self, partials: &Tensor) -> Result<Tensor> {
        Ok(Tensor::stack(&self.run_lstm(partials)?, 0)?)
    }

    fn run_lstm(&self, partials: &Tensor) -> Result<Vec<Tensor>> {
        let (_, frames, mels) = partials.dims3()?;
        if frames == 0 || mels != self.cfg.num_mels {
            return Err(Error::Input(format!(
                "voice encoder partials must be (N, frames > 0, {}), got {:?}",
                self.cfg.num_mels,
                partials.dims()
            )));
        }
        let mut x = partials.to_dtype(DType::F32)?.contiguous()?;
        let mut finals = Vec::with_capacity(LSTM_LAYERS);
        for layer in &self.lstm {
            let states = layer.seq(&x)?;
            // frames > 0, so every layer has a last state.
            finals.extend(states.last().map(|s| s.h().clone()));
            x = layer.states_to_tensor(&states)?;
        }
        Ok(finals)
    }

    /// `VoiceEncoder.forward`: L2-normalised embeddings `(N, speaker_embed_size)` of a batch of
    /// partials `(N, frames, num_mels)`.
    pub fn forward(&self, partials: &Tensor) -> Result<Tensor> {
        if self.cfg.normalized_mels {
            let flat = partials.flatten_all()?;
            let (lo, hi) = (
                flat.min(0)?.to_scalar::<f32>()?,
                flat.max(0)?.to_scalar::<f32>()?,
            );
            if lo < 0.0 || hi > 1.0 {
                return Err(Error::Input(format!(
                    "mels outside [0, 1] (min {lo}, max {hi}) for a normalized-mel encoder"
                )));
            }
        }
        let finals = self.run_lstm(partials)?;
        let last = finals
            .last()
            .ok_or_else(|| Error::Input("no LSTM state for an empty partial".into()))?;
        let mut raw = self.proj.forward(last)?;
        if self.cfg.ve_final_relu {
            raw = raw.relu()?;
        }
        l2_normalize_rows(&raw)
    }

    /// `VoiceEncoder.inference`: one L2-normalised embedding per clip `(B, E)` from the clips'
    /// `(frames, num_mels)` mels, each the mean of its partials' embeddings.
    pub fn inference(&self, mels: &[Tensor], opts: &EmbedOptions) -> Result<Tensor> {
        opts.validate()?;
        if mels.is_empty() {
            return Err(Error::Input("no mels to embed".into()));
        }
        let step = frame_step(&self.cfg, opts.overlap, opts.rate)?;
        let per_clip = mels
            .iter()
            .map(|mel| self.partials(&mel.to_device(&self.device)?, step, opts.min_coverage))
            .collect::<Result<Vec<_>>>()?;
        let counts: Vec<usize> = per_clip
            .iter()
            .map(|p| p.dim(0))
            .collect::<candle_core::Result<_>>()?;
        let all = Tensor::cat(&per_clip, 0)?;
        let total = all.dim(0)?;
        let mut embeds = Vec::new();
        for start in (0..total).step_by(opts.batch_size) {
            let len = opts.batch_size.min(total - start);
            embeds.push(self.forward(&all.narrow(0, start, len)?)?);
        }
        let partial_embeds = Tensor::cat(&embeds, 0)?;
        let mut start = 0;
        let mut means = Vec::with_capacity(counts.len());
        for n in counts {
            means.push(partial_embeds.narrow(0, start, n)?.mean_keepdim(0)?);
            start += n;
        }
        l2_normalize_rows(&Tensor::cat(&means, 0)?)
    }

    /// `embeds_from_mels`: [`VoiceEncoder::inference`], then with `as_spk` the speaker embedding
    /// `(E,)` (`utt_to_spk_embed`: the normalised mean of the clips' embeddings).
    pub fn embeds_from_mels(&self, mels: &[Tensor], opts: &EmbedOptions) -> Result<Tensor> {
        let utterances = self.inference(mels, opts)?;
        if !opts.as_spk {
            return Ok(utterances);
        }
        Ok(l2_normalize_rows(&utterances.mean_keepdim(0)?)?.squeeze(0)?)
    }

    /// `embeds_from_wavs`: each clip checked, trimmed (`opts.trim_top_db`), turned into its mel
    /// and embedded by [`VoiceEncoder::embeds_from_mels`]. Clips must already be at the
    /// config's rate (16 kHz; upstream would resample others with librosa's `kaiser_fast`).
    pub fn embeds_from_wavs<W: AsRef<[f32]>>(
        &self,
        wavs: &[W],
        sample_rate: u32,
        opts: &EmbedOptions,
    ) -> Result<Tensor> {
        opts.validate()?;
        if sample_rate != self.cfg.sample_rate {
            return Err(Error::Input(format!(
                "the voice encoder takes {} Hz audio, got {sample_rate} Hz: resample it first",
                self.cfg.sample_rate
            )));
        }
        if wavs.is_empty() {
            return Err(Error::Input("no clips to embed".into()));
        }
        let mels = wavs
            .iter()
            .enumerate()
            .map(|(i, wav)| {
                let wav = wav.as_ref();
                if wav.is_empty() {
                    return Err(Error::Input(format!("voice encoder clip {i} is empty")));
                }
                if let Some(j) = wav.iter().position(|x| !x.is_finite()) {
                    return Err(Error::Input(format!(
                        "voice encoder clip {i} has a non-finite sample ({}) at {j}",
                        wav[j]
                    )));
                }
                let kept = match opts.trim_top_db.filter(|&db| db != 0.0) {
                    Some(db) => &wav[trim_indices(wav, db)],
                    None => wav,
                };
                if kept.len() < self.mel.min_samples() {
                    return Err(Error::Input(format!(
                        "voice encoder clip {i} keeps {} of its {} samples after trimming \
                         silence; at least {} are needed for one mel frame",
                        kept.len(),
                        wav.len(),
                        self.mel.min_samples()
                    )));
                }
                self.melspectrogram(kept)
            })
            .collect::<Result<Vec<_>>>()?;
        self.embeds_from_mels(&mels, opts)
    }

    /// The speaker embedding `ChatterboxTTS.prepare_conditionals` gives T3 (`T3Cond.speaker_emb`):
    /// `embeds_from_wavs([wav_16k], sample_rate=16000).mean(axis=0, keepdim=True)`, `(1, E)`.
    pub fn speaker_emb(&self, wav_16k: &[f32]) -> Result<Tensor> {
        let embeds =
            self.embeds_from_wavs(&[wav_16k], self.cfg.sample_rate, &EmbedOptions::default())?;
        Ok(embeds.mean_keepdim(0)?)
    }
}

/// Each row divided by its L2 norm (`x / torch.linalg.norm(x, dim=1, keepdim=True)`).
fn l2_normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}
