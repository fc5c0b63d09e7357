//! `torch.nn.Conv1d`, dispatched to the fastest op that runs its shape on its device.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_kernels::{CudaConv1d, DepthwiseConv1d, GemmConv1d, PackedConv1d};

use crate::{activation::leaky_relu_where, scaled, use_cpu_kernels, weight_normed, WeightNormFold};

/// A 1-D convolution (`torch.nn.Conv1d`) with symmetric padding.
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
    input_slope: Option<f64>,
    /// ferrovox's CPU kernel, when the weights are f32 on the CPU.
    packed: Option<PackedConv1d>,
    /// ferrovox's depthwise kernel, for `groups == channels` on the CPU.
    depthwise: Option<DepthwiseConv1d>,
    /// A depthwise conv off the CPU, one `[1, channels, 1]` weight per tap: Candle runs a
    /// grouped conv as one conv per group, hundreds of launches for a 192-channel layer.
    taps: Option<Vec<Tensor>>,
    /// ferrovox's tensor-core kernel, for an ungrouped f32 conv on CUDA.
    cuda: Option<Box<CudaConv1d>>,
    /// An ungrouped conv off the CPU as one GEMM, bias included, for batches, where the
    /// CUDA kernel does not apply.
    gemm: Option<Box<GemmConv1d>>,
}

impl Conv1d {
    /// Loads `weight` `[out, in/groups, kernel]` and `bias` `[out]` from `vb`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        let weight = scaled(
            weight_normed(
                &vb,
                (out_channels, in_channels / spec.groups, kernel),
                spec.fold,
            )?,
            spec.input_scale,
        )?;
        let bias = if spec.bias {
            Some(vb.get(out_channels, "bias")?)
        } else {
            None
        };
        let (_, _, k) = weight.dims3()?;
        // Every kernel below runs stride 1 only.
        let unit_stride = spec.stride == 1;
        // Pointwise convs stay on Candle's matmul unless the direct kernel runs them.
        let packed = if use_cpu_kernels(&weight)
            && unit_stride
            && spec.groups == 1
            && (k > 1
                || spec.input_leaky_relu.is_some()
                || ferrovox_kernels::direct_conv_available())
        {
            let mut op = PackedConv1d::new(&weight, bias.as_ref(), spec.padding, spec.dilation)?;
            if !spec.fast {
                op = op.without_winograd();
            }
            Some(match spec.input_leaky_relu {
                Some(slope) => op.with_input_leaky_relu(slope as f32),
                None => op,
            })
        } else {
            None
        };
        let depthwise = if use_cpu_kernels(&weight)
            && unit_stride
            && spec.groups > 1
            && spec.groups == in_channels
            && in_channels == out_channels
            && spec.input_leaky_relu.is_none()
        {
            Some(DepthwiseConv1d::new(
                &weight,
                bias.as_ref(),
                spec.padding,
                spec.dilation,
            )?)
        } else {
            None
        };
        let taps = if !weight.device().is_cpu()
            && unit_stride
            && spec.groups > 1
            && spec.groups == in_channels
            && in_channels == out_channels
        {
            Some(
                (0..k)
                    .map(|j| weight.narrow(2, j, 1)?.reshape((1, out_channels, 1)))
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        let cuda = if !weight.device().is_cpu() && spec.fast && unit_stride && spec.groups == 1 {
            CudaConv1d::new(&weight, bias.as_ref(), spec.padding, spec.dilation)?.map(|op| {
                Box::new(match spec.input_leaky_relu {
                    Some(slope) => op.with_input_leaky_relu(slope as f32),
                    None => op,
                })
            })
        } else {
            None
        };
        // With the CUDA kernel, a GEMM is kept as well for launches too small for it.
        let gemm = if cuda.as_ref().is_none_or(|op| op.has_long_reduction())
            && !weight.device().is_cpu()
            && spec.groups == 1
            && k > 1
            && ferrovox_kernels::gemm_conv_enabled()
        {
            Some(Box::new(GemmConv1d::new(
                &weight,
                bias.as_ref(),
                spec.padding,
                spec.dilation,
            )?))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            padding: spec.padding,
            stride: spec.stride,
            dilation: spec.dilation,
            groups: spec.groups,
            input_slope: spec.input_leaky_relu,
            packed,
            depthwise,
            taps,
            cuda,
            gemm,
        })
    }

    /// `residual + conv(x)` in one pass where a kernel allows.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x
                .contiguous()?
                .apply_op2(&residual.contiguous()?, op.clone());
        }
        if let Some(op) = self.cuda_for(x)? {
            return x
                .contiguous()?
                .apply_op2(&residual.contiguous()?, op.clone());
        }
        self.forward(x)? + residual
    }

    /// `residual + sum + conv(x)` in one pass where a kernel allows: a residual block whose
    /// output joins a running sum.
    pub fn forward_residual_sum(
        &self,
        x: &Tensor,
        residual: &Tensor,
        sum: &Tensor,
    ) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x.contiguous()?.apply_op3(
                &residual.contiguous()?,
                &sum.contiguous()?,
                op.clone(),
            );
        }
        if let Some(op) = self.cuda_for(x)? {
            return x.contiguous()?.apply_op3(
                &residual.contiguous()?,
                &sum.contiguous()?,
                op.clone(),
            );
        }
        self.forward_residual(x, residual)? + sum
    }

    /// This conv's CPU kernel reading (`input`) and/or writing (`output`) channels-last
    /// `[b, t, c]`, where it runs on the Winograd kernel, which has those layouts.
    pub fn channels_last(&self, input: bool, output: bool) -> Option<PackedConv1d> {
        self.packed.clone()?.with_channels_last(input, output)
    }

    /// The folded weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// ferrovox's CUDA kernel for `x` `[b, in, t]`, where it has one and the launch fills the
    /// device.
    fn cuda_for(&self, x: &Tensor) -> Result<Option<&CudaConv1d>> {
        let Some(op) = &self.cuda else {
            return Ok(None);
        };
        let (b, _, t) = x.dims3()?;
        Ok((x.dtype() == DType::F32 && op.fills_device(b, t)).then_some(&**op))
    }
}

