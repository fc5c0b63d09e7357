//! Chatterbox's S3Gen: 25 Hz speech tokens plus a speaker's reference (prompt tokens, prompt
//! mel, x-vector) to 24 kHz audio. Modules mirror upstream's `chatterbox.models.s3gen` and load
//! the released `s3gen.safetensors` under its own keys (`flow.*`, `mel2wav.*`).

pub mod basic_transformer;
pub mod cfm;
pub mod encoder;
mod error;
pub mod estimator;
pub mod flow;
mod flow_config;
pub mod hift;
pub mod rel_attention;
mod s3gen;
mod streaming;

pub use error::{Error, Result};
pub use flow::{Flow, FlowEncoding};
pub use flow_config::{CfmConfig, EncoderConfig, EstimatorConfig, FlowConfig};
pub use hift::{
    HiftConfig, HiftGenerator, HiftOutput, RecordedSourceNoise, SeededSourceNoise, SinePhase,
    SourceNoise,
};
pub use s3gen::{
    trim_fade, FrameSourceNoise, S3Gen, S3GenConfig, S3GenNoise, SpeakerReference, UtteranceNoise,
    SAMPLE_RATE,
};
pub use streaming::{S3GenStream, VocoderContext, VocoderStream};
