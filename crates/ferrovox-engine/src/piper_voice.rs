//! Piper voices as a [`TtsModel`]: espeak-ng phonemes → Piper ids → VITS.

use std::path::Path;

use candle_core::Device;
use ferrovox_text::{EspeakPhonemizer, PhonemeIdMap};
use ferrovox_vits::piper::{self, PiperVoiceConfig};
use ferrovox_vits::VitsModel;

use ferrovox_voices::Family;

use crate::vits_voice::{units_from_chunks, VitsFrontend, VitsVoice};
use crate::{EngineError, Unit};

/// Piper's front end: espeak-ng phonemes and the voice's phoneme-id map.
#[derive(Debug)]
pub struct PiperFrontend {
    config: PiperVoiceConfig,
    ids: PhonemeIdMap,
    phonemizer: EspeakPhonemizer,
}

/// A loaded Piper voice.
pub type PiperVoice = VitsVoice<PiperFrontend>;

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
        Ok(VitsVoice {
            id: id.to_string(),
            model,
            frontend: PiperFrontend {
                config: voice,
                ids,
                phonemizer,
            },
        })
    }
}

impl VitsFrontend for PiperFrontend {
    fn family(&self) -> Family {
        Family::Piper
    }

    fn units(&self, text: &str) -> Result<Vec<Unit>, EngineError> {
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

    fn languages(&self, _: &str) -> Vec<String> {
        self.config.espeak.iter().map(|e| e.voice.clone()).collect()
    }

    fn sample_rate(&self, _: &VitsModel) -> u32 {
        self.config.audio.sample_rate
    }

    fn speakers(&self, _: &VitsModel) -> usize {
        self.config.num_speakers.unwrap_or(1).max(1)
    }
}