/// A depthwise conv as one multiply-add per tap over shifted views of the zero-padded input.
fn depthwise_by_taps(
    x: &Tensor,
    taps: &[Tensor],
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    let padded = x.pad_with_zeros(2, padding, padding)?;
    let len = padded.dim(2)? - dilation * (taps.len() - 1);
    let mut y = padded.narrow(2, 0, len)?.broadcast_mul(&taps[0])?;
    for (j, tap) in taps.iter().enumerate().skip(1) {
        y = (y + padded.narrow(2, j * dilation, len)?.broadcast_mul(tap)?)?;
    }
    Ok(y)
}

/// Padding, stride, dilation, groups, bias and weight loading of a [`Conv1d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    /// A leaky ReLU slope applied to the input first (HiFi-GAN's pre-activation).
    pub input_leaky_relu: Option<f64>,
    /// A factor the input is multiplied by, folded into the weight at load (HiFi-GAN's mean
    /// over residual blocks; leaky ReLU commutes with a positive factor).
    pub input_scale: f64,
    /// How a weight-normed weight is folded at load.
    pub fold: WeightNormFold,
    /// Off, the conv keeps to paths whose rounding is closest to torch's f32 conv and does not
    /// depend on where a call's window starts: the direct or per-tap kernel on the CPU (not
    /// Winograd: see `PackedConv1d::without_winograd`), Candle's own f32 conv on other devices
    /// (not the TF32-split tensor-core kernel). For layers whose output amplifies rounding.
    pub fast: bool,
}

impl Default for ConvSpec {
    fn default() -> Self {
        Self {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: true,
            input_leaky_relu: None,
            input_scale: 1.0,
            fold: WeightNormFold::Device,
            fast: true,
        }
    }
}

