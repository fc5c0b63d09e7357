//! Mirrors `ChatterboxTTS` (`chatterbox/tts.py`): the English model's files loaded together,
//! text to speech tokens (T3) to audio (S3Gen), whole or streamed while T3 is still sampling.
//! The Perth watermark upstream adds at the very end is not applied.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ferrovox_device::device_work;
use ferrovox_layers::RowFormat;

use crate::campplus::CampPlusConfig;
use crate::s3gen::{FlowBatchConfig, FlowBatcher, S3Gen, S3GenConfig};
use crate::s3tokenizer::S3TokenizerConfig;
use crate::t3::{Flow, Generated, Request, SamplingNoise, SamplingOptions, T3Config, T3};
use crate::tokenizer::{mtl_punc_norm, punc_norm, EnTokenizer, Language, MtlTokenizer, LANGUAGES};
use crate::voice_encoder::VoiceEncConfig;
use crate::{Conditionals, Error, Result, VoiceCloner};

/// The files of the released model (`ResembleAI/chatterbox`), as the hub repository lays them
/// out. `ve.safetensors` (the voice encoder) is only read to clone voices
/// ([`ChatterboxTts::cloner`]).
pub const MODEL_FILES: [&str; 5] = [
    "ve.safetensors",
    "t3_cfg.safetensors",
    "s3gen.safetensors",
    "tokenizer.json",
    "conds.pt",
];

/// The controls of one synthesis, upstream's `generate` arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Exaggeration (upstream's `emotion_adv`), 0.5 by default.
    pub exaggeration: f32,
    pub sampling: SamplingOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            exaggeration: 0.5,
            sampling: SamplingOptions::default(),
        }
    }
}

/// Tokens per streamed S3Gen chunk: the first after 25 tokens (1 s of speech), then longer
/// ones, since each push re-runs the flow over every token so far.
/// The weights T3's decode steps read on the CPU unless `FERROVOX_CPU_WEIGHTS` (`f32`, `bf16`,
/// `int8`) says otherwise. A step there is bound by reading the weights, and int8 (a scale per
/// 32 weights, activations kept f32) reads 1.125 bytes a weight against f32's 4; its error
/// against f32 logits is measured by `cargo xtask bench chatterbox-precision` and stated in the
/// README.
pub const CPU_STEP_WEIGHTS: RowFormat = RowFormat::Int8;

/// [`CPU_STEP_WEIGHTS`], or the format `FERROVOX_CPU_WEIGHTS` names (an unknown name is an
/// error, not a silent default).
pub fn cpu_step_weights() -> Result<RowFormat> {
    match std::env::var("FERROVOX_CPU_WEIGHTS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e: String| Error::Config(format!("FERROVOX_CPU_WEIGHTS: {e}"))),
        _ => Ok(CPU_STEP_WEIGHTS),
    }
}

/// Whether the large CPU products (S3Gen's estimator and encoder projections and the
/// estimator's attention, T3's prefill) run on bf16-rounded inputs with f32 sums where the CPU
/// has AVX-512 BF16: yes unless `FERROVOX_CPU_PRODUCTS=f32`. Twice the multiply-adds a cycle of
/// f32 FMA; the error against f32 mels is measured by `cargo xtask bench s3gen`, against f32
/// logits by `bench chatterbox-turbo` / `chatterbox-nano`, and stated in the README. An unknown
/// value is an error.
pub fn cpu_bf16_products() -> Result<bool> {
    match std::env::var("FERROVOX_CPU_PRODUCTS") {
        Ok(v) if !v.trim().is_empty() => match v.trim().to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(true),
            "f32" | "float32" => Ok(false),
            other => Err(Error::Config(format!(
                "FERROVOX_CPU_PRODUCTS: unknown precision {other:?} (bf16, f32)"
            ))),
        },
        _ => Ok(true),
    }
}

/// T3's dtype on `device`: f32, or bf16 on a GPU when `FERROVOX_DTYPE=bf16` asks for it (1.3×
/// the tokens/s on the H100, logits within 1.9 % RMS of f32's; see the README). S3Gen and the
/// CPU stay f32.
fn t3_dtype(device: &Device) -> Result<DType> {
    let asked = ferrovox_device::TuningConfig::from_env()
        .map_err(|e| Error::Config(e.to_string()))?
        .dtype;
    Ok(match asked {
        Some(DType::BF16) if !device.is_cpu() => DType::BF16,
        _ => DType::F32,
    })
}

