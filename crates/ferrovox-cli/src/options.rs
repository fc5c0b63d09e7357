//! Synthesis flags shared by `say` and `serve`: the common ones, then each family's own. A
//! voice refuses another family's flags, naming them.

use ferrovox_engine::{ChatterboxOptions, SynthesisOptions, VitsOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct VoiceOptions {
    /// Speaking rate (OpenAI's `speed`, 0.25 to 4): each voice maps it onto its own controls
    /// (VITS divides its length scale by it).
    #[arg(long, env = "FERROVOX_SPEED")]
    speed: Option<f64>,
    /// Seconds of silence after each sentence.
    #[arg(long, env = "FERROVOX_SENTENCE_SILENCE", default_value_t = 0.2)]
    sentence_silence: f64,
    /// Seed of every random draw.
    #[arg(long, env = "FERROVOX_SEED", default_value_t = 0)]
    seed: u64,
    /// Spell out numbers, currency, dates, times and abbreviations first (English).
    #[arg(long, env = "FERROVOX_NORMALIZE")]
    normalize: bool,
    /// A language tag the voice must speak.
    #[arg(long, env = "FERROVOX_LANGUAGE")]
    language: Option<String>,
    #[command(flatten)]
    vits: VitsFlags,
    #[command(flatten)]
    chatterbox: ChatterboxFlags,
}

/// VITS voices (Piper, MMS-TTS).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "VITS voices")]
struct VitsFlags {
    /// Frames per phoneme scale: above 1 is slower speech (default: the voice's).
    #[arg(long, env = "FERROVOX_LENGTH_SCALE")]
    length_scale: Option<f64>,
    /// Prior noise scale (default: the voice's).
    #[arg(long, env = "FERROVOX_NOISE_SCALE")]
    noise_scale: Option<f64>,
    /// Duration noise scale (default: the voice's).
    #[arg(long, env = "FERROVOX_NOISE_W")]
    noise_w: Option<f64>,
}

/// Chatterbox voices (upstream's defaults when absent).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Chatterbox voices")]
struct ChatterboxFlags {
    /// Expressiveness, 0 to 2 (default 0.5).
    #[arg(long, env = "FERROVOX_EXAGGERATION")]
    exaggeration: Option<f32>,
    /// Classifier-free guidance weight, 0 to 10 (default 0.5; 0 turns it off).
    #[arg(long, env = "FERROVOX_CFG_WEIGHT")]
    cfg_weight: Option<f32>,
    /// Sampling temperature, 0 (greedy) to 10 (default 0.8).
    #[arg(long, env = "FERROVOX_TEMPERATURE")]
    temperature: Option<f32>,
    /// Nucleus sampling, above 0 to 1 (default 1).
    #[arg(long, env = "FERROVOX_TOP_P")]
    top_p: Option<f32>,
    /// Drops tokens less likely than this times the most likely (default 0.05).
    #[arg(long, env = "FERROVOX_MIN_P")]
    min_p: Option<f32>,
    /// Penalty on tokens already generated (default 1.2).
    #[arg(long, env = "FERROVOX_REPETITION_PENALTY")]
    repetition_penalty: Option<f32>,
    /// Speech tokens per piece of text before giving up on a stop (default 1000, 40 s).
    #[arg(long, env = "FERROVOX_MAX_NEW_TOKENS")]
    max_new_tokens: Option<usize>,
}

impl VoiceOptions {
    /// The engine's options (the voice range-checks them when it is known).
    pub fn options(&self) -> anyhow::Result<SynthesisOptions> {
        let options = SynthesisOptions {
            seed: self.seed,
            unit_silence: self.sentence_silence,
            normalize: self.normalize,
            language: self.language.clone(),
            speed: self.speed,
            vits: VitsOptions {
                length_scale: self.vits.length_scale,
                noise_scale: self.vits.noise_scale,
                noise_w: self.vits.noise_w,
                speaker: None,
            },
            chatterbox: ChatterboxOptions {
                exaggeration: self.chatterbox.exaggeration,
                cfg_weight: self.chatterbox.cfg_weight,
                temperature: self.chatterbox.temperature,
                top_p: self.chatterbox.top_p,
                min_p: self.chatterbox.min_p,
                repetition_penalty: self.chatterbox.repetition_penalty,
                max_new_tokens: self.chatterbox.max_new_tokens,
            },
            cloned: None,
        };
        options.validate_common().map_err(flag_error)?;
        Ok(options)
    }
}

/// An option error as the flag that set it (`--sentence-silence`, `--cfg-weight`).
pub fn flag_error(e: ferrovox_engine::EngineError) -> anyhow::Error {
    match e {
        ferrovox_engine::EngineError::InvalidOption { field, reason } => {
            let flag = match field {
                "unit_silence" => "sentence-silence",
                f => f,
            };
            anyhow::anyhow!("--{} {reason}", flag.replace('_', "-"))
        }
        other => other.into(),
    }
}
