//! Chatterbox Turbo's T3 (`T3` with a GPT-2 backbone, `T3.inference_turbo`, the
//! hyper-parameters `tts_turbo.py` sets): the speaker embedding and the reference's raw speech
//! tokens as conditioning (no Perceiver, no exaggeration token), GPT-2's own positions (no
//! learned position tables), no guidance row, and its own sampling order
//! ([`super::turbo_sampling`]). Loads the released `t3_turbo_v1.safetensors` under its keys.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use ferrovox_layers::{RowFormat, StepLinear};

use super::cond_enc::T3Cond;
use super::config::T3Config;
use super::gpt2::{Gpt2, Gpt2Cache, Gpt2Config};
use super::model::{Flow, Generated};
use super::sampling::SamplingNoise;
use super::turbo_sampling::{draw, softmax, TurboOptions};
use crate::{Error, Result};

/// Tensors of the released checkpoint the model does not read: GPT-2's token table (upstream
/// deletes it after loading) and the text head (training only).
pub const UNUSED_KEYS: [&str; 2] = ["text_head.weight", "tfmr.wte.weight"];

impl T3Config {
    /// Turbo's hyper-parameters (`ChatterboxTurboTTS.from_local`): GPT-2's text vocabulary,
    /// a 375-token raw prompt, no Perceiver, no exaggeration.
    pub fn turbo() -> Self {
        Self {
            text_tokens_dict_size: 50276,
            speech_tokens_dict_size: 6563,
            speech_cond_prompt_len: 375,
            use_perceiver_resampler: false,
            emotion_adv: false,
            ..Self::default()
        }
    }
}

/// Turbo's T3.
#[derive(Debug, Clone)]
pub struct T3Turbo {
    spkr_enc: Linear,
    text_emb: Embedding,
    speech_emb: Embedding,
    speech_head: StepLinear,
    tfmr: Gpt2,
    cfg: T3Config,
}

impl T3Turbo {
    /// Builds from `vb` at the checkpoint root (upstream's flat `T3(hp).state_dict()` keys).
    pub fn new(cfg: &T3Config, gpt2: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        gpt2.validate()
            .map_err(|m| Error::Config(format!("Turbo's GPT-2: {m}")))?;
        if cfg.use_perceiver_resampler || cfg.emotion_adv {
            return Err(Error::Config(
                "Turbo's T3 conditions on the raw prompt alone: no Perceiver, no exaggeration"
                    .into(),
            ));
        }
        let dim = gpt2.n_embd;
        let speech_vocab = cfg.speech_tokens_dict_size;
        Ok(Self {
            spkr_enc: candle_nn::linear(cfg.speaker_embed_size, dim, vb.pp("cond_enc.spkr_enc"))?,
            text_emb: candle_nn::embedding(cfg.text_tokens_dict_size, dim, vb.pp("text_emb"))?,
            speech_emb: candle_nn::embedding(speech_vocab, dim, vb.pp("speech_emb"))?,
            speech_head: StepLinear::new(candle_nn::linear(
                dim,
                speech_vocab,
                vb.pp("speech_head"),
            )?),
            tfmr: Gpt2::new(gpt2, vb.pp("tfmr"))?,
            cfg: cfg.clone(),
        })
    }

    /// Loads the checkpoint at `path` (`t3_turbo_v1.safetensors`) once its whole key set
    /// checks out against [`T3Turbo::expected_keys`]; an absent, damaged or other model's file
    /// is named.
    pub fn load(
        path: &std::path::Path,
        cfg: &T3Config,
        gpt2: &Gpt2Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        crate::checkpoint::load_checked(
            path,
            &Self::expected_keys(gpt2),
            |k| UNUSED_KEYS.contains(&k),
            "Turbo's T3 checkpoint",
            dtype,
            device,
            |vb| Self::new(cfg, gpt2, vb),
        )
    }

    /// Every tensor name [`T3Turbo::new`] reads.
    pub fn expected_keys(gpt2: &Gpt2Config) -> Vec<String> {
        let mut keys: Vec<String> = [
            "cond_enc.spkr_enc.weight",
            "cond_enc.spkr_enc.bias",
            "text_emb.weight",
            "speech_emb.weight",
            "speech_head.weight",
            "speech_head.bias",
            "tfmr.wpe.weight",
            "tfmr.ln_f.weight",
            "tfmr.ln_f.bias",
        ]
        .map(String::from)
        .to_vec();
        for i in 0..gpt2.n_layer {
            for m in [
                "ln_1",
                "attn.c_attn",
                "attn.c_proj",
                "ln_2",
                "mlp.c_fc",
                "mlp.c_proj",
            ] {
                for p in ["weight", "bias"] {
                    keys.push(format!("tfmr.h.{i}.{m}.{p}"));
                }
            }
        }
        keys
    }

    pub fn config(&self) -> &T3Config {
        &self.cfg
    }

