//! S3Gen (upstream `chatterbox.models.s3gen`): 25 Hz speech tokens plus a speaker's reference
//! (prompt tokens, prompt mel, x-vector) to 24 kHz audio, loading the released
//! `s3gen.safetensors` under its own keys (`flow.*`, `mel2wav.*`).
//!
//! | module | upstream |
//! |---|---|
//! | [`token2wav`] | `s3gen/s3gen.py` (`S3Token2Wav`, exported as `S3Gen`) |
//! | [`flow`], [`flow_config`] | `s3gen/flow.py` (`CausalMaskedDiffWithXvec`), `s3gen/configs.py` |
//! | [`encoder`] | `s3gen/transformer/upsample_encoder.py` |
//! | [`rel_attention`] | `s3gen/transformer/attention.py`, `embedding.py` |
//! | [`cfm`] | `s3gen/flow_matching.py` (`CausalConditionalCFM`) |
//! | [`estimator`] | `s3gen/decoder.py` (`ConditionalDecoder`) |
//! | [`basic_transformer`] | `s3gen/matcha/transformer.py` |
//! | [`hift`] | `s3gen/hifigan.py`, `s3gen/f0_predictor.py` |
//! | [`flow_batch`] | none: concurrent utterances' flow runs as one batch |
//! | [`streaming`] | none: upstream 0.1.7's streaming path raises; this follows CosyVoice2's |

pub mod basic_transformer;
pub mod cfm;
pub mod encoder;
pub mod estimator;
pub mod flow;
pub mod flow_batch;
pub mod flow_config;
pub mod hift;
pub mod rel_attention;
pub mod streaming;
pub mod token2wav;

pub use flow::{Flow, FlowEncoding};
pub use flow_batch::{FlowBatchConfig, FlowBatchStats, FlowBatcher, StreamTicket};
pub use flow_config::{CfmConfig, EncoderConfig, EstimatorConfig, FlowConfig};
pub use hift::{
    HiftConfig, HiftGenerator, HiftOutput, RecordedSourceNoise, SeededSourceNoise, SinePhase,
    SourceNoise,
};
pub use streaming::{S3GenStream, VocoderContext, VocoderStream};
pub use token2wav::{
    trim_fade, FrameSourceNoise, S3Gen, S3GenConfig, S3GenNoise, SpeakerReference, UtteranceNoise,
    SAMPLE_RATE,
};