pub const STREAM_CHUNKS: [usize; 4] = [25, 50, 100, 200];

/// Where a synthesis's speech tokens come from: a generation that hands its callback the
/// tokens as they come (the callback may cancel) and returns the whole.
pub type Generate<'a> = dyn FnMut(&mut dyn FnMut(&[u32]) -> Result<Flow>) -> Result<Generated> + 'a;

/// What a synthesis ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Speech tokens decoded into audio.
    pub tokens: usize,
    /// False when T3 reached `max_new_tokens` without its stop token (the audio is what it
    /// generated, possibly cut mid-word).
    pub stopped: bool,
}

/// A Chatterbox model's text front end: English (`tokenizer.json`) or the 23 languages of the
/// multilingual model (`grapheme_mtl_merged_expanded_v1.json`).
#[derive(Debug, Clone)]
pub enum TextFrontEnd {
    English(EnTokenizer),
    Multilingual(MtlTokenizer),
}

impl From<EnTokenizer> for TextFrontEnd {
    fn from(t: EnTokenizer) -> Self {
        Self::English(t)
    }
}

impl From<MtlTokenizer> for TextFrontEnd {
    fn from(t: MtlTokenizer) -> Self {
        Self::Multilingual(t)
    }
}

impl TextFrontEnd {
    fn vocab_size(&self) -> usize {
        match self {
            Self::English(t) => t.vocab_size(),
            Self::Multilingual(t) => t.vocab_size(),
        }
    }
}

/// The multilingual model's files, beside `ve.pt`, `s3gen.pt` and `conds.pt`.
pub const MTL_VOCAB: &str = "grapheme_mtl_merged_expanded_v1.json";
/// The multilingual T3 ferrovox prefers (v3: no attention-based stop detector).
pub const MTL_T3: &str = "t3_mtl23ls_v3.safetensors";
/// The earlier multilingual T3 (upstream's default), whose generations run the attention-based
/// stop detector ([`crate::t3::alignment`]); loaded when the directory has no v3.
pub const MTL_T3_V2: &str = "t3_mtl23ls_v2.safetensors";

/// Whether `dir` holds the multilingual model: its vocabulary without the English T3 (a full
/// snapshot of the hub repository holds both models' files, and English wins there).
pub(crate) fn is_multilingual_dir(dir: &Path) -> bool {
    dir.join(MTL_VOCAB).is_file() && !dir.join("t3_cfg.safetensors").is_file()
}

/// A Chatterbox model: English, or multilingual.
#[derive(Debug)]
pub struct ChatterboxTts {
    t3: T3,
    s3gen: S3Gen,
    tokenizer: TextFrontEnd,
    /// S3Gen's flow batched across the threads synthesizing at once, when set.
    flow_batch: Option<FlowBatcher>,
    builtin: Conditionals,
    device: Device,
    /// The directory [`ChatterboxTts::from_dir`] read, where the cloning encoders are.
    dir: Option<PathBuf>,
}

/// The model's sizes as a directory's `ferrovox-voice.json` declares them (upstream's configs,
/// field for field, each section optional), else the released ones.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Sizes {
    pub t3: T3Config,
    pub s3gen: S3GenConfig,
    pub voice_encoder: VoiceEncConfig,
    pub s3tokenizer: S3TokenizerConfig,
    pub campplus: CampPlusConfig,
}

impl Sizes {
    /// The sizes of `dir`: its `ferrovox-voice.json`, else the released model's (T3's
    /// multilingual sizes for a multilingual directory whose file gives no `t3`).
    pub(crate) fn of_dir(dir: &Path) -> Result<Self> {
        Self::of_dir_as(dir, is_multilingual_dir(dir))
    }

    /// [`Sizes::of_dir`] for the model `multilingual` names, whatever else `dir` holds.
    pub(crate) fn of_dir_as(dir: &Path, multilingual: bool) -> Result<Self> {
        Self::with_t3(dir, multilingual.then(T3Config::multilingual))
    }

