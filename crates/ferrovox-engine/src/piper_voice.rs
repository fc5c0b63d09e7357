//! Piper voices as a [`TtsModel`]: espeak-ng phonemes → Piper ids → VITS.

use std::path::Path;

use candle_core::Device;
use ferrovox_text::{EspeakPhonemizer, PhonemeIdMap};
use ferrovox_vits::piper::{self, PiperVoiceConfig};
use ferrovox_vits::VitsModel;

use crate::vits_voice::{synthesize_vits, synthesize_vits_early, units_from_chunks};
use crate::{EngineError, SynthesisOptions, TtsModel, Unit};

/// A loaded Piper voice.
#[derive(Debug)]
pub struct PiperVoice {
    id: String,
    model: VitsModel,
    config: PiperVoiceConfig,
    ids: PhonemeIdMap,
    phonemizer: EspeakPhonemizer,
}

impl PiperVoice {
    /// Loads `<voice>.onnx` and its `.onnx.json` onto `device`.
    pub fn load(
        id: &str,
        onnx: &Path,
        config: &Path,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let (model, voice) = piper::load_voice(onnx, config, device)?;
        let ids = PhonemeIdMap::new(voice.phoneme_id_map.clone())?;
        let espeak = voice.espeak.as_ref().map_or("en-us", |e| e.voice.as_str());
        let phonemizer = EspeakPhonemizer::new(espeak)?;
        Ok(Self {
            id: id.to_string(),
            model,
            config: voice,
            ids,
            phonemizer,
        })
    }

    /// The underlying model.
    pub fn model(&self) -> &VitsModel {
        &self.model
    }
}

impl TtsModel for PiperVoice {
    fn id(&self) -> &str {
        &self.id
    }

    fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    fn speakers(&self) -> usize {
        self.config.num_speakers.unwrap_or(1).max(1)
    }

    fn languages(&self) -> Vec<String> {
        self.config.espeak.iter().map(|e| e.voice.clone()).collect()
    }

    fn prepare(&self, text: &str) -> Result<Vec<Unit>, EngineError> {
        units_from_chunks(text, |chunk| {
            let mut sentences = Vec::new();
            for sentence in self.phonemizer.phonemize(chunk)? {
                // Piper drops phonemes its map lacks; so does ferrovox, with a warning.
                let (ids, missing) = self.ids.ids_lenient(&sentence.phonemes);
                if !missing.is_empty() {
                    tracing::warn!(
                        ?missing,
                        "phonemes missing from the voice's map were dropped"
                    );
                }
                sentences.push(ids.iter().map(|&i| i as u32).collect());
            }
            Ok(sentences)
        })
    }

    fn synthesize_units(
        &self,
        units: &[Unit],
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        synthesize_vits(&self.model, units, options)
    }

    fn synthesize_unit_early(
        &self,
        unit: &Unit,
        options: &SynthesisOptions,
        emit: &mut dyn FnMut(Vec<f32>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        synthesize_vits_early(&self.model, unit, options, emit)
    }
}
