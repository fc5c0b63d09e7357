//! Mirrors `CausalMaskedDiffWithXvec.inference` (`flow.py`) with `finalize=True`: prompt and
//! target speech tokens through the conformer encoder to a mel prior `mu`, then the CFM solve
//! conditioned on the prompt mel and the speaker x-vector; the prompt's frames are cut off.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use ferrovox_device::stages::stage;
use ferrovox_device::Serial;

use crate::s3gen::cfm::CausalConditionalCfm;
use crate::s3gen::encoder::{length_mask, UpsampleConformerEncoder};
use crate::s3gen::flow_config::FlowConfig;
use crate::{Error, Result};

/// The encoder side of the flow for a (padded) batch of token sequences.
#[derive(Debug, Clone)]
pub struct FlowEncoding {
    /// Encoder output `[b, ratio·t, d]` (upstream's `h`).
    pub hidden: Tensor,
    /// `[b, 1, ratio·t]`, 1 for valid frames (upstream's `h_masks`).
    pub mask: Tensor,
    /// `encoder_proj(hidden)`, the mel prior, time-major `[b, ratio·t, mel bins]`.
    pub mu: Tensor,
}

/// S3Gen's token-to-mel flow.
#[derive(Debug, Clone)]
pub struct Flow {
    input_embedding: Embedding,
    spk_embed_affine_layer: Linear,
    encoder: UpsampleConformerEncoder,
    encoder_proj: Linear,
    decoder: CausalConditionalCfm,
    cfg: FlowConfig,
    /// One thread at a time through the flow (shared by clones).
    serial: Arc<Serial>,
}

impl Flow {
    /// `vb` at `flow` (the keys `flow.input_embedding.weight`, `flow.encoder.*`, …).
    pub fn new(cfg: &FlowConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.encoder.output_size;
        Ok(Self {
            input_embedding: candle_nn::embedding(
                cfg.vocab_size,
                cfg.input_size,
                vb.pp("input_embedding"),
            )?,
            spk_embed_affine_layer: candle_nn::linear(
                cfg.spk_embed_dim,
                cfg.output_size,
                vb.pp("spk_embed_affine_layer"),
            )?,
            encoder: UpsampleConformerEncoder::new(&cfg.encoder, vb.pp("encoder"))?,
            encoder_proj: candle_nn::linear(d, cfg.output_size, vb.pp("encoder_proj"))?,
            decoder: CausalConditionalCfm::new(&cfg.cfm, &cfg.estimator, vb.pp("decoder"))?,
            cfg: cfg.clone(),
            serial: Arc::new(Serial::default()),
        })
    }