    /// The sizes of `dir` with `t3` (else the English model's) where its file gives no `t3`.
    pub(crate) fn with_t3(dir: &Path, t3: Option<T3Config>) -> Result<Self> {
        let (mut sizes, declares_t3) = match marker_sizes::<Self>(dir)? {
            Some((sizes, value)) => (sizes, value.get("t3").is_some()),
            None => (Self::default(), false),
        };
        if let (false, Some(t3)) = (declares_t3, t3) {
            sizes.t3 = t3;
        }
        Ok(sizes)
    }
}

impl ChatterboxTts {
    /// Loads a directory laid out as the hub repository ([`MODEL_FILES`]), or as its
    /// multilingual files ([`MTL_VOCAB`], [`MTL_T3`], `s3gen.pt`, `conds.pt`; a directory with
    /// both loads English); each missing or bad file is named. The voice may be `conds.pt` (upstream's) or `conds.safetensors`
    /// ([`Conditionals::save`]'s). A `ferrovox-voice.json` beside them may give other sizes
    /// than the released model's, as `{"family": "chatterbox", "t3": {...}, "s3gen": {...}}`
    /// (upstream's own configs, field for field; [`VoiceCloner::from_dir`] also reads
    /// `voice_encoder`, `s3tokenizer` and `campplus`).
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_dir_as(dir, is_multilingual_dir(dir), device)
    }

    /// [`ChatterboxTts::from_dir`] for the multilingual model when `multilingual`, else the
    /// English one, whatever else `dir` holds (a whole snapshot of the repository holds both).
    pub fn from_dir_as(dir: &Path, multilingual: bool, device: &Device) -> Result<Self> {
        let file = |name: &str| dir.join(name);
        let missing = |name: &str| Error::Checkpoint {
            path: file(name).display().to_string(),
            reason: if multilingual {
                format!(
                    "file not found (a multilingual Chatterbox directory holds {MTL_T3} or {MTL_T3_V2}, \
                     s3gen.pt or s3gen.safetensors, {MTL_VOCAB} and conds.pt)"
                )
            } else {
                "file not found (a Chatterbox directory holds t3_cfg.safetensors, \
                 s3gen.safetensors, tokenizer.json and conds.pt)"
                    .into()
            },
        };
        // v3 when the directory has it (upstream's recommendation), else v2 with its detector.
        let v2 = multilingual && !file(MTL_T3).is_file() && file(MTL_T3_V2).is_file();
        let t3_file = match (multilingual, v2) {
            (true, true) => MTL_T3_V2,
            (true, false) => MTL_T3,
            (false, _) => "t3_cfg.safetensors",
        };
        let s3gen_file = ["s3gen.safetensors", "s3gen.pt"]
            .into_iter()
            .find(|n| file(n).is_file())
            .ok_or_else(|| missing("s3gen.safetensors"))?;
        for name in [
            t3_file,
            if multilingual {
                MTL_VOCAB
            } else {
                "tokenizer.json"
            },
        ] {
            if !file(name).is_file() {
                return Err(missing(name));
            }
        }
        let mut sizes = Sizes::of_dir_as(dir, multilingual)?;
        if v2 && sizes.t3.alignment_heads.is_empty() {
            sizes.t3.alignment_heads = crate::t3::ALIGNED_HEADS.to_vec();
            sizes.t3.validate().map_err(|e| Error::Checkpoint {
                path: file(MTL_T3_V2).display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let t3 = T3::load(&file(t3_file), &sizes.t3, t3_dtype(device)?, device)?;
        let s3gen = S3Gen::load(&file(s3gen_file), &sizes.s3gen, device)?;
        let tokenizer: TextFrontEnd = if multilingual {
            let cangjie = file("Cangjie5_TC.json");
            if !cangjie.is_file() {
                tracing::warn!(
                    path = %cangjie.display(),
                    "no Cangjie table: Chinese glyphs go to the tokenizer as they are"
                );
            }
            MtlTokenizer::from_files(
                &file(MTL_VOCAB),
                Some(&cangjie).filter(|c| c.is_file()).map(|c| c.as_path()),
            )?
            .into()
        } else {
            EnTokenizer::from_file(&file("tokenizer.json"))?.into()
        };
        let builtin = builtin_voice(dir, device)?.ok_or_else(|| missing("conds.pt"))?;
        let mut tts = Self::new(t3, s3gen, tokenizer, builtin, device)?;
        tts.pack_steps(cpu_step_weights()?)?;
        tts.bf16_products(cpu_bf16_products()?)?;
        tts.dir = Some(dir.to_path_buf());
        Ok(tts)
    }

    /// The encoders that make a voice from a reference clip, loaded from the directory this
    /// model came from ([`VoiceCloner::from_dir`]: `ve.safetensors` or `ve.pt`, and the S3
    /// tokenizer and CAMPPlus of `s3gen.safetensors` or `s3gen.pt`), with T3's prompt length. They are not kept in memory
    /// with the model (the full-size tokenizer alone is about 0.5 GB), so each call loads
    /// them; keep the cloner while cloning several voices. A model built from parts
    /// ([`ChatterboxTts::new`]) has no directory: build a [`VoiceCloner`] from parts too.
    pub fn cloner(&self) -> Result<VoiceCloner> {
        let dir = self.dir.as_deref().ok_or_else(|| {
            Error::Input(
                "this model was built from parts, not read from a directory: build the \
                 VoiceCloner with VoiceCloner::new"
                    .into(),
            )
        })?;
        let cloner = VoiceCloner::from_dir(dir, &self.device)?;
        let t3 = self.t3.config();
        let embed = cloner.voice_encoder().config().speaker_embed_size;
        if cloner.speech_cond_prompt_len() != t3.speech_cond_prompt_len
            || embed != t3.speaker_embed_size
        {
            return Err(Error::Config(format!(
                "{}: the cloner's sizes (prompt {}, speaker embedding {embed}) are not the loaded \
                 T3's (prompt {}, speaker embedding {})",
                dir.display(),
                cloner.speech_cond_prompt_len(),
                t3.speech_cond_prompt_len,
                t3.speaker_embed_size
            )));
        }
        Ok(cloner)
    }

    /// From parts built elsewhere (the parity tests' small models).
    pub fn new(
        t3: T3,
        s3gen: S3Gen,
        tokenizer: impl Into<TextFrontEnd>,
        builtin: Conditionals,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = tokenizer.into();
        let max_id = tokenizer.vocab_size();
        if max_id > t3.config().text_tokens_dict_size {
            return Err(Error::Config(format!(
                "the tokenizer has {max_id} ids, T3's text vocabulary {}",
                t3.config().text_tokens_dict_size
            )));
        }
        Ok(Self {
            t3,
            s3gen,
            tokenizer,
            flow_batch: None,
            builtin,
            device: device.clone(),
            dir: None,
        })
    }

    pub fn t3(&self) -> &T3 {
        &self.t3
    }

    /// Decode steps on the CPU read T3's weights as `format` ([`T3::pack_steps`]);
    /// [`ChatterboxTts::from_dir`] sets [`CPU_STEP_WEIGHTS`] or `FERROVOX_CPU_WEIGHTS`.
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        self.t3.pack_steps(format)
    }

    /// T3's prefill and S3Gen's flow on bf16-rounded inputs with f32 sums where the CPU has
    /// AVX-512 BF16 and `on`, else f32 products; [`ChatterboxTts::from_dir`] sets
    /// [`cpu_bf16_products`].
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.t3.bf16_products(on)?;
        self.s3gen.bf16_products(on)
    }

    pub fn s3gen(&self) -> &S3Gen {
        &self.s3gen
    }

    /// Batches S3Gen's flow runs of the threads streaming or decoding at once (see
    /// [`FlowBatcher`]; a batched utterance equals its run alone up to f32 summation order);
    /// `None` or a limit of 1: each thread runs its own.
    pub fn set_flow_batch(&mut self, config: Option<FlowBatchConfig>) {
        self.flow_batch = config.filter(|c| c.max_items > 1).map(FlowBatcher::new);
    }

    /// The flow batcher, when there is one.
    pub fn flow_batcher(&self) -> Option<&FlowBatcher> {
        self.flow_batch.as_ref()
    }

    /// The voice `conds.pt` holds.
    pub fn builtin_voice(&self) -> &Conditionals {
        &self.builtin
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that `voice` was made for this model's sizes: T3's speaker embedding and speech
    /// vocabulary, S3Gen's x-vector, mel bins and token vocabulary. A voice cloned by another
    /// model's encoders is refused with what differs, before it reaches an embedding lookup
    /// (which on a GPU would read out of bounds instead of failing).
    pub fn check_voice(&self, voice: &Conditionals) -> Result<()> {
        let t3 = self.t3.config();
        let flow = self.s3gen.flow().config();
        let bad = |what: String| {
            Err(Error::Input(format!(
                "the voice does not fit this model: {what}"
            )))
        };
        let dims = |t: &Tensor| t.dims().to_vec();
        let emb = dims(&voice.t3.speaker_emb);
        if emb.last() != Some(&t3.speaker_embed_size)
            || emb.iter().product::<usize>() != t3.speaker_embed_size
        {
            return bad(format!(
                "speaker embedding {emb:?}, T3 takes {}",
                t3.speaker_embed_size
            ));
        }
        if let Some(tokens) = &voice.t3.cond_prompt_speech_tokens {
            let ids = tokens
                .flatten_all()?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?;
            if let Some(id) = ids.iter().find(|&&id| id >= t3.start_speech_token) {
                return bad(format!(
                    "T3 prompt token {id}, T3's speech codes are 0..{}",
                    t3.start_speech_token
                ));
            }
        }
        let x = dims(&voice.gen.xvector);
        if x.iter().product::<usize>() != flow.spk_embed_dim {
            return bad(format!(
                "x-vector {x:?}, S3Gen takes {}",
                flow.spk_embed_dim
            ));
        }
        let feat = dims(&voice.gen.prompt_feat);
        if feat.len() != 3 || feat[0] != 1 || feat[2] != flow.output_size {
            return bad(format!(
                "prompt mel {feat:?}, S3Gen takes [1, frames, {}]",
                flow.output_size
            ));
        }
        if let Some(id) = voice
            .gen
            .prompt_tokens
            .iter()
            .find(|&&id| id as usize >= flow.vocab_size)
        {
            return bad(format!(
                "S3Gen prompt token {id}, S3Gen's vocabulary is 0..{}",
                flow.vocab_size
            ));
        }
        Ok(())
    }

    /// T3's text tokens for `text`: `punc_norm`, the tokenizer, then `[START]` … `[STOP]`
    /// (English; a multilingual model reads it as English).
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.text_tokens_in(text, None)
    }

    /// [`Self::text_tokens`] of `text` in `language` (a code such as `fr` or `pt-BR`; `None`:
    /// English). The English model speaks only English; the multilingual one runs its
    /// language's preprocessing and tag. A language the model does not speak is an
    /// [`Error::Input`] naming the ones it does.
    pub fn text_tokens_in(&self, text: &str, language: Option<&str>) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            return Err(Error::Input("the text is empty".into()));
        }
        let base = language.map(|l| l.split(['-', '_']).next().unwrap_or(l));
        let cfg = self.t3.config();
        let mut ids = vec![cfg.start_text_token];
        match &self.tokenizer {
            TextFrontEnd::English(t) => {
                if let Some(other) = base.filter(|b| !b.eq_ignore_ascii_case("en")) {
                    return Err(Error::Input(format!(
                        "this Chatterbox model speaks only English, not `{other}`"
                    )));
                }
                ids.extend(t.encode(&punc_norm(text))?);
            }
            TextFrontEnd::Multilingual(t) => {
                let language = Language::parse(base.unwrap_or("en"))?;
                ids.extend(t.encode(&mtl_punc_norm(text), language)?);
            }
        }
        ids.push(cfg.stop_text_token);
        Ok(ids)
    }

    /// The language codes the model speaks.
    pub fn languages(&self) -> Vec<&'static str> {
        match &self.tokenizer {
            TextFrontEnd::English(_) => vec!["en"],
            TextFrontEnd::Multilingual(_) => LANGUAGES.iter().map(|(c, _)| *c).collect(),
        }
    }

    /// Audio for T3's `text_tokens` in `voice`, handed to `emit` in pieces while T3 samples:
    /// S3Gen decodes chunks of exactly [`STREAM_CHUNKS`] tokens (then 200 each) and emits
    /// the audio that has become final. `emit` may cancel. The pieces joined equal
    /// [`ChatterboxTts::synthesize`]'s audio under the same draws within S3Gen's streaming
    /// bound.
    pub fn stream(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &GenerateOptions,
        seed: u64,
        noise: &mut dyn SamplingNoise,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<Flow>,
    ) -> Result<Outcome> {
        let cond = self.t3_cond(voice, options)?;
        self.stream_tokens(
            voice,
            seed,
            &mut |on_tokens| {
                self.t3
                    .generate(&cond, text_tokens, &options.sampling, noise, 5, on_tokens)
            },
            emit,
        )
    }

    /// [`ChatterboxTts::stream`] of the tokens `generate` hands its callback as they come (T3
    /// run here, or a decode batch's generation, [`crate::t3::T3Batch`]).
    pub fn stream_tokens(
        &self,
        voice: &Conditionals,
        seed: u64,
        generate: &mut Generate<'_>,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<Flow>,
    ) -> Result<Outcome> {
        let codes = self.speech_codes();
        let mut stream = self.s3gen.stream(&voice.gen, seed)?;
        if let Some(batcher) = &self.flow_batch {
            stream = stream.with_batcher(batcher);
        }
        let mut pending: Vec<u32> = Vec::new();
        let mut decoded = 0usize;
        let mut chunk = 0usize;
        let mut cancelled = false;
        let generated = generate(&mut |fresh| {
            pending.extend(speech_tokens(fresh, codes));
            // Chunks of exactly the scheduled sizes, however the tokens were grouped on their
            // way here (a decode batch hands over as many as have arrived): the chunking shapes
            // the audio, so a seed's audio must not depend on timing.
            loop {
                let due = STREAM_CHUNKS[chunk.min(STREAM_CHUNKS.len() - 1)];
                if pending.len() < due {
                    return Ok(Flow::Continue);
                }
                chunk += 1;
                decoded += due;
                let piece: Vec<u32> = pending.drain(..due).collect();
                let audio = device_work(|| stream.push(&piece))?;
                if !audio.is_empty() && emit(audio)? == Flow::Cancel {
                    cancelled = true;
                    return Ok(Flow::Cancel);
                }
            }
        })?;
        if cancelled {
            return Ok(Outcome {
                tokens: decoded,
                stopped: false,
            });
        }
        decoded += pending.len();
        if decoded == 0 {
            return Err(Error::Input(
                "T3 generated no speech tokens for this text".into(),
            ));
        }
        let tail = device_work(|| -> Result<Vec<f32>> {
            let mut tail = if pending.is_empty() {
                Vec::new()
            } else {
                stream.push(&pending)?
            };
            tail.extend(stream.finish()?);
            Ok(tail)
        })?;
        if !tail.is_empty() {
            emit(tail)?;
        }
        Ok(Outcome {
            tokens: decoded,
            stopped: generated.stopped,
        })
    }

    /// A request for a decode batch ([`crate::t3::T3Batch`]): `voice`'s conditioning with
    /// `options`' exaggeration, and its sampling controls and draws.
    pub fn t3_request(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &GenerateOptions,
        noise: Box<dyn SamplingNoise>,
    ) -> Result<Request> {
        Ok(Request {
            cond: self.t3_cond(voice, options)?,
            text_tokens: text_tokens.to_vec(),
            options: options.sampling,
            noise,
        })
    }

    /// T3's whole generation for `text_tokens` in `voice` (what `synthesize` decodes; the
    /// raw tokens, stop token cut, for comparing a run with upstream's).
    pub fn generate_tokens(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &GenerateOptions,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Generated> {
        let cond = self.t3_cond(voice, options)?;
        self.t3.generate(
            &cond,
            text_tokens,
            &options.sampling,
            noise,
            16,
            &mut |_| Ok(Flow::Continue),
        )
    }

    /// The whole audio of T3's `text_tokens` in `voice`, decoded in one S3Gen call.
    pub fn synthesize(
        &self,
        text_tokens: &[u32],
        voice: &Conditionals,
        options: &GenerateOptions,
        seed: u64,
        noise: &mut dyn SamplingNoise,
    ) -> Result<(Vec<f32>, Outcome)> {
        let generated = self.generate_tokens(text_tokens, voice, options, noise)?;
        self.decode(&generated, voice, seed)
    }

    /// The audio of a whole generation (T3's tokens, from here or a decode batch).
    pub fn decode(
        &self,
        generated: &Generated,
        voice: &Conditionals,
        seed: u64,
    ) -> Result<(Vec<f32>, Outcome)> {
        let tokens = speech_tokens(&generated.tokens, self.speech_codes());
        if tokens.is_empty() {
            return Err(Error::Input(
                "T3 generated no speech tokens for this text".into(),
            ));
        }
        let audio = device_work(|| match &self.flow_batch {
            Some(b) => self.s3gen.synthesize_batched(&tokens, &voice.gen, seed, b),
            None => self.s3gen.synthesize(&tokens, &voice.gen, seed),
        })?;
        Ok((
            audio,
            Outcome {
                tokens: tokens.len(),
                stopped: generated.stopped,
            },
        ))
    }

    /// Tokens S3Gen decodes: those below T3's start token (6561 released), as upstream keeps
    /// `speech_tokens < 6561`; T3 can sample the ids above, which carry no sound.
    fn speech_codes(&self) -> u32 {
        self.t3.config().start_speech_token
    }

    /// `voice`'s T3 conditioning with the requested exaggeration.
    fn t3_cond(
        &self,
        voice: &Conditionals,
        options: &GenerateOptions,
    ) -> Result<crate::t3::T3Cond> {
        if !(0.0..=2.0).contains(&options.exaggeration) || !options.exaggeration.is_finite() {
            return Err(Error::Input(format!(
                "exaggeration: {} is outside 0..=2",
                options.exaggeration
            )));
        }
        let mut cond = prompt_within(&voice.t3, self.t3.config().speech_cond_prompt_len)?;
        cond.emotion_adv = options.exaggeration;
        Ok(cond)
    }
}

