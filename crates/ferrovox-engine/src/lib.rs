//! The ferrovox engine: every model family behind one [`TtsModel`] trait, voices opened by id,
//! synthesis whole or streamed unit by unit, and a [`Batcher`] that gathers concurrent requests
//! into one batch. No HTTP, CLI or async runtime here.
//!
//! One [`Engine`] per process: voices load on first use (fetched into the cache if needed) and
//! are warmed up, and every thread shares them.
//!
//! ```no_run
//! use ferrovox_engine::{Engine, EngineConfig, SynthesisOptions};
//!
//! let engine = Engine::new(EngineConfig::default());
//! let voice = engine.voice("en_US-joe-medium")?;
//! let options = SynthesisOptions { unit_silence: 0.2, ..Default::default() };
//! let audio = voice.synthesize("Hello from ferrovox. Two sentences.", &options)?;
//! println!("{:.2} s at {} Hz", audio.seconds(), audio.sample_rate);
//!
//! // Or sentence by sentence, as each is ready:
//! voice.stream("First. Second.", &options, &mut |chunk: &[f32]| {
//!     println!("{} samples", chunk.len());
//!     Ok(())
//! })?;
//! # Ok::<(), ferrovox_engine::EngineError>(())
//! ```

#![warn(missing_docs)]

mod batcher;
mod chatterbox_decoder;
mod chatterbox_voice;
mod engine;
mod error;
mod model;
mod panic;
#[cfg(feature = "espeak")]
mod piper_voice;
mod stream;
mod turbo_voice;
mod vits_voice;

pub use batcher::{Batcher, BatcherConfig, BatcherStats, BATCH_SIZE_BOUNDS};
pub use chatterbox_decoder::{DecoderStats, Generation, T3Decoder};
pub use chatterbox_voice::ChatterboxVoice;
pub use engine::{Engine, EngineConfig, Voice, WARM_UP_TEXT};
pub use error::EngineError;
pub use model::{
    check_range, Audio, BatchKey, ChatterboxOptions, ClonedVoice, Pieces, SynthesisOptions,
    TtsModel, Unit, VitsOptions,
};
#[cfg(feature = "espeak")]
pub use piper_voice::{PiperFrontend, PiperVoice};
pub use turbo_voice::TurboVoice;
pub use vits_voice::{MmsFrontend, MmsVoice, VitsVoice};

use std::sync::Arc;

/// Opens a voice by id (a catalog voice, a hub repository such as `facebook/mms-tts-eng` or
/// `chatterbox`, or a directory) on `device`, as the family its files declare. Piper voices
/// need the `espeak` feature.
pub fn open_voice(
    id: &str,
    device: &candle_core::Device,
) -> Result<Arc<dyn TtsModel>, EngineError> {
    match ferrovox_voices::resolve(id)? {
        #[cfg(feature = "espeak")]
        ferrovox_voices::VoiceFiles::Piper { onnx, config } => {
            Ok(Arc::new(PiperVoice::load(id, &onnx, &config, device)?))
        }
        #[cfg(not(feature = "espeak"))]
        ferrovox_voices::VoiceFiles::Piper { .. } => Err(EngineError::Unsupported(format!(
            "voice `{id}` is a Piper voice: build with the `espeak` feature to phonemize for it"
        ))),
        ferrovox_voices::VoiceFiles::Transformers { weights, .. } => {
            let dir = weights.parent().unwrap_or(std::path::Path::new("."));
            Ok(Arc::new(MmsVoice::load(id, dir, device)?))
        }
        ferrovox_voices::VoiceFiles::Chatterbox { dir, model } => {
            use ferrovox_voices::ChatterboxModel as M;
            if let Some(size) = match model {
                M::Turbo => Some(ferrovox_chatterbox::TurboSize::Turbo),
                M::Nano => Some(ferrovox_chatterbox::TurboSize::Nano),
                _ => None,
            } {
                return Ok(Arc::new(TurboVoice::load(id, &dir, size, device)?));
            }
            let multilingual = model == M::Multilingual;
            let tts = ferrovox_chatterbox::ChatterboxTts::from_dir_as(&dir, multilingual, device)?;
            Ok(Arc::new(ChatterboxVoice::new(id, tts)?))
        }
    }
}
