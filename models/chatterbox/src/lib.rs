//! Chatterbox (Resemble AI) on Candle. Modules mirror upstream's `chatterbox.models` packages
//! and load the released checkpoints under their own keys:
//!
//! | module | upstream package | checkpoint |
//! |---|---|---|
//! | [`t3`] | `chatterbox.models.t3` | `t3_cfg.safetensors` |
//! | [`s3gen`] | `chatterbox.models.s3gen` | `s3gen.safetensors` (`flow.*`, `mel2wav.*`) |
//! | [`tokenizer`] | `chatterbox.models.tokenizers`, `tts.punc_norm` | `tokenizer.json` |
//!
//! [`ChatterboxTts`] mirrors `tts.py` (the model's files together, text to audio, whole or
//! streamed) and [`Conditionals`] its voice (`conds.pt`). The voice encoder (`voice_encoder/`),
//! the S3 tokenizer (`s3tokenizer/`) and CAMPPlus (`campplus/`, upstream's `xvector.py`) take
//! their places beside them as they are ported.

mod checkpoint;
mod conditionals;
mod error;
pub mod s3gen;
pub mod t3;
pub mod tokenizer;
mod tts;

pub use conditionals::Conditionals;
pub use error::{Error, Result};
pub use s3gen::{
    trim_fade, CfmConfig, EncoderConfig, EstimatorConfig, Flow, FlowConfig, FlowEncoding,
    FrameSourceNoise, HiftConfig, HiftGenerator, HiftOutput, RecordedSourceNoise, S3Gen,
    S3GenConfig, S3GenNoise, S3GenStream, SeededSourceNoise, SinePhase, SourceNoise,
    SpeakerReference, UtteranceNoise, VocoderContext, VocoderStream, SAMPLE_RATE,
};
pub use tts::{speech_tokens, ChatterboxTts, GenerateOptions, Outcome, MODEL_FILES, STREAM_CHUNKS};
