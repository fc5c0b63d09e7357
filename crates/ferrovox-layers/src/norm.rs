//! Layer norm over the channel axis of `[batch, channels, time]` tensors.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::use_cpu_kernels;

/// `torch.nn.LayerNorm(channels)` applied to the channels of `[b, c, t]`.
#[derive(Debug, Clone)]
pub struct ChannelLayerNorm {
    inner: candle_nn::LayerNorm,
    /// The CPU kernel, which normalises channels in place of a transpose.
    packed: Option<ferrovox_kernels::ChannelNorm>,
}

impl ChannelLayerNorm {
    /// Loads `weight` and `bias` `[channels]`.
    pub fn new(vb: VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        let inner = candle_nn::layer_norm(channels, eps, vb)?;
        let packed = if use_cpu_kernels(inner.weight()) {
            let bias = match inner.bias() {
                Some(b) => b.to_vec1()?,
                None => vec![0.0; channels],
            };
            Some(ferrovox_kernels::ChannelNorm::new(
                inner.weight().to_vec1()?,
                bias,
                eps,
            )?)
        } else {
            None
        };
        Ok(Self { inner, packed })
    }

    /// `gelu(norm(x))` (torch's exact GELU), one pass on the CPU.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x.contiguous()?.apply_op1(op.clone().with_gelu());
        }
        self.forward(x)?.gelu_erf()
    }
}

impl Module for ChannelLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x.contiguous()?.apply_op1(op.clone());
        }
        // Candle's fused layer norm needs the normalised axis last and contiguous.
        self.inner
            .forward(&x.transpose(1, 2)?.contiguous()?)?
            .transpose(1, 2)
    }
}