    /// The lock [`Self::inference`] and batched flows run under.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// The encoder's and the estimator's large products on bf16-rounded inputs with f32 sums
    /// where the CPU has AVX-512 BF16 and `on`; convolutions, norms and the small projections
    /// stay f32.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.encoder.bf16_products(on)?;
        Ok(self.decoder.bf16_products(on)?)
    }

    pub fn encoder(&self) -> &UpsampleConformerEncoder {
        &self.encoder
    }

    pub fn decoder(&self) -> &CausalConditionalCfm {
        &self.decoder
    }

    fn device(&self) -> &Device {
        self.input_embedding.embeddings().device()
    }

    fn dtype(&self) -> DType {
        self.input_embedding.embeddings().dtype()
    }

    /// Mel frames the flow works on for `n_prompt` + `n_target` tokens: the length of the
    /// noise [`Self::inference`] takes (prompt frames included).
    pub fn mel_frames(&self, n_prompt: usize, n_target: usize) -> usize {
        (n_prompt + n_target) * self.cfg.token_mel_ratio
    }

    /// The speaker conditioning: L2-normalised x-vector `[b, spk_embed_dim]` (or
    /// `[spk_embed_dim]`) through `spk_embed_affine_layer` -> `[b, mel bins]`.
    pub fn speaker_embedding(&self, xvector: &Tensor) -> Result<Tensor> {
        let xvector = match xvector.rank() {
            1 => xvector.unsqueeze(0)?,
            _ => xvector.clone(),
        };
        match xvector.dims() {
            [_, w] if *w == self.cfg.spk_embed_dim => {}
            dims => {
                return Err(Error::Input(format!(
                    "x-vector of shape {dims:?}, expected [batch, {}]",
                    self.cfg.spk_embed_dim
                )))
            }
        }
        let xvector = xvector.to_dtype(self.dtype())?;
        // F.normalize: x / max(‖x‖, 1e-12).
        let norm = xvector.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        Ok(self
            .spk_embed_affine_layer
            .forward(&xvector.broadcast_div(&norm)?)?)
    }

    /// Token embeddings `[b, t, input_size]` with padded positions zeroed. `tokens` `[b, t]`
    /// holds ids of an integer dtype, padding included (it must be in range too).
    pub fn embed_tokens(&self, tokens: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if !matches!(tokens.dtype(), DType::U8 | DType::U32 | DType::I64) {
            return Err(Error::Input(format!(
                "token ids must be integers, got {:?}",
                tokens.dtype()
            )));
        }
        if b == 0 || t == 0 {
            return Err(Error::Input("no speech tokens".into()));
        }
        if lengths.len() != b {
            return Err(Error::Input(format!(
                "{} lengths for a batch of {b}",
                lengths.len()
            )));
        }
        if let Some((i, &len)) = lengths
            .iter()
            .enumerate()
            .find(|(_, &len)| len == 0 || len > t)
        {
            return Err(Error::Input(format!(
                "item {i} has length {len}, expected 1..={t}"
            )));
        }
        let ids = tokens
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
            return Err(Error::Input(format!(
                "speech token {bad} is outside the vocabulary 0..{vocab} (T3's SOS/EOS and \
                 padding must be removed first)"
            )));
        }
        let mask = length_mask(lengths, t, self.device())?
            .to_dtype(self.dtype())?
            .unsqueeze(2)?;
        Ok(self
            .input_embedding
            .forward(&tokens.to_device(self.device())?)?
            .broadcast_mul(&mask)?)
    }

    /// Embeds and encodes a padded batch of token sequences: `tokens` `[b, t]`, `lengths` each
    /// item's valid tokens. Padding changes the valid outputs near the end (the pre-lookahead
    /// conv reads padded rows), as it does upstream.
    pub fn encode(&self, tokens: &Tensor, lengths: &[usize]) -> Result<FlowEncoding> {
        stage("s3gen.encoder", self.device(), || {
            let x = self.embed_tokens(tokens, lengths)?;
            let out = self.encoder.forward(&x, lengths)?;
            let mu = self.encoder_proj.forward(&out.hidden)?;
            Ok(FlowEncoding {
                hidden: out.hidden,
                mask: out.mask,
                mu,
            })
        })
    }

    /// Speech tokens to mel, one utterance: `prompt_tokens` (the reference's S3 tokens, may be
    /// empty), `tokens` (what to say), `prompt_feat` `[1, n_prompt_frames, mel bins]` (the
    /// reference's 24 kHz log-mel, time-major), `xvector` `[1, spk_embed_dim]`, and `noise`
    /// `[1, mel bins, mel_frames]` (standard normal; [`Self::mel_frames`] gives its length,
    /// prompt frames included). Returns `[1, mel bins, mel_frames − n_prompt_frames]`.
    pub fn inference(
        &self,
        prompt_tokens: &[u32],
        tokens: &[u32],
        prompt_feat: &Tensor,
        xvector: &Tensor,
        noise: &Tensor,
    ) -> Result<Tensor> {
        self.serial.run(|| {
            let device = self.device().clone();
            let dtype = self.dtype();
            let bins = self.cfg.output_size;
            if tokens.is_empty() {
                return Err(Error::Input("no speech tokens to synthesize".into()));
            }
            let n_prompt_frames = match prompt_feat.dims() {
                [1, n, w] if *w == bins => *n,
                dims => {
                    return Err(Error::Input(format!(
                        "prompt mel of shape {dims:?}, expected [1, frames, {bins}]"
                    )))
                }
            };
            let frames = self.mel_frames(prompt_tokens.len(), tokens.len());
            if n_prompt_frames >= frames {
                return Err(Error::Input(format!(
                    "prompt mel has {n_prompt_frames} frames but the {} prompt + {} target tokens \
                     give only {frames}",
                    prompt_tokens.len(),
                    tokens.len()
                )));
            }
            if noise.dims() != [1, bins, frames] {
                return Err(Error::Input(format!(
                    "noise of shape {:?}, expected [1, {bins}, {frames}]",
                    noise.dims()
                )));
            }
            let spks = self.speaker_embedding(xvector)?;
            if spks.dim(0)? != 1 {
                return Err(Error::Input(format!(
                    "{} x-vectors for one utterance",
                    spks.dim(0)?
                )));
            }

            let all: Vec<u32> = prompt_tokens.iter().chain(tokens).copied().collect();
            let n = all.len();
            let ids = Tensor::from_vec(all, (1, n), &device)?;
            let enc = self.encode(&ids, &[n])?;
            let mu = enc.mu.transpose(1, 2)?.contiguous()?;

            let prompt_feat = prompt_feat.to_device(&device)?.to_dtype(dtype)?;
            let target_zeros = Tensor::zeros((1, frames - n_prompt_frames, bins), dtype, &device)?;
            let cond = if n_prompt_frames == 0 {
                target_zeros
            } else {
                Tensor::cat(&[prompt_feat, target_zeros], 1)?
            };
            let cond = cond.transpose(1, 2)?.contiguous()?;
            let noise = noise.to_device(&device)?.to_dtype(dtype)?;
            let mel = self.decoder.forward(&noise, &mu, &enc.mask, &spks, &cond)?;
            Ok(mel.narrow(2, n_prompt_frames, frames - n_prompt_frames)?)
        })
    }
}
