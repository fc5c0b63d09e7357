//! The trait every model family implements.

use crate::EngineError;

/// What a model synthesizes in one piece: a sentence's token ids for VITS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Model input ids.
    pub ids: Vec<u32>,
    /// Whether the unit ends a sentence: its audio is followed by the sentence silence. A unit
    /// cut from inside a long sentence is crossfaded into the next one instead.
    pub ends_sentence: bool,
}

impl Unit {
    /// A whole sentence.
    pub fn sentence(ids: Vec<u32>) -> Self {
        Self {
            ids,
            ends_sentence: true,
        }
    }
}

/// Per-request synthesis controls; `None` takes the voice's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SynthesisOptions {
    /// Frames per phoneme scale (above 1 is slower).
    pub length_scale: Option<f64>,
    /// Prior noise scale.
    pub noise_scale: Option<f64>,
    /// Duration noise scale.
    pub noise_w: Option<f64>,
    /// Speaker of a multi-speaker voice.
    pub speaker: Option<u32>,
    /// Silence after each unit, in seconds.
    pub unit_silence: f64,
    /// Seed of the synthesis noise.
    pub seed: u64,
    /// Spell out numbers, currency, dates, times and abbreviations (English) before the
    /// voice's own front end sees the text.
    pub normalize: bool,
}

impl SynthesisOptions {
    /// Checks ranges before any work is queued.
    pub fn validate(&self) -> Result<(), EngineError> {
        let check = |field: &'static str, v: Option<f64>, lo: f64, hi: f64| match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(EngineError::InvalidOption {
                field,
                reason: format!("{x} is outside {lo}..={hi}"),
            }),
            _ => Ok(()),
        };
        check("length_scale", self.length_scale, 0.1, 10.0)?;
        check("noise_scale", self.noise_scale, 0.0, 2.0)?;
        check("noise_w", self.noise_w, 0.0, 2.0)?;
        check("unit_silence", Some(self.unit_silence), 0.0, 10.0)
    }
}

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

/// A text-to-speech model as the engine serves it.
pub trait TtsModel: Send + Sync {
    /// The voice id.
    fn id(&self) -> &str;
    /// Output sample rate.
    fn sample_rate(&self) -> u32;
    /// Number of speakers (1 for single-speaker voices).
    fn speakers(&self) -> usize;
    /// Language tags the voice speaks.
    fn languages(&self) -> Vec<String>;
    /// Splits text into units, in order (sentences for VITS).
    fn prepare(&self, text: &str) -> Result<Vec<Unit>, EngineError>;
    /// Synthesizes units as one batch; one waveform per unit, each its own length.
    fn synthesize_units(
        &self,
        units: &[Unit],
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError>;

    /// Synthesizes one unit for a stream, handing its audio to `emit` in order, in as many
    /// pieces as the model can produce early (VITS decodes its first frames ahead of the rest,
    /// so a stream starts sooner). The pieces continue each other sample for sample and
    /// together equal the unit's [`TtsModel::synthesize_units`] audio. Default: one piece.
    fn synthesize_unit_early(
        &self,
        unit: &Unit,
        options: &SynthesisOptions,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        emit(one_unit(self, unit, options)?)
    }

    /// Text to audio in one piece.
    fn synthesize(&self, text: &str, options: &SynthesisOptions) -> Result<Audio, EngineError> {
        crate::stream::collect(self.sample_rate(), |sink| {
            crate::stream::stream_units(
                self,
                text,
                options,
                crate::stream::FirstUnit::Whole,
                &mut |unit| one_unit(self, unit, options),
                sink,
            )
        })
    }

    /// Text to audio, handing each unit's audio (joined to its neighbours: sentence silence,
    /// or a crossfade where a long sentence was cut) to `sink` as soon as it is ready; the
    /// first unit through [`TtsModel::synthesize_unit_early`].
    fn stream(
        &self,
        text: &str,
        options: &SynthesisOptions,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        crate::stream::stream_units(
            self,
            text,
            options,
            crate::stream::FirstUnit::Early,
            &mut |unit| one_unit(self, unit, options),
            sink,
        )
    }
}

/// One unit's audio through [`TtsModel::synthesize_units`].
fn one_unit<M: TtsModel + ?Sized>(
    model: &M,
    unit: &Unit,
    options: &SynthesisOptions,
) -> Result<Vec<f32>, EngineError> {
    let mut out = model.synthesize_units(std::slice::from_ref(unit), options)?;
    Ok(out.pop().unwrap_or_default())
}
