//! Synthesis flags shared by `say` and `serve`.

use ferrovox_engine::SynthesisOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct VoiceOptions {
    /// Frames per phoneme scale: above 1 is slower speech (default: the voice's).
    #[arg(long, env = "FERROVOX_LENGTH_SCALE")]
    length_scale: Option<f64>,
    /// Speaking rate, the inverse of the length scale.
    #[arg(long, env = "FERROVOX_SPEED", conflicts_with = "length_scale")]
    speed: Option<f64>,
    /// Prior noise scale (default: the voice's).
    #[arg(long, env = "FERROVOX_NOISE_SCALE")]
    noise_scale: Option<f64>,
    /// Duration noise scale (default: the voice's).
    #[arg(long, env = "FERROVOX_NOISE_W")]
    noise_w: Option<f64>,
    /// Seconds of silence after each sentence.
    #[arg(long, env = "FERROVOX_SENTENCE_SILENCE", default_value_t = 0.2)]
    sentence_silence: f64,
    /// Seed of the synthesis noise.
    #[arg(long, env = "FERROVOX_SEED", default_value_t = 0)]
    seed: u64,
    /// Spell out numbers, currency, dates, times and abbreviations first (English).
    #[arg(long, env = "FERROVOX_NORMALIZE")]
    normalize: bool,
}

impl VoiceOptions {
    /// The engine's options, range-checked by the engine's own validation.
    pub fn options(&self) -> anyhow::Result<SynthesisOptions> {
        if self.speed.is_some_and(|s| s <= 0.0 || s.is_nan()) {
            anyhow::bail!("--speed must be positive");
        }
        let options = SynthesisOptions {
            length_scale: self.length_scale.or(self.speed.map(|s| 1.0 / s)),
            noise_scale: self.noise_scale,
            noise_w: self.noise_w,
            speaker: None,
            unit_silence: self.sentence_silence,
            seed: self.seed,
            normalize: self.normalize,
        };
        if let Err(ferrovox_engine::EngineError::InvalidOption { field, reason }) =
            options.validate()
        {
            let flag = match field {
                "length_scale" if self.speed.is_some() => "speed",
                "unit_silence" => "sentence-silence",
                f => f,
            };
            anyhow::bail!("--{} {reason}", flag.replace('_', "-"));
        }
        Ok(options)
    }
}
