//! Every VITS-based voice as a [`TtsModel`] ([`VitsVoice`], whatever its text front end), and
//! MMS-TTS checkpoints (transformers `VitsModel` directories, e.g. `facebook/mms-tts-eng`).

use std::path::Path;

use candle_core::Device;
use ferrovox_text::{chunk_text, split_sentences};
use ferrovox_vits::tokenizer::MmsTokenizer;
use ferrovox_vits::{PerItemNoise, SynthesisParams, TokenBatch, VitsModel};
use ferrovox_voices::Family;

use crate::model::{check_language, check_range};
use crate::{BatchKey, EngineError, SynthesisOptions, TtsModel, Unit};

/// Longest piece of text phonemized or tokenized at once; longer sentences are cut at clauses
/// and crossfaded, which bounds memory and latency for inputs of any length.
pub(crate) const MAX_CHUNK_CHARS: usize = 500;

/// Cuts `text` into chunks of at most [`MAX_CHUNK_CHARS`] and turns each into units with
/// `sentences` (one id sequence per sentence; empty ones are skipped). The last unit of a chunk
/// cut inside a sentence is marked so the joiner crossfades it into the next.
pub(crate) fn units_from_chunks(
    text: &str,
    mut sentences: impl FnMut(&str) -> Result<Vec<Vec<u32>>, EngineError>,
) -> Result<Vec<Unit>, EngineError> {
    if text.trim().is_empty() {
        return Err(EngineError::EmptyInput("the text is empty".into()));
    }
    let mut units = Vec::new();
    for chunk in chunk_text(text, MAX_CHUNK_CHARS) {
        let first = units.len();
        units.extend(
            sentences(chunk.text)?
                .into_iter()
                .filter(|ids| !ids.is_empty())
                .map(Unit::sentence),
        );
        if !chunk.ends_sentence && units.len() > first {
            units.last_mut().expect("just pushed").ends_sentence = false;
        }
    }
    Ok(units)
}

/// The model's own noise and length settings, overridden by `options`; OpenAI's `speed`
/// divides the length scale (the voice's own, or the one asked for).
fn params(model: &VitsModel, options: &SynthesisOptions) -> SynthesisParams {
    let defaults = SynthesisParams::from_config(model.config());
    let o = &options.vits;
    SynthesisParams {
        noise_scale: o.noise_scale.unwrap_or(defaults.noise_scale),
        noise_scale_duration: o.noise_w.unwrap_or(defaults.noise_scale_duration),
        length_scale: o.length_scale.unwrap_or(defaults.length_scale)
            / options.speed.unwrap_or(1.0),
    }
}

/// What a VITS voice's text front end provides: units from text, and what it says about the
/// voice.
pub(crate) trait VitsFrontend: Send + Sync + std::fmt::Debug + 'static {
    fn family(&self) -> Family;
    fn units(&self, text: &str) -> Result<Vec<Unit>, EngineError>;
    fn languages(&self, id: &str) -> Vec<String>;
    fn sample_rate(&self, model: &VitsModel) -> u32;
    fn speakers(&self, model: &VitsModel) -> usize;
}

/// A VITS model behind a text front end (Piper's phonemizer, MMS's character tokenizer).
#[derive(Debug)]
pub struct VitsVoice<F> {
    pub(crate) id: String,
    pub(crate) model: VitsModel,
    pub(crate) frontend: F,
}

impl<F> VitsVoice<F> {
    /// The underlying model.
    pub fn model(&self) -> &VitsModel {
        &self.model
    }
}

#[allow(private_bounds)]
impl<F: VitsFrontend> TtsModel for VitsVoice<F> {
    fn id(&self) -> &str {
        &self.id
    }

    fn family(&self) -> Family {
        self.frontend.family()
    }

    fn sample_rate(&self) -> u32 {
        self.frontend.sample_rate(&self.model)
    }

    fn speakers(&self) -> usize {
        self.frontend.speakers(&self.model)
    }

    fn languages(&self) -> Vec<String> {
        self.frontend.languages(&self.id)
    }

    fn validate(&self, options: &SynthesisOptions) -> Result<(), EngineError> {
        if let Some(c) = &options.cloned {
            return Err(EngineError::InvalidOption {
                field: "voice",
                reason: format!(
                    "`{}` is a VITS voice, which speaks no cloned voice (`{}` is for {})",
                    self.id(),
                    c.id,
                    c.family.name()
                ),
            });
        }
        if let Some(field) = options.chatterbox.first_set() {
            return Err(EngineError::InvalidOption {
                field,
                reason: format!("does not apply to voice `{}` ({})", self.id, self.family()),
            });
        }
        let o = &options.vits;
        check_range("length_scale", o.length_scale, 0.1, 10.0)?;
        check_range("noise_scale", o.noise_scale, 0.0, 2.0)?;
        check_range("noise_w", o.noise_w, 0.0, 2.0)?;
        let speakers = self.speakers() as u32;
        check_range("speaker", o.speaker, 0, speakers - 1)?;
        check_language(self, options)
    }

    fn batch_key(&self, options: &SynthesisOptions) -> BatchKey {
        let o = &options.vits;
        vec![
            o.length_scale.unwrap_or(-1.0).to_bits(),
            o.noise_scale.unwrap_or(-1.0).to_bits(),
            o.noise_w.unwrap_or(-1.0).to_bits(),
            o.speaker.map_or(u64::MAX, u64::from),
            options.speed.unwrap_or(1.0).to_bits(),
        ]
    }

