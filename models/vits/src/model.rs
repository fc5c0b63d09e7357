//! Mirrors `VitsModel.forward` of transformers' `modeling_vits.py` at inference: text encoder,
//! durations, alignment expansion, prior sampling, reverse flow, HiFi-GAN.

use crate::duration::Durations;
use crate::flow::ResidualCouplingBlock;
use crate::graphs::StageGraphs;
use crate::hifigan::HifiGan;
use crate::noise::NoiseSource;
use crate::text_encoder::{TextEncoder, TextEncoderOutput};
use crate::{Config, Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

/// Inference controls; `Default` takes the config's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthesisParams {
    /// Scale of the prior noise (Piper: `noise_scale`).
    pub noise_scale: f64,
    /// Scale of the duration noise (Piper: `noise_w`).
    pub noise_scale_duration: f64,
    /// Frames per predicted frame: `1 / speaking_rate` (Piper: `length_scale`).
    pub length_scale: f64,
}

impl SynthesisParams {
    /// The config's defaults.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            noise_scale: cfg.noise_scale,
            noise_scale_duration: cfg.noise_scale_duration,
            length_scale: 1.0 / cfg.speaking_rate,
        }
    }
}

/// A padded batch of token sequences.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[b, t]` u32 ids.
    pub input_ids: Tensor,
    /// `[b, t]` f32: 1 for tokens, 0 for padding.
    pub mask: Tensor,
    /// Each item's token count.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Pads `sequences` with `pad_id` into one batch on `device`.
    pub fn new(sequences: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::Input("empty batch".into()));
        }
        if let Some(i) = sequences.iter().position(|s| s.is_empty()) {
            return Err(Error::Input(format!("item {i} has no tokens")));
        }
        let t = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let b = sequences.len();
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, s) in sequences.iter().enumerate() {
            ids[i * t..i * t + s.len()].copy_from_slice(s);
            mask[i * t..i * t + s.len()].fill(1.0);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            lengths: sequences.iter().map(Vec::len).collect(),
        })
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct VitsOutput {
    /// `[b, samples]`, padded to the longest item.
    pub waveform: Tensor,
    /// Each item's own sample count.
    pub sample_lengths: Vec<usize>,
    /// Each item's frame count.
    pub frame_lengths: Vec<usize>,
    /// `[b, flow, frames]`: the decoder's input.
    pub spectrogram: Tensor,
}

impl VitsOutput {
    /// Item `i`'s audio, trimmed to its own length.
    pub fn audio(&self, i: usize) -> Result<Vec<f32>> {
        Ok(self
            .waveform
            .get(i)?
            .narrow(0, 0, self.sample_lengths[i])?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }
}

/// Adds each stage's wall time to `timings` when there are any, synchronizing the device
/// first so GPU work lands in the stage that queued it.
struct StageClock<'a> {
    timings: Option<&'a mut StageTimings>,
    device: &'a Device,
    since: std::time::Instant,
}

impl<'a> StageClock<'a> {
    fn new(timings: Option<&'a mut StageTimings>, device: &'a Device) -> Self {
        Self {
            timings,
            device,
            since: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, slot: fn(&mut StageTimings) -> &mut std::time::Duration) -> Result<()> {
        if let Some(t) = self.timings.as_deref_mut() {
            self.device.synchronize()?;
            *slot(t) += self.since.elapsed();
            self.since = std::time::Instant::now();
        }
        Ok(())
    }
}

/// The decoder's input for a batch, from [`VitsModel::latents`], or for frames of one item,
/// from [`VitsModel::latents_window`].
#[derive(Debug, Clone)]
pub struct Latents {
    /// `[b, flow, frames]`, zero past each item's frames; frames from `offset` on.
    pub spectrogram: Tensor,
    /// `[b, speaker_dim, 1]` for multi-speaker models.
    pub speaker: Option<Tensor>,
    /// Frames per token and per item.
    pub alignment: Alignment,
    /// The utterance frame the spectrogram's first column holds: 0 unless windowed.
    pub offset: usize,
}

/// The flow's input for a batch, from [`VitsModel::prior`]: everything before the flow.
#[derive(Debug, Clone)]
pub struct Prior {
    /// Prior samples `[b, flow, frames]`.
    pub sample: Tensor,
    /// `[b, 1, frames]`, 1 on each item's frames.
    pub frame_mask: Tensor,
    /// `[b, speaker_dim, 1]` for multi-speaker models.
    pub speaker: Option<Tensor>,
    /// Frames per token and per item.
    pub alignment: Alignment,
}

/// The frames each token spans, as the model rounds them.
#[derive(Debug, Clone)]
pub struct Alignment {
    /// Per item, per token: frames.
    pub durations: Vec<Vec<u32>>,
    /// Per item: total frames (at least 1).
    pub frames: Vec<usize>,
}

/// Wall time per stage of one forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Text encoder.
    pub text_encoder: std::time::Duration,
    /// Duration predictor, alignment and prior sampling.
    pub duration: std::time::Duration,
    /// Reverse flow.
    pub flow: std::time::Duration,
    /// HiFi-GAN decoder.
    pub decoder: std::time::Duration,
}

