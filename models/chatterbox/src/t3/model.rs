//! Mirrors `T3` (`t3/t3.py`): the conditioning prefix, text and speech embeddings with their
//! learned positions, the Llama backbone and the speech head, and `T3.inference`'s generation
//! loop (classifier-free guidance as a batch of two, the doubled start token, the processors
//! of [`super::sampling`]).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use ferrovox_device::device_work;
use ferrovox_layers::{RowFormat, StepLinear};

use super::alignment::AlignmentDetector;
use super::cond_enc::{T3Cond, T3CondEnc};
use super::config::T3Config;
use super::decode::{DecodePath, FixedDecoder, SlotGuard};
use super::llama::{KvCache, Llama};
use super::sampling::{ProcessorTables, Sampler, SamplingNoise, SamplingOptions};
use crate::{Error, Result};

/// Tensors of a released `t3_cfg.safetensors` that inference does not read.
const UNUSED_KEYS: [&str; 2] = ["text_head.weight", "tfmr.embed_tokens.weight"];

/// The text-to-speech-token model.
#[derive(Debug, Clone)]
pub struct T3 {
    cfg: T3Config,
    cond_enc: T3CondEnc,
    text_emb: Embedding,
    speech_emb: Embedding,
    text_pos_emb: Embedding,
    speech_pos_emb: Embedding,
    speech_head: StepLinear,
    tfmr: Llama,
    decode: DecodePath,
    fixed: Arc<FixedDecoder>,
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Every sampled token before the stop token (the stop token itself is not included).
    pub tokens: Vec<u32>,
    /// Whether the stop token came before `max_new_tokens`.
    pub stopped: bool,
}

/// What a generation's token callback tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The consumer is gone: stop without a stop token.
    Cancel,
}

impl T3 {
    /// Builds from `vb` at the checkpoint root (upstream's flat `T3().state_dict()` keys).
    pub fn new(cfg: &T3Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dim = cfg.n_channels();
        let positions = cfg.cond_len_max() + cfg.text_positions() + cfg.speech_positions();
        Ok(Self {
            cond_enc: T3CondEnc::new(cfg, vb.pp("cond_enc"))?,
            text_emb: candle_nn::embedding(cfg.text_tokens_dict_size, dim, vb.pp("text_emb"))?,
            speech_emb: candle_nn::embedding(
                cfg.speech_tokens_dict_size,
                dim,
                vb.pp("speech_emb"),
            )?,
            text_pos_emb: candle_nn::embedding(
                cfg.text_positions(),
                dim,
                vb.pp("text_pos_emb.emb"),
            )?,
            speech_pos_emb: candle_nn::embedding(
                cfg.speech_positions(),
                dim,
                vb.pp("speech_pos_emb.emb"),
            )?,
            speech_head: StepLinear::new(candle_nn::linear_no_bias(
                dim,
                cfg.speech_tokens_dict_size,
                vb.pp("speech_head"),
            )?),
            tfmr: Llama::new(&cfg.llama, positions, vb.pp("tfmr"))?,
            cfg: cfg.clone(),
            decode: DecodePath::Auto,
            fixed: FixedDecoder::new(),
        })
    }

    /// The same model decoding on `path` (the default, [`DecodePath::Auto`], is fixed shapes
    /// through CUDA graphs on CUDA and dynamic elsewhere).
    pub fn with_decode_path(mut self, path: DecodePath) -> Self {
        self.decode = path;
        self
    }

    /// The fixed path's graphs, for benches and logs.
    pub fn decode_graphs(&self) -> &ferrovox_device::GraphCache {
        self.fixed.graphs()
    }

    /// The longest context (conditioning, text and speech positions) T3 attends.
    pub fn max_positions(&self) -> usize {
        self.cfg.cond_len_max() + self.cfg.text_positions() + self.cfg.speech_positions()
    }

    /// Cache positions a generation of `text_tokens` text tokens (start and stop included) and
    /// up to `max_new_tokens` new ones may fill: the longest conditioning, the text, the two
    /// start tokens and the new tokens.
    pub fn positions_for(&self, text_tokens: usize, max_new_tokens: usize) -> usize {
        self.cfg.cond_len_max() + text_tokens + 2 + max_new_tokens
    }