impl ConvSpec {
    /// "Same" padding for `kernel` at `dilation` (VITS's and HiFi-GAN's `get_padding`).
    pub fn same(kernel: usize, dilation: usize) -> Self {
        Self {
            padding: (kernel * dilation - dilation) / 2,
            dilation,
            ..Self::default()
        }
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32) = (&self.packed, x.dtype()) {
            return x.contiguous()?.apply_op1(op.clone());
        }
        if let (Some(op), DType::F32) = (&self.depthwise, x.dtype()) {
            return x.contiguous()?.apply_op1(op.clone());
        }
        if let Some(op) = self.cuda_for(x)? {
            return x.contiguous()?.apply_op1(op.clone());
        }
        let x = &leaky_relu_where(x, self.input_slope)?;
        // A single item is launch-bound: Candle's one unfold kernel beats the GEMM path's
        // row copies there.
        if let (Some(op), true) = (&self.gemm, x.dim(0)? > 1) {
            return op.forward(x);
        }
        let (_, _, k) = self.weight.dims3()?;
        let y = if k == 1 && self.groups == 1 && self.stride == 1 {
            // A pointwise conv is a matmul; Candle's conv path would unfold first.
            let (b, _, t) = x.dims3()?;
            let w = self.weight.squeeze(2)?;
            w.broadcast_left(b)?
                .matmul(&x.contiguous()?)?
                .reshape((b, (), t))?
        } else if let Some(taps) = &self.taps {
            depthwise_by_taps(x, taps, self.padding, self.dilation)?
        } else {
            x.conv1d(
                &self.weight,
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
            )?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    /// Each dispatch (packed, depthwise, strided, pointwise, input leaky ReLU and scale)
    /// against Candle's own conv of the same weights.
    #[test]
    fn every_path_matches_candles_conv() {
        let dev = Device::Cpu;
        let (b, cin, t) = (2, 8, 37);
        let x = Tensor::randn(0f32, 1., (b, cin, t), &dev).unwrap();
        let cases = [
            (8, 3, ConvSpec::same(3, 1)),
            (8, 5, ConvSpec::same(5, 3)),
            (6, 1, ConvSpec::default()),
            (
                8,
                3,
                ConvSpec {
                    groups: 8,
                    ..ConvSpec::same(3, 2)
                },
            ),
            (
                6,
                4,
                ConvSpec {
                    padding: 1,
                    stride: 2,
                    ..ConvSpec::default()
                },
            ),
            (
                8,
                3,
                ConvSpec {
                    input_leaky_relu: Some(0.1),
                    input_scale: 0.5,
                    ..ConvSpec::same(3, 1)
                },
            ),
        ];
        for (cout, k, spec) in cases {
            let w = Tensor::randn(0f32, 0.3, (cout, cin / spec.groups, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
            let vb = VarBuilder::from_tensors(
                HashMap::from([
                    ("weight".to_string(), w.clone()),
                    ("bias".to_string(), bias.clone()),
                ]),
                DType::F32,
                &dev,
            );
            let conv = Conv1d::new(vb, cin, cout, k, spec).unwrap();
            let input = match spec.input_leaky_relu {
                Some(slope) => {
                    (candle_nn::ops::leaky_relu(&x, slope).unwrap() * spec.input_scale).unwrap()
                }
                None => x.clone(),
            };
            let want = input
                .conv1d(&w, spec.padding, spec.stride, spec.dilation, spec.groups)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let got = conv.forward(&x).unwrap();
            let d = ferrovox_kernels::compare::max_abs_diff(&got, &want).unwrap();
            assert!(d < 1e-4, "{spec:?}: {d}");
        }
    }

    #[test]
    fn depthwise_by_taps_matches_candles_grouped_conv() {
        let (b, c, t) = (2, 6, 11);
        let x = Tensor::randn(0f32, 1., (b, c, t), &Device::Cpu).unwrap();
        for (k, dilation, padding) in [(3, 1, 1), (3, 3, 3), (5, 2, 4), (3, 9, 9)] {
            let w = Tensor::randn(0f32, 1., (c, 1, k), &Device::Cpu).unwrap();
            let taps: Vec<Tensor> = (0..k)
                .map(|j| w.narrow(2, j, 1).unwrap().reshape((1, c, 1)).unwrap())
                .collect();
            let got = depthwise_by_taps(&x, &taps, padding, dilation).unwrap();
            let want = x.conv1d(&w, padding, 1, dilation, c).unwrap();
            let diff = ferrovox_kernels::compare::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "k {k} dilation {dilation}: {diff}");
        }
    }
}