    fn prepare(&self, text: &str, _: &SynthesisOptions) -> Result<Vec<Unit>, EngineError> {
        self.frontend.units(text)
    }

    fn synthesize_units(
        &self,
        units: &[Unit],
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        synthesize_vits(&self.model, units, options)
    }

    fn stream_unit(
        &self,
        unit: &Unit,
        options: &SynthesisOptions,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        synthesize_vits_early(&self.model, unit, options, emit)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Runs `units` through `model` as one padded batch.
pub(crate) fn synthesize_vits(
    model: &VitsModel,
    units: &[Unit],
    options: &SynthesisOptions,
) -> Result<Vec<Vec<f32>>, EngineError> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let sequences: Vec<Vec<u32>> = units.iter().map(|u| u.ids.clone()).collect();
    let batch = TokenBatch::new(&sequences, model.config().pad_token_id, model.device())?;
    let speakers = options.vits.speaker.map(|s| vec![s; units.len()]);
    let out = model.forward(
        &batch,
        speakers.as_deref(),
        &params(model, options),
        &mut PerItemNoise::new(units.iter().map(|u| u.seed).collect()),
    )?;
    (0..units.len())
        .map(|i| out.audio(i).map_err(EngineError::from))
        .collect()
}

/// Frames at which a stream's first unit is cut: 16 frames (0.19 s at 22.05 kHz) go out
/// first, then up to frame 64, which is ready long before the first piece has played, then the
/// rest, which is ready before frame 64 has played (0.74 s) at the real-time factors measured
/// on one core.
pub(crate) const EARLY_CUTS: [usize; 2] = [16, 64];

/// One unit in pieces: the text encoder and durations run once, then the flow and the decoder
/// run on each piece between [`EARLY_CUTS`], each handed on before the next. The flow and the
/// decoder dominate VITS's time, so the first audio comes after a fraction of the unit's
/// synthesis; every piece sees the flow's and the decoder's receptive fields, so together they
/// are the whole-unit audio.
pub(crate) fn synthesize_vits_early(
    model: &VitsModel,
    unit: &Unit,
    options: &SynthesisOptions,
    emit: &mut dyn FnMut(Vec<f32>) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let batch = TokenBatch::new(
        std::slice::from_ref(&unit.ids),
        model.config().pad_token_id,
        model.device(),
    )?;
    let speakers = options.vits.speaker.map(|s| vec![s]);
    let prior = model.prior(
        &batch,
        speakers.as_deref(),
        &params(model, options),
        &mut PerItemNoise::new(vec![unit.seed]),
    )?;
    let frames = prior.alignment.frames[0];
    let context = model.decoder_context_frames();
    // A cut close to the end gains nothing: the next piece's context would cost more than
    // the earlier piece saves.
    let mut bounds = vec![0];
    bounds.extend(
        EARLY_CUTS
            .iter()
            .copied()
            .filter(|&c| frames >= 2 * (c + context)),
    );
    bounds.push(frames);
    // The flow, like the decoder, only reaches a few frames: each piece runs both on its
    // frames and their context alone.
    for piece in bounds.windows(2) {
        let (start, end) = (piece[0], piece[1]);
        let window = start.saturating_sub(context)..(end + context).min(frames);
        let latents = model.latents_window(&prior, 0, window)?;
        emit(model.decode_frames(&latents, 0, start..end)?)?;
    }
    Ok(())
}

/// MMS-TTS's front end: its character tokenizer.
#[derive(Debug)]
pub struct MmsFrontend {
    tokenizer: MmsTokenizer,
}

/// An MMS-TTS (transformers `VitsModel`) checkpoint with its character tokenizer.
pub type MmsVoice = VitsVoice<MmsFrontend>;

impl MmsVoice {
    /// Loads `config.json`, `model.safetensors` and `vocab.json` from `dir` onto `device`.
    pub fn load(id: &str, dir: &Path, device: &Device) -> Result<Self, EngineError> {
        let checkpoint = VitsModel::from_transformers_dir(dir, device)?;
        let tokenizer = checkpoint.tokenizer.ok_or_else(|| {
            EngineError::Unsupported(format!(
                "{} has no vocab.json: an MMS-TTS voice needs its tokenizer",
                dir.display()
            ))
        })?;
        Ok(Self {
            id: id.to_string(),
            model: checkpoint.model,
            frontend: MmsFrontend { tokenizer },
        })
    }
}

impl VitsFrontend for MmsFrontend {
    fn family(&self) -> Family {
        Family::MmsVits
    }

    fn units(&self, text: &str) -> Result<Vec<Unit>, EngineError> {
        // A sentence of characters outside the vocabulary says nothing; the whole text saying
        // nothing is an error.
        let units = units_from_chunks(text, |chunk| {
            Ok(split_sentences(chunk)
                .into_iter()
                .map(|s| self.tokenizer.encode(s))
                .collect())
        })?;
        if units.is_empty() {
            self.tokenizer.encode_checked(text)?;
        }
        Ok(units)
    }

    fn languages(&self, id: &str) -> Vec<String> {
        // MMS repositories name their language only in the id (`mms-tts-<iso639-3>`).
        id.rsplit_once("mms-tts-")
            .map(|(_, lang)| vec![lang.to_string()])
            .unwrap_or_default()
    }

    fn sample_rate(&self, model: &VitsModel) -> u32 {
        model.config().sampling_rate
    }

    fn speakers(&self, model: &VitsModel) -> usize {
        model.config().num_speakers.max(1)
    }
}
