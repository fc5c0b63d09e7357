//! The ferrovox engine: every model family behind one [`TtsModel`] trait, voices opened by id,
//! synthesis whole or streamed unit by unit, and a [`Batcher`] that gathers concurrent requests
//! into one batch. No HTTP, CLI or async runtime here.
//!
//! ```no_run
//! use ferrovox_engine::{open_voice, SynthesisOptions, TtsModel};
//! let voice = open_voice("en_US-joe-medium", &candle_core::Device::Cpu)?;
//! let audio = voice.synthesize("Hello from ferrovox.", &SynthesisOptions::default())?;
//! println!("{} samples at {} Hz", audio.samples.len(), audio.sample_rate);
//! # Ok::<(), ferrovox_engine::EngineError>(())
//! ```

mod batcher;
mod error;
mod model;
#[cfg(feature = "espeak")]
mod piper_voice;

pub use batcher::{Batcher, BatcherConfig, BatcherStats};
pub use error::EngineError;
pub use model::{Audio, SynthesisOptions, TtsModel, Unit};
#[cfg(feature = "espeak")]
pub use piper_voice::PiperVoice;

use std::sync::Arc;

/// Opens a voice by catalog id or directory on `device`.
#[cfg(feature = "espeak")]
pub fn open_voice(
    id: &str,
    device: &candle_core::Device,
) -> Result<Arc<dyn TtsModel>, EngineError> {
    match ferrovox_voices::resolve(id)? {
        ferrovox_voices::VoiceFiles::Piper { onnx, config } => {
            Ok(Arc::new(PiperVoice::load(id, &onnx, &config, device)?))
        }
        ferrovox_voices::VoiceFiles::Transformers { .. } => Err(EngineError::Unsupported(format!(
            "voice `{id}` is a transformers checkpoint; the engine serves Piper voices so far"
        ))),
    }
}
