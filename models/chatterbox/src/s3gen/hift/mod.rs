//! HiFT, S3Gen's vocoder (`mel2wav`, upstream `s3gen/hifigan.py` and `s3gen/f0_predictor.py`):
//! 80-bin mel at 50 frames/s to 24 kHz audio. Network layers run in Candle; the 16-point STFT
//! and iSTFT run on the host through `ferrovox-audio` on the CPU, and as convolutions with a
//! DFT basis on other devices. The sine source runs on the host on every device.

mod config;
mod conv;
mod conv_stft;
pub mod f0_predictor;
mod generator;
pub mod resblock;
pub mod source;

pub use config::{F0PredictorConfig, HiftConfig, IstftParams};
pub use conv::fold_weight_norm;
pub use f0_predictor::ConvRnnF0Predictor;
pub use generator::{HiftGenerator, HiftOutput};
pub use resblock::{ResBlock, Snake};
pub use source::{
    RecordedSourceNoise, SeededSourceNoise, SineGen, SinePhase, SourceModuleHnNsf, SourceNoise,
};
