//! The trait every model family implements, and what a request carries.
//!
//! How the families ferrovox serves or will serve map onto it:
//!
//! | | VITS (Piper, MMS-TTS) | Chatterbox | XTTS v2 | Higgs Audio v2 |
//! |---|---|---|---|---|
//! | voice | the checkpoint (a speaker id for multi-speaker ones) | built-in `conds.pt`, or a cloned voice's conditionals | GPT conditioning latents + speaker embedding of a clone | reference audio codes + its transcript in the ChatML prompt |
//! | [`Unit`] | a sentence's phoneme or token ids | a ≤ 300-character piece's text tokens | a sentence's BPE ids | a piece's ChatML prompt ids |
//! | language | fixed by the voice | `en` (multilingual: a `[lang]` token) | a language token per request | free, in the prompt |
//! | typed options | [`VitsOptions`]: noise, noise_w, length | [`ChatterboxOptions`]: exaggeration, CFG weight, temperature, top-p, min-p, repetition penalty, max tokens | temperature, top-k, top-p, length and repetition penalties | temperature, top-k, top-p, max tokens |
//! | streaming within a unit ([`Pieces::EveryUnit`]) | no: the first unit is cut early instead | yes: S3Gen decodes T3's tokens in chunks | yes: GPT latents decoded by HiFi-GAN in chunks | yes: delay-pattern RVQ codes decoded in chunks |
//! | batching | units with equal noise/length/speaker settings share a padded batch ([`TtsModel::batch_key`]) | continuous: every request's T3 decode steps run as one batch, each with its own controls ([`TtsModel::batches_requests`]) | per request | per request |
//!
//! A unit carries its own seed, so a request's audio is the same alone or batched.

use std::any::Any;
use std::sync::Arc;

use ferrovox_voices::Family;

use crate::EngineError;

/// What a model synthesizes in one piece: a sentence's token ids for VITS, a piece of text's
/// tokens for Chatterbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Model input ids.
    pub ids: Vec<u32>,
    /// Whether the unit ends a sentence: its audio is followed by the sentence silence. A unit
    /// cut from inside a long sentence is crossfaded into the next one instead.
    pub ends_sentence: bool,
    /// The seed of this unit's random draws: the request's seed mixed with the unit's place,
    /// so a unit's audio depends neither on its batch nor on who else is in it.
    pub seed: u64,
}

impl Unit {
    /// A whole sentence (seed 0 until the engine assigns the request's).
    pub fn sentence(ids: Vec<u32>) -> Self {
        Self {
            ids,
            ends_sentence: true,
            seed: 0,
        }
    }
}

/// VITS's controls (Piper voices and MMS-TTS); `None` takes the voice's own value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VitsOptions {
    /// Frames per phoneme scale (above 1 is slower).
    pub length_scale: Option<f64>,
    /// Prior noise scale.
    pub noise_scale: Option<f64>,
    /// Duration noise scale.
    pub noise_w: Option<f64>,
    /// Speaker of a multi-speaker voice.
    pub speaker: Option<u32>,
}

impl VitsOptions {
    /// The first option that is set, by its request name.
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("length_scale", self.length_scale.is_some()),
            ("noise_scale", self.noise_scale.is_some()),
            ("noise_w", self.noise_w.is_some()),
            ("speaker", self.speaker.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

/// Chatterbox's controls (upstream's `generate` arguments); `None` takes upstream's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChatterboxOptions {
    /// 0 to 2 (default 0.5): how expressive.
    pub exaggeration: Option<f32>,
    /// Classifier-free guidance weight, 0 to 10 (default 0.5; 0 turns guidance off).
    pub cfg_weight: Option<f32>,
    /// 0 (greedy) to 10 (default 0.8).
    pub temperature: Option<f32>,
    /// Above 0 to 1 (default 1).
    pub top_p: Option<f32>,
    /// 0 to 1 (default 0.05).
    pub min_p: Option<f32>,
    /// Above 0 to 10 (default 1.2).
    pub repetition_penalty: Option<f32>,
    /// Speech tokens per piece of text before giving up on a stop (default 1000, 40 s).
    pub max_new_tokens: Option<usize>,
}

impl ChatterboxOptions {
    /// The first option that is set, by its request name.
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("exaggeration", self.exaggeration.is_some()),
            ("cfg_weight", self.cfg_weight.is_some()),
            ("temperature", self.temperature.is_some()),
            ("top_p", self.top_p.is_some()),
            ("min_p", self.min_p.is_some()),
            ("repetition_penalty", self.repetition_penalty.is_some()),
            ("max_new_tokens", self.max_new_tokens.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

/// A request's controls: what every family shares, and each family's own options. A family
/// refuses the options of another (with the option named) rather than ignoring them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SynthesisOptions {
    /// Seed of every random draw.
    pub seed: u64,
    /// Silence after each sentence, in seconds.
    pub unit_silence: f64,
    /// Spell out numbers, currency, dates, times and abbreviations (English) before the
    /// voice's own front end sees the text.
    pub normalize: bool,
    /// A language tag; a voice that does not speak it refuses the request.
    pub language: Option<String>,
    /// OpenAI's `speed`, 0.25 to 4: each family maps it onto its own controls, or refuses it.
    pub speed: Option<f64>,
    /// VITS's controls (Piper, MMS-TTS).
    pub vits: VitsOptions,
    /// Chatterbox's controls.
    pub chatterbox: ChatterboxOptions,
    /// A cloned voice to speak in instead of the model's own (its family must be the
    /// model's).
    pub cloned: Option<ClonedVoice>,
}

/// A voice made from a reference clip by a family's encoder: that family's conditioning
/// (Chatterbox: `Conditionals`), opaque to the engine, under the id the voice store gave it
/// (or a one-off clip's hash). Requests share a batch only with the same voice.
#[derive(Clone)]
pub struct ClonedVoice {
    /// The voice store's id, or a one-off clip's hash.
    pub id: String,
    /// The family whose encoder made it.
    pub family: Family,
    /// The family's conditioning (Chatterbox: `ferrovox_chatterbox::Conditionals`).
    pub prompt: Arc<dyn Any + Send + Sync>,
}

impl ClonedVoice {
    /// The conditioning as the family's own type, or `None` for another family's.
    pub fn prompt<T: 'static>(&self) -> Option<&T> {
        self.prompt.downcast_ref()
    }
}

impl std::fmt::Debug for ClonedVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClonedVoice")
            .field("id", &self.id)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClonedVoice {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.family == other.family
    }
}

