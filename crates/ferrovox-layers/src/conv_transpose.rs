//! `torch.nn.ConvTranspose1d` as upsamplers use it, dispatched like [`crate::Conv1d`].

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_kernels::{CudaConv1d, GemmConvTranspose1d, PackedConvTranspose1d};

use crate::{activation::leaky_relu_where, scaled, use_cpu_kernels, weight_normed};

/// `torch.nn.ConvTranspose1d` with padding `(kernel - stride) / 2`, run unpadded and cropped:
/// Candle's padded transposed conv falls back to a slow generic loop.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    input_slope: Option<f64>,
    packed: Option<PackedConvTranspose1d>,
    /// ferrovox's tensor-core kernel on the polyphase form, on CUDA.
    cuda: Option<Box<CudaConv1d>>,
    gemm: Option<GemmConvTranspose1d>,
}

impl ConvTranspose1d {
    /// Loads `weight` `[in, out, kernel]` and `bias` `[out]`; the input first goes through
    /// `spec`'s leaky ReLU, if any, and is multiplied by its `input_scale` (folded into the
    /// weight). `spec`'s padding, dilation and groups do not apply: the padding is
    /// `(kernel - stride) / 2`, so the output is exactly `stride` times longer.
    pub fn new(
        vb: VarBuilder,
        (in_channels, out_channels): (usize, usize),
        kernel: usize,
        stride: usize,
        spec: crate::ConvSpec,
    ) -> Result<Self> {
        let input_slope = spec.input_leaky_relu;
        let weight = scaled(
            weight_normed(&vb, (in_channels, out_channels, kernel), spec.fold)?,
            spec.input_scale,
        )?;
        let bias = vb.get(out_channels, "bias")?;
        let padding = (kernel - stride) / 2;
        let packed = if use_cpu_kernels(&weight) {
            let op = PackedConvTranspose1d::new(&weight, Some(&bias), stride, padding)?;
            Some(match input_slope {
                Some(slope) => op.with_input_leaky_relu(slope as f32),
                None => op,
            })
        } else {
            None
        };
        let cuda = if weight.device().is_cpu() {
            None
        } else {
            CudaConv1d::transposed(&weight, &bias, stride, padding)?.map(|op| {
                Box::new(match input_slope {
                    Some(slope) => op.with_input_leaky_relu(slope as f32),
                    None => op,
                })
            })
        };
        let gemm = if weight.device().is_cpu()
            || cuda.is_some()
            || !ferrovox_kernels::gemm_conv_transpose_enabled()
        {
            None
        } else {
            Some(GemmConvTranspose1d::new(&weight, stride)?)
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            input_slope,
            packed,
            cuda,
            gemm,
        })
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x.contiguous()?.apply_op1(op.clone());
        }
        if let (Some(op), DType::F32) = (&self.cuda, x.dtype()) {
            return x.contiguous()?.apply_op1((**op).clone());
        }
        let x = &leaky_relu_where(x, self.input_slope)?;
        let (batch, _, len) = x.dims3()?;
        let (_, _, k) = self.weight.dims3()?;
        let out_len = (len - 1) * self.stride + k - 2 * self.padding;
        if let Some(gemm) = &self.gemm {
            return gemm
                .forward(x)?
                .narrow(2, self.padding, out_len)?
                .broadcast_add(&self.bias.reshape((1, (), 1))?);
        }
        // Candle 0.11.1's unpadded transposed conv mixes up items of a batch larger than one
        // (the items after the first come out wrong), so each item runs on its own.
        let full = if batch == 1 {
            x.conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)?
        } else {
            let items = (0..batch)
                .map(|i| {
                    x.narrow(0, i, 1)?
                        .conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&items, 0)?
        };
        full.narrow(2, self.padding, out_len)?
            .broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}
