//! VITS text-to-speech on Candle: transformers' `VitsModel` checkpoints (MMS-TTS) and Piper
//! voices, loaded into the same modules.

mod checkpoint;
mod config;
pub mod duration;
mod error;
pub mod flow;
mod graphs;
pub mod hifigan;
mod model;
pub mod noise;
pub mod onnx;
pub mod piper;
pub mod spline;
pub mod text_encoder;
pub mod tokenizer;

pub use checkpoint::TransformersCheckpoint;
pub use config::{Config, ResBlockKind};
pub use error::{Error, Result};
pub use graphs::StageGraphs;
pub use model::{
    Alignment, Latents, Prior, StageTimings, SynthesisParams, TokenBatch, VitsModel, VitsOutput,
};
pub use noise::{NoiseSource, PerItemNoise, RecordedNoise, SeededNoise};
