//! Chatterbox Turbo as `tts_turbo.py` runs it: `punc_norm` and GPT-2 BPE text, Turbo's T3
//! ([`T3Turbo`], on GPT-2 medium; Chatterbox Nano's is the same model on GPT-2 small), the tokens S3Gen can decode with three silence tokens appended, and S3Gen's
//! meanflow decoder in 2 steps. Upstream's Perth watermark is left out, as for the other
//! models. One thing is ferrovox's own: the stop guard ([`TurboTts::token_budget`]), since
//! Turbo's T3 has no stop detector and can run on to its 1000-token budget.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::s3gen::{S3Gen, S3GenConfig};
use crate::t3::model::{Flow, Generated};
use crate::t3::{Gpt2Config, SamplingNoise, T3Config, T3Turbo, TurboOptions};
use crate::tokenizer::{turbo_punc_norm, TurboTokenizer};
use crate::tts::{builtin_voice, marker_sizes, prompt_within, speech_tokens, Outcome};
use crate::{Conditionals, Error, Result, RowFormat};

/// Turbo's T3 checkpoint.
pub const TURBO_T3: &str = "t3_turbo_v1.safetensors";
/// Nano's T3 checkpoint (`ResembleAI/chatterbox-nano`; its other files are Turbo's).
pub const NANO_T3: &str = "t3_nano_v1.safetensors";
/// Turbo's S3Gen checkpoint (the meanflow decoder).
pub const TURBO_S3GEN: &str = "s3gen_meanflow.safetensors";
/// S3Gen's silence token (`S3GEN_SIL`), three of which end every utterance.
pub const S3GEN_SILENCE: u32 = 4299;
/// Silence tokens appended before S3Gen.
const SILENCE_TOKENS: usize = 3;

/// The stop guard: speech tokens (25 a second) allowed per text token, and a floor. English
/// speech runs near 7 speech tokens per GPT-2 text token (2.5 words a second, 0.75 words a
/// token); 20 leaves room for slow speech and the paralinguistic tags while cutting a run-on
/// generation at a few times the text's length instead of 40 s.
pub const GUARD_TOKENS_PER_TEXT_TOKEN: usize = 20;
/// See [`GUARD_TOKENS_PER_TEXT_TOKEN`]: 2 s for the shortest texts.
pub const GUARD_FLOOR: usize = 50;

/// The sizes a Turbo directory's `ferrovox-voice.json` may declare (each section optional):
/// T3's hyper-parameters, GPT-2's config and S3Gen's; the released ones otherwise.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
struct TurboSizes {
    t3: T3Config,
    /// The released model's ([`TurboSize::gpt2`]) when not declared.
    gpt2: Option<Gpt2Config>,
    s3gen: S3GenConfig,
    /// The S3 token of silence ([`S3GEN_SILENCE`] in the released vocabulary).
    silence_token: u32,
}

impl Default for TurboSizes {
    fn default() -> Self {
        Self {
            t3: T3Config::turbo(),
            gpt2: None,
            s3gen: S3GenConfig::turbo(),
            silence_token: S3GEN_SILENCE,
        }
    }
}

/// Which GPT-2 a Turbo-layout directory's T3 runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurboSize {
    /// Chatterbox Turbo: GPT-2 medium, [`TURBO_T3`].
    Turbo,
    /// Chatterbox Nano: GPT-2 small, [`NANO_T3`].
    Nano,
}

impl TurboSize {
    /// The model's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Turbo => "Chatterbox Turbo",
            Self::Nano => "Chatterbox Nano",
        }
    }

    /// The T3 checkpoint's file name.
    pub fn t3_file(self) -> &'static str {
        match self {
            Self::Turbo => TURBO_T3,
            Self::Nano => NANO_T3,
        }
    }

    /// The released GPT-2 config.
    pub fn gpt2(self) -> Gpt2Config {
        match self {
            Self::Turbo => Gpt2Config::default(),
            Self::Nano => Gpt2Config::small(),
        }
    }

    /// The model `dir` holds: Turbo when its T3 is there, else Nano when Nano's is.
    pub fn of_dir(dir: &Path) -> Option<Self> {
        [Self::Turbo, Self::Nano]
            .into_iter()
            .find(|s| dir.join(s.t3_file()).is_file())
    }
}

/// Chatterbox Turbo.
#[derive(Debug)]
pub struct TurboTts {
    t3: T3Turbo,
    s3gen: S3Gen,
    tokenizer: TurboTokenizer,
    builtin: Conditionals,
    silence_token: u32,
    size: TurboSize,
    device: Device,
    dir: PathBuf,
}

impl TurboTts {
    /// Whether `dir` holds Turbo's or Nano's model (its T3).
    pub fn is_turbo_dir(dir: &Path) -> bool {
        TurboSize::of_dir(dir).is_some()
    }