    /// GPT-2's projections and the speech head read their weights as `format` in decode
    /// steps on the CPU (bf16, or int8 with a scale per 32 weights); prefills keep f32.
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        self.tfmr.pack_steps(format)?;
        Ok(self.speech_head.pack_steps(format)?)
    }

    /// GPT-2's prefill products on bf16-rounded inputs with f32 sums where the CPU has
    /// AVX-512 BF16 and `on` ([`Gpt2::bf16_products`]); decode steps keep [`Self::pack_steps`]'s
    /// format.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        Ok(self.tfmr.bf16_products(on)?)
    }

    /// The format decode steps read the weights in.
    pub fn step_format(&self) -> RowFormat {
        self.speech_head.step_format()
    }

    pub fn device(&self) -> &Device {
        self.speech_emb.embeddings().device()
    }

    /// The conditioning prefix `[1, 1 + prompt, dim]`: the projected speaker embedding, then
    /// the prompt tokens' embeddings as they are.
    pub fn prepare_conditioning(&self, cond: &T3Cond) -> Result<Tensor> {
        let spkr = self
            .spkr_enc
            .forward(&cond.speaker_emb.reshape((1, self.cfg.speaker_embed_size))?)?
            .unsqueeze(1)?;
        let Some(prompt) = &cond.cond_prompt_speech_tokens else {
            return Ok(spkr);
        };
        let prompt = self.speech_emb.forward(&prompt.to_dtype(DType::U32)?)?;
        Ok(Tensor::cat(&[&spkr, &prompt], 1)?)
    }

    /// The prefill `[1, cond + text + 1, dim]`: conditioning, `text_tokens` (GPT-2 BPE ids, as
    /// upstream's tokenizer gives them: no start or stop text token), the start speech token.
    pub fn prefill_embeds(&self, cond: &T3Cond, text_tokens: &[u32]) -> Result<Tensor> {
        let device = self.device();
        if let Some(&bad) = text_tokens
            .iter()
            .find(|&&t| t as usize >= self.cfg.text_tokens_dict_size)
        {
            return Err(Error::Input(format!(
                "text token {bad} is outside Turbo's {} text ids",
                self.cfg.text_tokens_dict_size
            )));
        }
        let text = self
            .text_emb
            .forward(&Tensor::new(text_tokens, device)?.unsqueeze(0)?)?;
        let start = Tensor::new(&[[self.cfg.start_speech_token]], device)?;
        let start = self.speech_emb.forward(&start)?;
        Ok(Tensor::cat(
            &[&self.prepare_conditioning(cond)?, &text, &start],
            1,
        )?)
    }

    /// Tokens a generation for `cond` and `text_tokens` text tokens can draw before GPT-2's
    /// positions run out.
    pub fn room(&self, cond: &T3Cond, text_tokens: usize) -> Result<usize> {
        let prompt = match &cond.cond_prompt_speech_tokens {
            Some(t) => t.dim(1)?,
            None => 0,
        };
        let prefill = 1 + prompt + text_tokens + 1;
        Ok(self.tfmr.config().n_positions.saturating_sub(prefill))
    }

    /// Speech-head logits `[1, t, vocab]` of `embeds` after what `cache` holds.
    pub fn forward(&self, embeds: &Tensor, cache: &mut Gpt2Cache) -> Result<Tensor> {
        let hidden = self.tfmr.forward(embeds, cache)?;
        Ok(self.speech_head.forward(&hidden)?)
    }

    /// Final-normed hidden states, for parity checks of the backbone alone.
    pub fn hidden_states(&self, embeds: &Tensor, cache: &mut Gpt2Cache) -> Result<Tensor> {
        Ok(self.tfmr.forward(embeds, cache)?)
    }

    /// The embedding of a drawn token fed back (GPT-2 adds its position).
    pub fn speech_step_embed(&self, token: u32) -> Result<Tensor> {
        let t = Tensor::new(&[[token]], self.device())?;
        Ok(self.speech_emb.forward(&t)?)
    }

    /// Generates speech tokens for `text_tokens` as `T3.inference_turbo` does: a draw after
    /// the prefill, then up to `max_new_tokens − 1` more, ending at the stop token (not
    /// returned). `on_tokens` receives each new token as it comes and may cancel.
    pub fn generate(
        &self,
        cond: &T3Cond,
        text_tokens: &[u32],
        options: &TurboOptions,
        noise: &mut dyn SamplingNoise,
        on_tokens: &mut dyn FnMut(&[u32]) -> Result<Flow>,
    ) -> Result<Generated> {
        options.validate()?;
        let embeds = self.prefill_embeds(cond, text_tokens)?;
        let room = self.tfmr.config().n_positions;
        if embeds.dim(1)? + options.max_new_tokens > room {
            return Err(Error::Input(format!(
                "{} prefill positions and {} new tokens exceed GPT-2's {room} positions",
                embeds.dim(1)?,
                options.max_new_tokens
            )));
        }
        let mut cache = Gpt2Cache::default();
        let stop = self.cfg.stop_speech_token;
        let vocab = self.cfg.speech_tokens_dict_size;
        let mut logits = self.forward(&embeds, &mut cache)?;
        let mut tokens = Vec::new();
        for step in 0..options.max_new_tokens {
            let last = logits.i((0, logits.dim(1)? - 1))?.to_dtype(DType::F32)?;
            let mut row = last.to_vec1::<f32>()?;
            // The penalty's history: the start token for the first draw, then the drawn ones.
            let seen = if tokens.is_empty() {
                vec![self.cfg.start_speech_token]
            } else {
                tokens.clone()
            };
            options.process(&mut row, &seen);
            if row.iter().all(|l| *l == f32::NEG_INFINITY) {
                break;
            }
            let probs = softmax(&row);
            let q = noise
                .exponentials(step, vocab, &Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let token = draw(&probs, &q);
            if token == stop {
                return Ok(Generated {
                    tokens,
                    stopped: true,
                });
            }
            tokens.push(token);
            if on_tokens(&[token])? == Flow::Cancel {
                break;
            }
            if step + 1 < options.max_new_tokens {
                logits = self.forward(&self.speech_step_embed(token)?, &mut cache)?;
            }
        }
        Ok(Generated {
            tokens,
            stopped: false,
        })
    }
}
