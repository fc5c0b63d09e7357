//! T3 (upstream `chatterbox.models.t3`): text tokens and a voice's conditioning to 25 Hz speech
//! tokens, loading the released `t3_cfg.safetensors` under its own keys.
//!
//! | module | upstream |
//! |---|---|
//! | [`model`] | `t3/t3.py` (`T3`, `T3.inference`) |
//! | [`alignment`] | `t3/inference/alignment_stream_analyzer.py` (the multilingual v2 stop detector) |
//! | [`config`] | `t3/modules/t3_config.py`, `t3/llama_configs.py` |
//! | [`cond_enc`] | `t3/modules/cond_enc.py` |
//! | [`perceiver`] | `t3/modules/perceiver.py` |
//! | [`llama`] | transformers' `LlamaModel` |
//! | [`decode`] | how the decode steps run (fixed shapes and CUDA graphs, or dynamic) |
//! | [`batch`] | continuous batching: concurrent generations' decode steps as one batch |
//! | [`sampling`] | transformers' logits processors as `T3.inference` applies them |
//! | [`turbo`] | Turbo's T3 (`T3` on `GPT2_medium`, `T3.inference_turbo`, `tts_turbo.py`'s hyper-parameters) |
//! | [`gpt2`] | transformers' `GPT2Model` |
//! | [`turbo_sampling`] | the processors `T3.inference_turbo` applies, in its order |

pub mod alignment;
pub mod batch;
pub mod cond_enc;
pub mod config;
pub mod decode;
pub mod gpt2;
pub mod llama;
pub mod model;
pub mod perceiver;
pub mod sampling;
pub mod turbo;
pub mod turbo_sampling;

pub use alignment::{AlignmentDetector, StepReport, ALIGNED_HEADS};
pub use batch::{BatchConfig, Event, Joined, Request, T3Batch};
pub use cond_enc::T3Cond;
pub use config::{LlamaConfig, PerceiverConfig, RopeScaling, T3Config, SPEECH_CODES};
pub use decode::DecodePath;
pub use gpt2::{Gpt2, Gpt2Cache, Gpt2Config};
pub use llama::KvCache;
pub use model::{Flow, Generated, T3};
pub use sampling::{ReplayedNoise, Sampler, SamplingNoise, SamplingOptions, SeededNoise};
pub use turbo::T3Turbo;
pub use turbo_sampling::TurboOptions;