/// Checks that `v`, when set, lies in `lo..=hi`.
pub fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), EngineError> {
    match v {
        Some(x) if !(x >= lo && x <= hi) => Err(EngineError::InvalidOption {
            field,
            reason: format!("{x} is outside {lo}..={hi}"),
        }),
        _ => Ok(()),
    }
}

/// Refuses a request for a language `model` does not speak (a voice that names none takes
/// any).
pub(crate) fn check_language(
    model: &dyn TtsModel,
    options: &SynthesisOptions,
) -> Result<(), EngineError> {
    let Some(asked) = options.language.as_deref() else {
        return Ok(());
    };
    let spoken = model.languages();
    let base = |tag: &str| {
        tag.split(['-', '_'])
            .next()
            .unwrap_or(tag)
            .to_ascii_lowercase()
    };
    if spoken.is_empty() || spoken.iter().any(|l| base(l) == base(asked)) {
        Ok(())
    } else {
        Err(EngineError::InvalidOption {
            field: "language",
            reason: format!(
                "voice `{}` speaks {}, not `{asked}`",
                model.id(),
                spoken.join(", ")
            ),
        })
    }
}

impl SynthesisOptions {
    /// Checks the fields every family shares.
    pub fn validate_common(&self) -> Result<(), EngineError> {
        check_range("unit_silence", Some(self.unit_silence), 0.0, 10.0)?;
        check_range("speed", self.speed, 0.25, 4.0)
    }
}

/// Which units of a stream a model synthesizes in pieces ([`TtsModel::stream_unit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// The first, for time to first audio; the rest whole (they may share batches).
    FirstUnit,
    /// Every unit: an autoregressive model's audio comes out while it is still generating.
    EveryUnit,
}

/// Options that must agree for units to share a model batch (the seed is per unit).
pub type BatchKey = Vec<u64>;

/// Mono audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// A text-to-speech model as the engine serves it. The engine's [`crate::Voice`] is the one
/// place that drives it (text → units → batches or pieces → joined audio).
pub trait TtsModel: Send + Sync {
    /// The voice id.
    fn id(&self) -> &str;
    /// The model family.
    fn family(&self) -> Family;
    /// Output sample rate.
    fn sample_rate(&self) -> u32;
    /// Number of speakers (1 for single-speaker voices).
    fn speakers(&self) -> usize;
    /// Language tags the voice speaks.
    fn languages(&self) -> Vec<String>;
    /// Checks `options` before anything is queued: the family's own ranges, and no option of
    /// another family set; each error names the field.
    fn validate(&self, options: &SynthesisOptions) -> Result<(), EngineError>;
    /// The options that must agree for units to share a batch.
    fn batch_key(&self, options: &SynthesisOptions) -> BatchKey;
    /// Splits text into units, in order.
    fn prepare(&self, text: &str, options: &SynthesisOptions) -> Result<Vec<Unit>, EngineError>;
    /// Synthesizes units as one batch; one waveform per unit, each its own length.
    fn synthesize_units(
        &self,
        units: &[Unit],
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError>;

    /// Synthesizes one unit for a stream, handing its audio to `emit` in order, in as many
    /// pieces as the model can produce early. The pieces continue each other sample for sample
    /// and together equal the unit's [`TtsModel::synthesize_units`] audio (within the bound
    /// the model states). Default: one piece.
    fn stream_unit(
        &self,
        unit: &Unit,
        options: &SynthesisOptions,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut out = self.synthesize_units(std::slice::from_ref(unit), options)?;
        emit(out.pop().unwrap_or_default())
    }

    /// Which units a stream takes through [`TtsModel::stream_unit`].
    fn pieces(&self) -> Pieces {
        Pieces::FirstUnit
    }

    /// The text and options of a warm-up or health synthesis: one the model can run with its
    /// own voice.
    fn warm_up_request(&self) -> (String, SynthesisOptions) {
        (crate::WARM_UP_TEXT.to_string(), SynthesisOptions::default())
    }

    /// Whether the model batches concurrent requests itself (continuous batching): the
    /// engine then runs each request on its caller's thread instead of through its batcher.
    fn batches_requests(&self) -> bool {
        false
    }

    /// Counters the model keeps (name, value), exported as metrics.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The model as `Any`, for callers that need a family's own methods.
    fn as_any(&self) -> &dyn Any;
}
