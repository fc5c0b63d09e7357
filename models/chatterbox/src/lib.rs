//! Chatterbox (Resemble AI) on Candle. Modules mirror upstream's `chatterbox.models` packages
//! and load the released checkpoints under their own keys:
//!
//! | module | upstream package | checkpoint |
//! |---|---|---|
//! | [`t3`] | `chatterbox.models.t3` | `t3_cfg.safetensors` |
//! | [`s3gen`] | `chatterbox.models.s3gen` | `s3gen.safetensors` (`flow.*`, `mel2wav.*`) |
//! | [`tokenizer`] | `chatterbox.models.tokenizers`, `tts.punc_norm` | `tokenizer.json` |
//! | [`voice_encoder`] | `chatterbox.models.voice_encoder` | `ve.safetensors` |
//! | [`campplus`] | `chatterbox.models.s3gen.xvector` (CAMPPlus) | `s3gen.safetensors` (`speaker_encoder.*`) |
//! | [`s3tokenizer`] | `chatterbox.models.s3tokenizer` (over s3tokenizer's `S3TokenizerV2`) | `s3gen.safetensors` (`tokenizer.*`) |
//! | [`cloning`] | `tts.py` (`prepare_conditionals`), `s3gen/s3gen.py` (`embed_ref`) | `ve.safetensors`, `s3gen.safetensors` (`tokenizer.*`, `speaker_encoder.*`) |
//!
//! [`ChatterboxTts`] mirrors `tts.py` (the model's files together, text to audio, whole or
//! streamed), [`Conditionals`] its voice (`conds.pt`) and [`VoiceCloner`] its
//! `prepare_conditionals` (a reference clip to a voice, with `s3gen.py`'s `embed_ref`).

pub mod campplus;
mod checkpoint;
pub mod cloning;
mod conditionals;
mod error;
mod pickle_scan;
pub mod s3gen;
pub mod s3tokenizer;
pub mod t3;
pub mod tokenizer;
mod tts;
mod turbo_tts;
pub mod voice_encoder;

pub use cloning::{ReferenceAudio, ReferenceRule, VoiceCloner};
pub use conditionals::Conditionals;
pub use error::{Error, Result};
pub use ferrovox_layers::RowFormat;
pub use s3gen::{
    trim_fade, CfmConfig, EncoderConfig, EstimatorConfig, Flow, FlowBatchConfig, FlowBatchStats,
    FlowBatcher, FlowConfig, FlowEncoding, FrameSourceNoise, HiftConfig, HiftGenerator, HiftOutput,
    RecordedSourceNoise, S3Gen, S3GenConfig, S3GenNoise, S3GenStream, SeededSourceNoise, SinePhase,
    SourceNoise, SpeakerReference, UtteranceNoise, VocoderContext, VocoderStream, SAMPLE_RATE,
};
pub use tts::{
    cpu_bf16_products, cpu_step_weights, speech_tokens, ChatterboxTts, Generate, GenerateOptions,
    Outcome, TextFrontEnd, CPU_STEP_WEIGHTS, MODEL_FILES, MTL_T3, MTL_T3_V2, MTL_VOCAB,
    STREAM_CHUNKS,
};
pub use turbo_tts::{
    TurboSize, TurboTts, GUARD_FLOOR, GUARD_TOKENS_PER_TEXT_TOKEN, NANO_T3, S3GEN_SILENCE,
    TURBO_S3GEN, TURBO_T3,
};