/// A VITS model for inference.
#[derive(Debug, Clone)]
pub struct VitsModel {
    cfg: Config,
    text_encoder: TextEncoder,
    durations: Durations,
    flow: ResidualCouplingBlock,
    decoder: HifiGan,
    embed_speaker: Option<Embedding>,
    /// Each stage captured per input shape on CUDA.
    graphs: std::sync::Arc<StageGraphs>,
    device: Device,
    dtype: DType,
}

impl VitsModel {
    /// Builds the model from a `VarBuilder` with transformers' state-dict names.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let checkpoint = |e: candle_core::Error| Error::Checkpoint {
            path: "weights".into(),
            reason: e.to_string(),
        };
        let embed_speaker = if cfg.num_speakers > 1 && cfg.speaker_embedding_size > 0 {
            Some(
                candle_nn::embedding(
                    cfg.num_speakers,
                    cfg.speaker_embedding_size,
                    vb.pp("embed_speaker"),
                )
                .map_err(checkpoint)?,
            )
        } else {
            None
        };
        Ok(Self {
            text_encoder: TextEncoder::new(cfg, vb.pp("text_encoder")).map_err(checkpoint)?,
            durations: Durations::new(cfg, vb.pp("duration_predictor")).map_err(checkpoint)?,
            flow: ResidualCouplingBlock::new(cfg, vb.pp("flow")).map_err(checkpoint)?,
            decoder: HifiGan::new(cfg, vb.pp("decoder")).map_err(checkpoint)?,
            embed_speaker,
            graphs: std::sync::Arc::new(StageGraphs::new()),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            cfg: cfg.clone(),
        })
    }

    /// The stages' CUDA graphs: each input shape seen twice is captured and then replayed.
    pub fn graphs(&self) -> &StageGraphs {
        &self.graphs
    }

    /// The decoder on `spectrogram` `[b, flow, frames]`, through its CUDA graph where one is
    /// captured.
    fn decode(&self, spectrogram: &Tensor, speaker: Option<&Tensor>) -> Result<Tensor> {
        let mut inputs = vec![spectrogram];
        inputs.extend(speaker);
        let (audio, _) = self
            .graphs
            .decoder
            .run(&inputs, |i| self.decoder.forward(&i[0], i.get(1)))?;
        Ok(audio)
    }

    /// The reverse flow on the prior `sample` `[b, flow, frames]`, masked to each item's
    /// frames, through its CUDA graph where one is captured.
    fn reverse_flow(
        &self,
        sample: &Tensor,
        frame_mask: &Tensor,
        speaker: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut inputs = vec![sample, frame_mask];
        inputs.extend(speaker);
        let (latents, _) = self.graphs.flow.run(&inputs, |i| {
            self.flow
                .reverse(&i[0], &i[1], i.get(2))?
                .broadcast_mul(&i[1])
        })?;
        Ok(latents)
    }

    /// The model's config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The HiFi-GAN decoder.
    pub fn decoder(&self) -> &HifiGan {
        &self.decoder
    }

    /// The prior flow.
    pub fn flow(&self) -> &ResidualCouplingBlock {
        &self.flow
    }

    /// Checks token ids and speaker ids before any compute.
    pub fn validate(&self, batch: &TokenBatch, speakers: Option<&[u32]>) -> Result<()> {
        let ids = batch.input_ids.flatten_all()?.to_vec1::<u32>()?;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        if let Some(speakers) = speakers {
            if self.embed_speaker.is_none() {
                return Err(Error::Input(
                    "this model has a single speaker; no speaker id is accepted".into(),
                ));
            }
            if speakers.len() != 1 && speakers.len() != batch.lengths.len() {
                return Err(Error::Input(format!(
                    "{} speaker ids for a batch of {}",
                    speakers.len(),
                    batch.lengths.len()
                )));
            }
            if let Some(bad) = speakers
                .iter()
                .find(|&&s| s as usize >= self.cfg.num_speakers)
            {
                return Err(Error::Input(format!(
                    "speaker id {bad} is out of range 0..{}",
                    self.cfg.num_speakers
                )));
            }
        }
        Ok(())
    }

    /// `[b, speaker_embedding_size, 1]`, or `None` for single-speaker models.
    pub fn speaker_embedding(
        &self,
        speakers: Option<&[u32]>,
        batch: usize,
    ) -> Result<Option<Tensor>> {
        let Some(embed) = &self.embed_speaker else {
            return Ok(None);
        };
        let ids: Vec<u32> = match speakers {
            Some([one]) => vec![*one; batch],
            Some(many) => many.to_vec(),
            None => vec![0; batch],
        };
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        Ok(Some(embed.forward(&ids)?.unsqueeze(2)?))
    }

    /// Stage 1: the text encoder.
    pub fn encode_text(&self, batch: &TokenBatch) -> Result<TextEncoderOutput> {
        // Known on the host: reading the mask back would stall a GPU pipeline.
        let longest = batch.lengths.iter().copied().max().unwrap_or(0);
        let padded = batch.lengths.iter().any(|&l| l < longest);
        let (mut out, _) = self.graphs.text_encoder.run_many(
            usize::from(padded),
            &[&batch.input_ids, &batch.mask],
            |i| {
                let enc = self
                    .text_encoder
                    .forward(&i[0], &i[1].to_dtype(self.dtype)?, padded)?;
                Ok(vec![enc.hidden, enc.prior_means, enc.prior_log_variances])
            },
        )?;
        let (prior_log_variances, prior_means, hidden) =
            (out.remove(2), out.remove(1), out.remove(0));
        Ok(TextEncoderOutput {
            hidden,
            prior_means,
            prior_log_variances,
        })
    }

    /// Stage 2: log-durations `[b, 1, t]` from encoder states `[b, hidden, t]`.
    pub fn log_durations(
        &self,
        hidden_bct: &Tensor,
        mask_b1t: &Tensor,
        speaker: Option<&Tensor>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let mut inputs = vec![hidden_bct, mask_b1t];
        inputs.extend(speaker);
        let with_speaker = speaker.is_some();
        let (mut out, _) = match &self.durations {
            Durations::Stochastic(sdp) => {
                let (b, _, t) = hidden_bct.dims3()?;
                // Scaled outside the graph, which would otherwise hold the scale as a constant:
                // `noise · s · 1` is `noise · s` exactly.
                let draw = (noise
                    .standard_normal(&[b, 2, t], &self.device)?
                    .to_dtype(self.dtype)?
                    * params.noise_scale_duration)?;
                inputs.push(&draw);
                self.graphs.durations.run_many(0, &inputs, |i| {
                    let speaker = with_speaker.then(|| &i[2]);
                    let draw = &i[i.len() - 1];
                    Ok(vec![sdp.forward(&i[0], &i[1], speaker, draw, 1.0)?])
                })?
            }
            Durations::Deterministic(dp) => self.graphs.durations.run_many(0, &inputs, |i| {
                Ok(vec![dp.forward(&i[0], &i[1], i.get(2))?])
            })?,
        };
        Ok(out.remove(0))
    }

    /// Stage 3: frames per token, `ceil(exp(log_duration) · length_scale)`.
    pub fn align(
        &self,
        log_durations: &Tensor,
        mask_b1t: &Tensor,
        length_scale: f64,
    ) -> Result<Alignment> {
        let scaled =
            (log_durations.to_dtype(DType::F32)?.exp()? * mask_b1t.to_dtype(DType::F32)?)?;
        let scaled = (scaled * length_scale)?
            .ceil()?
            .squeeze(1)?
            .to_vec2::<f32>()?;
        let durations: Vec<Vec<u32>> = scaled
            .iter()
            .map(|row| row.iter().map(|&d| d.max(0.0) as u32).collect())
            .collect();
        let frames = durations
            .iter()
            .map(|d| (d.iter().map(|&x| x as usize).sum::<usize>()).max(1))
            .collect();
        Ok(Alignment { durations, frames })
    }

    /// Repeats each token's row of `stats` `[b, t, c]` by its duration: `[b, c, frames]`.
    pub fn expand(&self, stats: &Tensor, alignment: &Alignment) -> Result<Tensor> {
        let (b, t, c) = stats.dims3()?;
        let max_frames = alignment.frames.iter().copied().max().unwrap_or(1);
        // Row t of each item is zeros: frames past an item's end select it.
        let padded = stats.pad_with_zeros(1, 0, 1)?.reshape((b * (t + 1), c))?;
        let mut index = Vec::with_capacity(b * max_frames);
        for (i, durations) in alignment.durations.iter().enumerate() {
            let base = (i * (t + 1)) as u32;
            let start = index.len();
            for (token, &d) in durations.iter().enumerate() {
                index.extend(std::iter::repeat_n(base + token as u32, d as usize));
            }
            index.truncate(start + max_frames);
            index.resize(start + max_frames, base + t as u32);
        }
        let index = Tensor::from_vec(index, b * max_frames, &self.device)?;
        Ok(padded
            .index_select(&index, 0)?
            .reshape((b, max_frames, c))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `[b, 1, frames]` mask of each item's frames.
    pub fn frame_mask(&self, alignment: &Alignment) -> Result<Tensor> {
        let max_frames = alignment.frames.iter().copied().max().unwrap_or(1);
        let mut mask = Vec::with_capacity(alignment.frames.len() * max_frames);
        for &f in &alignment.frames {
            mask.extend((0..max_frames).map(|j| if j < f { 1f32 } else { 0f32 }));
        }
        Ok(
            Tensor::from_vec(mask, (alignment.frames.len(), 1, max_frames), &self.device)?
                .to_dtype(self.dtype)?,
        )
    }

    /// The whole model: token ids to audio.
    pub fn forward(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<VitsOutput> {
        self.run(batch, speakers, params, noise, None)
    }

    /// [`VitsModel::forward`], also timing each stage (the device is synchronized between
    /// stages, so GPU work lands in the stage that queued it).
    pub fn forward_timed(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<(VitsOutput, StageTimings)> {
        let mut timings = StageTimings::default();
        let out = self.run(batch, speakers, params, noise, Some(&mut timings))?;
        Ok((out, timings))
    }

    /// Everything before the decoder: the decoder's input per item, as [`VitsModel::forward`]
    /// computes it (same noise draws), so it can be decoded in pieces with
    /// [`VitsModel::decode_frames`].
    pub fn latents(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents> {
        self.latents_timed(
            batch,
            speakers,
            params,
            noise,
            &mut StageClock::new(None, &self.device),
        )
    }

    fn latents_timed(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
        clock: &mut StageClock<'_>,
    ) -> Result<Latents> {
        let prior = self.prior_timed(batch, speakers, params, noise, clock)?;
        let stage = tracing::info_span!("vits.flow").entered();
        let spectrogram =
            self.reverse_flow(&prior.sample, &prior.frame_mask, prior.speaker.as_ref())?;
        clock.lap(|t| &mut t.flow)?;
        drop(stage);
        Ok(Latents {
            spectrogram,
            speaker: prior.speaker,
            alignment: prior.alignment,
            offset: 0,
        })
    }

    /// Text encoder, durations and the prior sample: the stages before the flow, which see
    /// the whole utterance. The flow can then run on windows of frames with
    /// [`VitsModel::latents_window`].
    pub fn prior(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<Prior> {
        self.prior_timed(
            batch,
            speakers,
            params,
            noise,
            &mut StageClock::new(None, &self.device),
        )
    }

    fn prior_timed(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
        clock: &mut StageClock<'_>,
    ) -> Result<Prior> {
        let mut lap = |slot| clock.lap(slot);
        self.validate(batch, speakers)?;
        let b = batch.lengths.len();
        let stage = tracing::info_span!("vits.text_encoder").entered();
        let speaker = self.speaker_embedding(speakers, b)?;
        let enc = self.encode_text(batch)?;
        lap(|t| &mut t.text_encoder)?;
        drop(stage);
        let _stage = tracing::info_span!("vits.duration").entered();
        let mask_b1t = batch.mask.to_dtype(self.dtype)?.unsqueeze(1)?;
        let hidden_bct = enc.hidden.transpose(1, 2)?.contiguous()?;
        let log_durations =
            self.log_durations(&hidden_bct, &mask_b1t, speaker.as_ref(), params, noise)?;
        let alignment = self.align(&log_durations, &mask_b1t, params.length_scale)?;
        let means = self.expand(&enc.prior_means, &alignment)?;
        let log_variances = self.expand(&enc.prior_log_variances, &alignment)?;
        let draw = noise
            .standard_normal(means.dims(), &self.device)?
            .to_dtype(self.dtype)?;
        let sample = (means + ((draw * log_variances.exp()?)? * params.noise_scale)?)?;
        let frame_mask = self.frame_mask(&alignment)?;
        lap(|t| &mut t.duration)?;
        Ok(Prior {
            sample,
            frame_mask,
            speaker,
            alignment,
        })
    }

    /// How many frames on each side of a window the flow must see for the window to come
    /// out as in a whole pass: each coupling layer's WaveNet reaches `(k − 1)/2 · dilation`
    /// frames per layer.
    pub fn flow_context_frames(&self) -> usize {
        let c = &self.cfg;
        let per_coupling: usize = (0..c.prior_encoder_num_wavenet_layers)
            .map(|i| {
                (c.wavenet_kernel_size.saturating_sub(1) / 2)
                    * c.wavenet_dilation_rate.pow(i as u32)
            })
            .sum();
        per_coupling * c.prior_encoder_num_flows
    }

    /// The flow over frames `range` of item `item` of `prior` alone, as a one-item batch, seeing
    /// [`VitsModel::flow_context_frames`] on each side: the result matches those frames of
    /// [`VitsModel::latents`], for a fraction of the flow's cost when the window is short.
    pub fn latents_window(
        &self,
        prior: &Prior,
        item: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Latents> {
        let frames = item_frames(&prior.alignment, item, &range)?;
        let context = self.flow_context_frames();
        let (from, to) = (
            range.start.saturating_sub(context),
            (range.end + context).min(frames),
        );
        let window = |t: &Tensor| {
            t.get(item)?
                .narrow(1, from, to - from)?
                .unsqueeze(0)?
                .contiguous()
        };
        let mask = window(&prior.frame_mask)?;
        let speaker = match &prior.speaker {
            Some(s) => Some(s.get(item)?.unsqueeze(0)?),
            None => None,
        };
        let _stage = tracing::info_span!("vits.flow", frames = to - from).entered();
        let latents = self
            .flow
            .reverse(&window(&prior.sample)?, &mask, speaker.as_ref())?
            .broadcast_mul(&mask)?
            .narrow(2, range.start - from, range.end - range.start)?;
        let alignment = Alignment {
            durations: vec![prior.alignment.durations[item].clone()],
            frames: vec![frames],
        };
        Ok(Latents {
            spectrogram: latents,
            speaker,
            alignment,
            offset: range.start,
        })
    }

    /// How many frames on each side of a piece the decoder must see for the piece to come out
    /// as in a whole decode: its receptive field, rounded up, plus one frame of margin.
    pub fn decoder_context_frames(&self) -> usize {
        let c = &self.cfg;
        let half_reach = |k: usize, d: usize| (k.saturating_sub(1) * d) as f64 / 2.0;
        // conv_pre and conv_post have kernel 7.
        let mut frames = half_reach(7, 1);
        let mut rate = 1usize;
        for (&up, &k) in c.upsample_rates.iter().zip(&c.upsample_kernel_sizes) {
            rate *= up;
            frames += (k as f64 / 2.0 + 1.0) / rate as f64 + 1.0;
            let widest = c
                .resblock_kernel_sizes
                .iter()
                .zip(&c.resblock_dilation_sizes)
                .map(|(&k, dilations)| {
                    dilations
                        .iter()
                        .map(|&d| half_reach(k, d) + half_reach(k, 1))
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
            frames += widest / rate as f64;
        }
        frames += half_reach(7, 1) / rate.max(1) as f64;
        frames.ceil() as usize + 1
    }

    /// Decodes frames `range` of item `item` of `latents` to its samples, seeing
    /// [`VitsModel::decoder_context_frames`] on each side so the piece matches a whole decode;
    /// consecutive ranges join without a seam.
    pub fn decode_frames(
        &self,
        latents: &Latents,
        item: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let frames = item_frames(&latents.alignment, item, &range)?;
        let context = self.decoder_context_frames();
        let (from, to) = (
            range.start.saturating_sub(context),
            (range.end + context).min(frames),
        );
        let held = latents.offset..latents.offset + latents.spectrogram.dim(2)?;
        if from < held.start || to > held.end.min(frames) {
            return Err(Error::Input(format!(
                "frames {range:?} need frames {from}..{to} of context, the latents hold {held:?}"
            )));
        }
        let window = latents
            .spectrogram
            .get(item)?
            .narrow(1, from - held.start, to - from)?
            .unsqueeze(0)?;
        let speaker = match &latents.speaker {
            Some(s) => Some(s.get(item)?.unsqueeze(0)?),
            None => None,
        };
        let hop = self.cfg.hop_length();
        let _stage =
            tracing::info_span!("vits.decoder", frames = range.end - range.start).entered();
        Ok(self
            .decode(&window, speaker.as_ref())?
            .flatten_all()?
            .narrow(
                0,
                (range.start - from) * hop,
                (range.end - range.start) * hop,
            )?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }

    fn run(
        &self,
        batch: &TokenBatch,
        speakers: Option<&[u32]>,
        params: &SynthesisParams,
        noise: &mut dyn NoiseSource,
        timings: Option<&mut StageTimings>,
    ) -> Result<VitsOutput> {
        let _forward = tracing::info_span!("vits.forward", batch = batch.lengths.len()).entered();
        let mut clock = StageClock::new(timings, &self.device);
        let Latents {
            spectrogram,
            speaker,
            alignment,
            ..
        } = self.latents_timed(batch, speakers, params, noise, &mut clock)?;
        let mut lap = |slot| clock.lap(slot);
        let stage = tracing::info_span!("vits.decoder").entered();
        let waveform = self.decode(&spectrogram, speaker.as_ref())?.squeeze(1)?;
        lap(|t| &mut t.decoder)?;
        drop(stage);
        let hop = self.cfg.hop_length();
        Ok(VitsOutput {
            waveform,
            sample_lengths: alignment.frames.iter().map(|f| f * hop).collect(),
            frame_lengths: alignment.frames.clone(),
            spectrogram,
        })
    }
}

/// Item `item`'s frames, checking that `range` is a non-empty span inside them.
fn item_frames(
    alignment: &Alignment,
    item: usize,
    range: &std::ops::Range<usize>,
) -> Result<usize> {
    let frames = *alignment
        .frames
        .get(item)
        .ok_or_else(|| Error::Input(format!("no item {item} in the batch")))?;
    if range.start >= range.end || range.end > frames {
        return Err(Error::Input(format!(
            "frames {range:?} outside the item's {frames}"
        )));
    }
    Ok(frames)
}
