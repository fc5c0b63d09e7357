//! The torch layers ferrovox's model ports are built from, loaded from a `VarBuilder` under
//! torch's own parameter names, each running on ferrovox's kernels where one applies and on
//! Candle's ops elsewhere: one dispatch layer every model uses, as candle-transformers'
//! `with_tracing` serves its models.
//!
//! | layer | CPU (f32) | CUDA | elsewhere |
//! |---|---|---|---|
//! | [`Conv1d`] (stride 1, ungrouped) | `PackedConv1d` (Winograd / direct / per-tap GEMM) | `CudaConv1d`, else `GemmConv1d` for batches | Candle's `conv1d`; pointwise as a matmul |
//! | [`Conv1d`] (depthwise) | `DepthwiseConv1d` | one multiply-add per tap | one multiply-add per tap |
//! | [`Conv1d`] (strided or grouped) | Candle's `conv1d` | Candle's `conv1d` | Candle's `conv1d` |
//! | [`ConvTranspose1d`] | `PackedConvTranspose1d` | `CudaConv1d` (polyphase), else `GemmConvTranspose1d` | Candle's unpadded transposed conv, cropped |
//! | [`ChannelLayerNorm`] | `ChannelNorm` (+GELU fused) | Candle's layer norm over a transpose | same |
//! | [`linear`] (≤ 8 rows) | `few_rows_matmul` (the weight read in place) | Candle's matmul | Candle's matmul |
//! | [`tanh`], [`gated_tanh`], [`gelu_erf`], [`gelu_tanh`], [`mish`] | `Tanh`, `GatedTanh`, `Activation` | Candle's ops | Candle's ops |
//!
//! Weight norm ([`weight_normed`]) is folded at load, in one of two ways ([`WeightNormFold`]).

mod activation;
mod channels;
mod conv;
mod conv_transpose;
mod linear;
mod norm;
mod weight_norm;

pub use activation::{gated_tanh, gelu_erf, gelu_tanh, leaky_relu, mish, tanh};
pub use channels::{flip_channels, split_channels};
pub use conv::{Conv1d, ConvSpec};
pub use conv_transpose::ConvTranspose1d;
pub use ferrovox_kernels::RowFormat;
pub use linear::{linear, StepLinear};
pub use norm::ChannelLayerNorm;
pub use weight_norm::{fold_weight_norm_f64, scaled, weight_normed, WeightNormFold};

use candle_core::{DType, Device, Tensor};

/// Whether an op on `t` (a layer's weight or its input) should run ferrovox's CPU kernels: f32
/// on the CPU, kernels not switched off.
pub fn use_cpu_kernels(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && ferrovox_kernels::enabled()
}