    /// The dtype of the weights (and of the caches it decodes in).
    pub fn dtype(&self) -> DType {
        self.speech_head.dense().weight().dtype()
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        self.speech_head.dense().weight().device()
    }

    pub(crate) fn backbone(&self) -> &Llama {
        &self.tfmr
    }

    pub(crate) fn speech_head(&self) -> &StepLinear {
        &self.speech_head
    }

    /// Decode steps on the CPU read the backbone's and the speech head's weights as `format`:
    /// bf16 or int8 halve or nearly quarter the bytes a step reads, at the cost of rounding the
    /// weights (the prompt's prefill keeps f32). Does nothing off the CPU.
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        self.tfmr.pack_steps(format)?;
        self.speech_head.pack_steps(format)?;
        Ok(())
    }

    /// The backbone's prefill products on bf16-rounded inputs with f32 sums where the CPU has
    /// AVX-512 BF16 and `on` ([`Llama::bf16_products`]); decode steps keep
    /// [`Self::pack_steps`]'s format.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        Ok(self.tfmr.bf16_products(on)?)
    }

    /// The format decode steps read the weights in.
    pub fn step_format(&self) -> RowFormat {
        self.speech_head.step_format()
    }

    /// Loads a `t3_cfg.safetensors` onto `device` in `dtype`. A missing, misshapen or
    /// unexpected tensor (another model's file) is an error naming the file and the key.
    pub fn load(path: &Path, cfg: &T3Config, dtype: DType, device: &Device) -> Result<Self> {
        crate::checkpoint::load_checked(
            path,
            &Self::expected_keys(cfg),
            |k| UNUSED_KEYS.contains(&k),
            "a T3 checkpoint",
            dtype,
            device,
            |vb| Self::new(cfg, vb),
        )
    }

    /// Every tensor name [`T3::new`] reads for `cfg`.
    pub fn expected_keys(cfg: &T3Config) -> Vec<String> {
        let mut keys: Vec<String> = [
            "cond_enc.spkr_enc.weight",
            "cond_enc.spkr_enc.bias",
            "text_emb.weight",
            "speech_emb.weight",
            "text_pos_emb.emb.weight",
            "speech_pos_emb.emb.weight",
            "speech_head.weight",
            "tfmr.norm.weight",
        ]
        .map(String::from)
        .to_vec();
        if cfg.emotion_adv {
            keys.push("cond_enc.emotion_adv_fc.weight".into());
        }
        if cfg.use_perceiver_resampler {
            keys.push("cond_enc.perceiver.pre_attention_query".into());
            for l in ["norm", "to_q", "to_k", "to_v", "proj_out"] {
                for p in ["weight", "bias"] {
                    keys.push(format!("cond_enc.perceiver.attn.{l}.{p}"));
                }
            }
        }
        for i in 0..cfg.llama.num_hidden_layers {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
            ]
            .into_iter()
            .chain(["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])
            .chain(["input_layernorm", "post_attention_layernorm"])
            {
                keys.push(format!("tfmr.layers.{i}.{m}.weight"));
            }
        }
        keys
    }

    pub fn config(&self) -> &T3Config {
        &self.cfg
    }

    /// Learned positions `0..n` of `table`, `[1, n, dim]`.
    fn positions(table: &Embedding, start: usize, n: usize, device: &Device) -> Result<Tensor> {
        let ids = Tensor::arange(start as u32, (start + n) as u32, device)?;
        Ok(table.forward(&ids)?.unsqueeze(0)?)
    }

    /// The conditioning prefix `[1, len_cond, dim]` (`prepare_conditioning`).
    pub fn prepare_conditioning(&self, cond: &T3Cond) -> Result<Tensor> {
        let prompt = match &cond.cond_prompt_speech_tokens {
            Some(tokens) => {
                let n = tokens.dim(1)?;
                if n > self.cfg.speech_positions() {
                    return Err(Error::Input(format!(
                        "{n} prompt speech tokens exceed T3's {} speech positions",
                        self.cfg.speech_positions()
                    )));
                }
                let tokens = tokens.to_dtype(DType::U32)?;
                let emb = self.speech_emb.forward(&tokens)?;
                Some(emb.broadcast_add(&Self::positions(
                    &self.speech_pos_emb,
                    0,
                    n,
                    emb.device(),
                )?)?)
            }
            None => None,
        };
        Ok(self
            .cond_enc
            .forward(&cond.speaker_emb, prompt.as_ref(), cond.emotion_adv)?)
    }

    /// `speech_emb(token) + speech_pos_emb(position)` for `n` generations' tokens and speech
    /// positions (`[n]` u32 on the device), each repeated for its `rows` rows (2 with
    /// guidance): `[n · rows, 1, dim]`, a generation's rows together.
    pub(crate) fn step_embed(
        &self,
        token: &Tensor,
        position: &Tensor,
        rows: usize,
    ) -> candle_core::Result<Tensor> {
        let n = token.dim(0)?;
        let emb = self.speech_emb.forward(&token.reshape((n, 1))?)?;
        let pos = self.speech_pos_emb.forward(&position.reshape((n, 1))?)?;
        let e = (emb + pos)?;
        if rows == 1 {
            Ok(e)
        } else {
            let dim = e.dim(2)?;
            e.broadcast_as((n, rows, dim))?.reshape((n * rows, 1, dim))
        }
    }

    /// `speech_emb(token) + speech_pos_emb(position)` for `token` `[1]`, as `[rows, 1, dim]`.
    pub fn speech_step_embed(
        &self,
        token: &Tensor,
        position: usize,
        rows: usize,
    ) -> Result<Tensor> {
        let position = Tensor::new(&[position as u32], token.device())?;
        Ok(self.step_embed(token, &position, rows)?)
    }

    /// The prefill embeddings `[rows, len_cond + text + 2, dim]` (`prepare_input_embeds`, then
    /// the start token once more as `inference` appends it): with `cfg`, a second row whose
    /// text embeddings are zeroed before their positions are added.
    pub fn prefill_embeds(
        &self,
        cond_emb: &Tensor,
        text_tokens: &[u32],
        cfg: bool,
    ) -> Result<Tensor> {
        self.check_text(text_tokens)?;
        let device = cond_emb.device();
        let ids = Tensor::new(text_tokens, device)?.unsqueeze(0)?;
        let text = self.text_emb.forward(&ids)?;
        let text_pos = Self::positions(&self.text_pos_emb, 0, text_tokens.len(), device)?;
        let start = Tensor::new(&[self.cfg.start_speech_token], device)?;
        let bos = self.speech_step_embed(&start, 0, 1)?;
        let row = |text: &Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(
                &[cond_emb, &(text + &text_pos)?, &bos, &bos],
                1,
            )?)
        };
        let cond_row = row(&text)?;
        if !cfg {
            return Ok(cond_row);
        }
        let uncond_row = row(&text.zeros_like()?)?;
        Ok(Tensor::cat(&[cond_row, uncond_row], 0)?)
    }

    fn check_text(&self, text_tokens: &[u32]) -> Result<()> {
        let limit = self.cfg.text_positions();
        if text_tokens.is_empty() || text_tokens.len() > limit {
            return Err(Error::Input(format!(
                "{} text tokens; T3 takes 1 to {limit} (start and stop included)",
                text_tokens.len()
            )));
        }
        if let Some(&t) = text_tokens
            .iter()
            .find(|&&t| t as usize >= self.cfg.text_tokens_dict_size)
        {
            return Err(Error::Input(format!(
                "text token {t} is outside T3's vocabulary of {}",
                self.cfg.text_tokens_dict_size
            )));
        }
        Ok(())
    }

    /// Speech-head logits `[b, t, speech vocab]` of `embeds` `[b, t, dim]` after what `cache`
    /// holds; the new positions join the cache.
    pub fn forward(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.tfmr.forward(embeds, cache)?;
        Ok(self.speech_head.forward(&hidden)?)
    }

    /// [`T3::forward`], with the stop detector's attention: the mean over
    /// [`T3Config::alignment_heads`] of the conditional row's attention, from query row
    /// `first_row` on, one `Vec` per query position.
    pub fn forward_aligned(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        first_row: usize,
    ) -> Result<(Tensor, Vec<Vec<f32>>)> {
        let (hidden, maps) =
            self.tfmr
                .forward_probed(embeds, cache, &self.cfg.alignment_heads, 0)?;
        let mean = Tensor::stack(&maps, 0)?.to_dtype(DType::F32)?.mean(0)?;
        let rows = mean.dim(0)?;
        let attention = mean
            .narrow(0, first_row.min(rows), rows - first_row.min(rows))?
            .to_vec2::<f32>()?;
        Ok((self.speech_head.forward(&hidden)?, attention))
    }

    /// The dynamic path's forward of `embeds` and the draw from its last position: with a stop
    /// detector, its attention read and the guided logits adjusted (`previous` is the token
    /// before this draw), else the sampler alone.
    #[allow(clippy::too_many_arguments)]
    fn forward_draw(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        detector: Option<&mut AlignmentDetector>,
        previous: u32,
        step: usize,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Tensor> {
        let last = |logits: &Tensor| logits.i((.., logits.dim(1)? - 1, ..));
        Ok(match detector {
            None => sampler.sample(&last(&self.forward(embeds, cache)?)?, step, noise)?,
            Some(d) => {
                let (logits, attention) = self.forward_aligned(embeds, cache, d.first_row())?;
                sampler.sample_adjusted(&last(&logits)?, step, noise, &mut |l| {
                    d.step(&attention, previous, l);
                })?
            }
        })
    }

    /// Speech-head logits `[b, 1, vocab]` of one fixed-shape step (see [`Llama::step_at`]),
    /// for parity checks of the fixed path; the caller advances the cache.
    pub fn backbone_step_at(
        &self,
        embed: &Tensor,
        cache: &KvCache,
        at: &super::llama::StepAt,
    ) -> Result<Tensor> {
        let hidden = self.tfmr.step_at(embed, cache, at)?;
        Ok(self.speech_head.forward(&hidden)?)
    }

    /// Final-normed hidden states, for parity checks of the backbone alone.
    pub fn hidden_states(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.tfmr.forward(embeds, cache)?)
    }

    /// An empty cache for `rows` rows of `capacity` positions.
    pub fn cache(
        &self,
        rows: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        Ok(self.tfmr.cache(rows, capacity, dtype, device)?)
    }

    /// Generates speech tokens for `text_tokens` (start and stop text tokens included), as
    /// `T3.inference` does. `on_tokens` receives the new tokens every `report_every` of them
    /// (and the rest at the end), before the stop token is confirmed past them; it may cancel.
    pub fn generate(
        &self,
        cond: &T3Cond,
        text_tokens: &[u32],
        options: &SamplingOptions,
        noise: &mut dyn SamplingNoise,
        report_every: usize,
        on_tokens: &mut dyn FnMut(&[u32]) -> Result<Flow>,
    ) -> Result<Generated> {
        options
            .validate()
            .map_err(|(field, reason)| Error::Input(format!("{field}: {reason}")))?;
        let max_new = options.max_new_tokens;
        if max_new + 1 >= self.cfg.speech_positions() {
            return Err(Error::Input(format!(
                "max_new_tokens {max_new} exceeds T3's {} speech positions",
                self.cfg.speech_positions() - 2
            )));
        }
        let cond_emb = self.prepare_conditioning(cond)?;
        let cfg = options.cfg_weight > 0.0;
        let rows = if cfg { 2 } else { 1 };
        let embeds = self.prefill_embeds(&cond_emb, text_tokens, cfg)?;
        let device = embeds.device().clone();
        let positions = embeds.dim(1)? + max_new;
        // The stop detector reads attention maps, which only the dynamic path computes.
        let mut detector = (!self.cfg.alignment_heads.is_empty()).then(|| {
            let text_start = cond_emb.dim(1).unwrap_or(0);
            AlignmentDetector::new(
                text_start..text_start + text_tokens.len(),
                self.cfg.stop_speech_token,
            )
        });
        let window = self
            .decode
            .window_on(&device)
            .filter(|_| detector.is_none());
        let mut steps = if let Some(window) = window {
            match self
                .fixed
                .acquire(self, rows, positions, window, embeds.dtype(), &device)?
            {
                Some(slot) => Steps::Fixed(slot),
                None => {
                    tracing::debug!("T3's decode cache is busy: this generation runs dynamic");
                    Steps::Dynamic(self.cache(rows, positions, embeds.dtype(), &device)?)
                }
            }
        } else {
            Steps::Dynamic(self.cache(rows, positions, embeds.dtype(), &device)?)
        };
        let tables = match &steps {
            Steps::Fixed(slot) => slot.tables()?.clone(),
            Steps::Dynamic(_) => ProcessorTables::new(self.cfg.speech_tokens_dict_size, &device)?,
        };
        let mut sampler = Sampler::with_tables(*options, tables, self.cfg.start_speech_token)?;
        // Launches go in sections that a CUDA graph capture on another thread waits out
        // (`ferrovox_device::launch_gate`); the callback runs outside them.
        let start = self.cfg.start_speech_token;
        let mut token = device_work(|| {
            let cache = steps.cache()?;
            self.forward_draw(
                &embeds,
                cache,
                &mut sampler,
                detector.as_mut(),
                start,
                0,
                noise,
            )
        })?;
        let stop = self.cfg.stop_speech_token;
        let report_every = report_every.max(1);
        let mut pending: Vec<Tensor> = Vec::with_capacity(report_every);
        let mut tokens: Vec<u32> = Vec::new();
        for step in 0..max_new {
            pending.push(token.clone());
            // The host sees tokens in groups: one transfer per `report_every` tokens.
            if pending.len() == report_every || step + 1 == max_new {
                let fresh = device_work(|| Tensor::cat(&pending, 0)?.to_vec1::<u32>())?;
                pending.clear();
                if let Some(at) = fresh.iter().position(|&t| t == stop) {
                    tokens.extend_from_slice(&fresh[..at]);
                    if at > 0 {
                        on_tokens(&fresh[..at])?;
                    }
                    return Ok(Generated {
                        tokens,
                        stopped: true,
                    });
                }
                tokens.extend_from_slice(&fresh);
                if on_tokens(&fresh)? == Flow::Cancel {
                    return Ok(Generated {
                        tokens,
                        stopped: false,
                    });
                }
            }
            // The next token: the step's forward and its draw (at speech position and draw
            // index `step + 1`), one graph replay on the fixed path.
            if step + 1 < max_new {
                let _section = ferrovox_device::launch_gate::enter();
                token = match &mut steps {
                    Steps::Fixed(slot) => {
                        slot.step_sampled(self, &token, step + 1, &mut sampler, noise)?
                    }
                    Steps::Dynamic(cache) => {
                        let next = self.speech_step_embed(&token, step + 1, rows)?;
                        // Only the detector needs the previous token on the host.
                        let previous = match detector {
                            Some(_) => token.to_vec1::<u32>()?[0],
                            None => start,
                        };
                        let d = detector.as_mut();
                        self.forward_draw(&next, cache, &mut sampler, d, previous, step + 1, noise)?
                    }
                };
            }
        }
        Ok(Generated {
            tokens,
            stopped: false,
        })
    }
}

/// The cache a generation decodes into, by path.
enum Steps<'a> {
    Fixed(SlotGuard<'a>),
    Dynamic(KvCache),
}

impl Steps<'_> {
    fn cache(&mut self) -> Result<&mut KvCache> {
        match self {
            Self::Fixed(slot) => slot.cache(),
            Self::Dynamic(cache) => Ok(cache),
        }
    }
}