    /// Loads a directory laid out as the `ResembleAI/chatterbox-turbo` repository: [`TURBO_T3`],
    /// [`TURBO_S3GEN`], the tokenizer files and `conds.pt` (or `conds.safetensors`); each
    /// missing or bad file is named. A directory laid out as `ResembleAI/chatterbox-nano`
    /// ([`NANO_T3`] in place of Turbo's T3) loads Nano.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_dir_as(
            dir,
            TurboSize::of_dir(dir).unwrap_or(TurboSize::Turbo),
            device,
        )
    }

    /// [`Self::from_dir`] for the model `size` (a directory may hold both T3s).
    pub fn from_dir_as(dir: &Path, size: TurboSize, device: &Device) -> Result<Self> {
        let sizes = marker_sizes::<TurboSizes>(dir)?.map_or_else(TurboSizes::default, |(s, _)| s);
        let gpt2 = sizes.gpt2.unwrap_or_else(|| size.gpt2());
        let t3_file = size.t3_file();
        let missing = |name: &str| Error::Checkpoint {
            path: dir.join(name).display().to_string(),
            reason: format!(
                "file not found (a Chatterbox Turbo directory holds {TURBO_T3}, a Nano one \
                 {NANO_T3}; both {TURBO_S3GEN}, the GPT-2 tokenizer files and conds.pt)"
            ),
        };
        for name in [t3_file, TURBO_S3GEN] {
            if !dir.join(name).is_file() {
                return Err(missing(name));
            }
        }
        let mut s3gen_cfg = sizes.s3gen;
        if sizes.silence_token as usize >= s3gen_cfg.flow.vocab_size {
            return Err(Error::Config(format!(
                "{}: silence token {} is outside S3Gen's {} speech tokens",
                dir.display(),
                sizes.silence_token,
                s3gen_cfg.flow.vocab_size
            )));
        }
        // Upstream builds S3Gen(meanflow=True) and solves it in 2 steps, whatever else it says.
        s3gen_cfg.flow.estimator.meanflow = true;
        s3gen_cfg.flow.cfm.n_timesteps = 2;
        let t3 = T3Turbo::load(&dir.join(t3_file), &sizes.t3, &gpt2, DType::F32, device)?;
        let s3gen = S3Gen::load(&dir.join(TURBO_S3GEN), &s3gen_cfg, device)?;
        let tokenizer = TurboTokenizer::from_dir(dir)?;
        let builtin = builtin_voice(dir, device)?.ok_or_else(|| missing("conds.pt"))?;
        let mut tts = Self {
            t3,
            s3gen,
            tokenizer,
            builtin,
            silence_token: sizes.silence_token,
            size,
            device: device.clone(),
            dir: dir.to_path_buf(),
        };
        tts.pack_steps(crate::cpu_step_weights()?)?;
        tts.bf16_products(crate::cpu_bf16_products()?)?;
        Ok(tts)
    }

    /// Decode steps on the CPU read T3's weights as `format` ([`T3Turbo::pack_steps`]); loading
    /// sets [`crate::CPU_STEP_WEIGHTS`] or `FERROVOX_CPU_WEIGHTS`.
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        self.t3.pack_steps(format)
    }

    /// T3's prefill and S3Gen's flow on bf16-rounded inputs with f32 sums where the CPU has
    /// AVX-512 BF16 and `on`, else f32 products; loading sets [`crate::cpu_bf16_products`].
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.t3.bf16_products(on)?;
        self.s3gen.bf16_products(on)
    }

    /// Turbo or Nano.
    pub fn size(&self) -> TurboSize {
        self.size
    }

    pub fn t3(&self) -> &T3Turbo {
        &self.t3
    }

    pub fn s3gen(&self) -> &S3Gen {
        &self.s3gen
    }

    pub fn builtin_voice(&self) -> &Conditionals {
        &self.builtin
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The directory the model was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// T3's text tokens for `text`: `punc_norm`, then the GPT-2 tokenizer (tags whole).
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            return Err(Error::Input("the text is empty".into()));
        }
        self.tokenizer.encode(&turbo_punc_norm(text))
    }

    /// The most speech tokens a generation of `text_tokens` may draw: `requested`, capped by
    /// the stop guard ([`GUARD_TOKENS_PER_TEXT_TOKEN`] a text token, at least [`GUARD_FLOOR`]).
    pub fn token_budget(text_tokens: usize, requested: usize) -> usize {
        requested.min((GUARD_TOKENS_PER_TEXT_TOKEN * text_tokens).max(GUARD_FLOOR))
    }

    /// T3's speech tokens for `text_tokens` in `voice`, under the stop guard and within the
    /// positions GPT-2 has left.
    pub fn generate_tokens(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &TurboOptions,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Generated> {
        let cond = prompt_within(&voice.t3, self.t3.config().speech_cond_prompt_len)?;
        let budget = Self::token_budget(text_tokens.len(), options.max_new_tokens);
        let room = self.t3.room(&cond, text_tokens.len())?;
        if room == 0 {
            return Err(Error::Input(format!(
                "{} text tokens leave no room in T3's context",
                text_tokens.len()
            )));
        }
        let options = TurboOptions {
            max_new_tokens: budget.min(room),
            ..*options
        };
        self.t3
            .generate(&cond, text_tokens, &options, noise, &mut |_| {
                Ok(Flow::Continue)
            })
    }

    /// The audio of `text_tokens` in `voice`: T3, the speech tokens with the silence tokens,
    /// S3Gen with the draws of `seed`.
    pub fn synthesize(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &TurboOptions,
        seed: u64,
        noise: &mut dyn SamplingNoise,
    ) -> Result<(Vec<f32>, Outcome)> {
        let generated = self.generate_tokens(text_tokens, voice, options, noise)?;
        let mut tokens = speech_tokens(&generated.tokens, self.t3.config().start_speech_token);
        if tokens.is_empty() {
            return Err(Error::Input(
                "T3 generated no speech tokens for this text".into(),
            ));
        }
        let spoken = tokens.len();
        tokens.extend([self.silence_token; SILENCE_TOKENS]);
        let audio = self.s3gen.synthesize(&tokens, &voice.gen, seed)?;
        Ok((
            audio,
            Outcome {
                tokens: spoken,
                stopped: generated.stopped,
            },
        ))
    }
}
