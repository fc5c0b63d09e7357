//! Chatterbox Turbo (and Nano, the same model on GPT-2 small) served as a voice: each piece of text through [`TurboTts`] on its own (no
//! guidance row, no decode batch), with the sampling controls Turbo has. The controls it lacks
//! (exaggeration, guidance, min-p) are refused by name rather than ignored as upstream does.

use std::path::Path;

use candle_core::Device;
use ferrovox_chatterbox::t3::{SeededNoise, TurboOptions};
use ferrovox_chatterbox::{Conditionals, TurboSize, TurboTts};
use ferrovox_voices::Family;

use crate::chatterbox_voice::{
    check_cloned_family, check_not_vits, text_units, voice_or, Unstopped,
};
use crate::model::{check_language, check_range};
use crate::{BatchKey, EngineError, SynthesisOptions, TtsModel, Unit};

/// Chatterbox Turbo as the engine serves it.
#[derive(Debug)]
pub struct TurboVoice {
    id: String,
    tts: TurboTts,
    /// Generations that ran to their budget (the stop guard's or the request's) unstopped.
    unstopped: Unstopped,
}

impl TurboVoice {
    /// Loads a directory laid out as the `ResembleAI/chatterbox-turbo` repository (`size`
    /// Turbo) or `ResembleAI/chatterbox-nano` (Nano).
    pub fn load(
        id: &str,
        dir: &Path,
        size: TurboSize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        Ok(Self::new(id, TurboTts::from_dir_as(dir, size, device)?))
    }

    /// Wraps a model built elsewhere.
    pub fn new(id: &str, tts: TurboTts) -> Self {
        Self {
            id: id.to_string(),
            tts,
            unstopped: Unstopped::default(),
        }
    }

    /// The model.
    pub fn tts(&self) -> &TurboTts {
        &self.tts
    }

    fn options(&self, options: &SynthesisOptions) -> TurboOptions {
        let o = &options.chatterbox;
        let d = TurboOptions::default();
        TurboOptions {
            temperature: o.temperature.unwrap_or(d.temperature),
            top_p: o.top_p.unwrap_or(d.top_p),
            repetition_penalty: o.repetition_penalty.unwrap_or(d.repetition_penalty),
            max_new_tokens: o.max_new_tokens.unwrap_or(d.max_new_tokens),
            ..d
        }
    }

    fn voice<'a>(&'a self, options: &'a SynthesisOptions) -> &'a Conditionals {
        voice_or(self.tts.builtin_voice(), options)
    }
}

impl TtsModel for TurboVoice {
    fn id(&self) -> &str {
        &self.id
    }

    fn family(&self) -> Family {
        Family::Chatterbox
    }

    fn sample_rate(&self) -> u32 {
        ferrovox_chatterbox::s3gen::SAMPLE_RATE
    }

    fn speakers(&self) -> usize {
        1
    }

    fn languages(&self) -> Vec<String> {
        vec!["en".into()]
    }

    fn validate(&self, options: &SynthesisOptions) -> Result<(), EngineError> {
        check_not_vits(&self.id, options)?;
        let o = &options.chatterbox;
        for (field, set) in [
            ("exaggeration", o.exaggeration.is_some()),
            ("cfg_weight", o.cfg_weight.is_some()),
            ("min_p", o.min_p.is_some()),
        ] {
            if set {
                return Err(EngineError::InvalidOption {
                    field,
                    reason: format!(
                        "{} has no {field} (voice `{}`); leave it out",
                        self.tts.size().name(),
                        self.id
                    ),
                });
            }
        }
        check_range("temperature", o.temperature, 1e-6, 10.0)?;
        check_range("top_p", o.top_p, 1e-6, 1.0)?;
        check_range("repetition_penalty", o.repetition_penalty, 1e-6, 10.0)?;
        check_range("max_new_tokens", o.max_new_tokens, 1, 1000)?;
        if let Some(c) = &options.cloned {
            check_cloned_family(&self.id, c)?;
        }
        check_language(self, options)
    }

    fn batch_key(&self, _: &SynthesisOptions) -> BatchKey {
        Vec::new()
    }

    fn prepare(&self, text: &str, _: &SynthesisOptions) -> Result<Vec<Unit>, EngineError> {
        text_units(text, |piece| self.tts.text_tokens(piece))
    }

    fn synthesize_units(
        &self,
        units: &[Unit],
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let turbo = self.options(options);
        let voice = self.voice(options);
        units
            .iter()
            .map(|unit| {
                let (audio, outcome) = self.tts.synthesize(
                    &unit.ids,
                    voice,
                    &turbo,
                    unit.seed,
                    &mut SeededNoise::new(unit.seed),
                )?;
                let budget = TurboTts::token_budget(unit.ids.len(), turbo.max_new_tokens);
                self.unstopped.note(&self.id, &outcome, budget);
                Ok(audio)
            })
            .collect()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![self.unstopped.counter()]
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