/// `cond` with its prompt's speech tokens cut to T3's `limit` (a voice may carry more).
pub(crate) fn prompt_within(cond: &crate::t3::T3Cond, limit: usize) -> Result<crate::t3::T3Cond> {
    let mut cond = cond.clone();
    if let Some(tokens) = &cond.cond_prompt_speech_tokens {
        if tokens.dim(1)? > limit {
            cond.cond_prompt_speech_tokens = Some(tokens.narrow(1, 0, limit)?);
        }
    }
    Ok(cond)
}

/// `dir`'s `ferrovox-voice.json` read as `T` (the sizes it declares), with the JSON itself;
/// `None` without one. An unreadable or malformed file is named.
pub(crate) fn marker_sizes<T: serde::de::DeserializeOwned>(
    dir: &Path,
) -> Result<Option<(T, serde_json::Value)>> {
    let marker = dir.join("ferrovox-voice.json");
    if !marker.is_file() {
        return Ok(None);
    }
    let bad = |reason: String| Error::Config(format!("{}: {reason}", marker.display()));
    let text = std::fs::read_to_string(&marker).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let sizes = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
    Ok(Some((sizes, value)))
}

/// A model directory's built-in voice: upstream's `conds.pt`, else ferrovox's
/// `conds.safetensors`; `None` when it has neither.
pub(crate) fn builtin_voice(dir: &Path, device: &Device) -> Result<Option<Conditionals>> {
    let (pt, st) = (dir.join("conds.pt"), dir.join("conds.safetensors"));
    if pt.is_file() {
        Conditionals::load_pt(&pt, device).map(Some)
    } else if st.is_file() {
        Conditionals::load(&st, device).map(Some)
    } else {
        Ok(None)
    }
}

/// The tokens S3Gen decodes from T3's output: those below the start token, as `tts.py` keeps
/// `speech_tokens < 6561`. (Upstream's `drop_invalid_tokens` also drops everything before a
/// start token T3 samples mid-run; a stream has played that audio by then, so both paths here
/// drop only the token, and streamed and one-shot audio stay the same.)
pub fn speech_tokens(generated: &[u32], start_token: u32) -> Vec<u32> {
    generated
        .iter()
        .copied()
        .filter(|&t| t < start_token)
        .collect()
}
