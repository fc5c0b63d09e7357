//! Building blocks shared by the VITS modules: convolutions that fold weight norm at load,
//! a transposed convolution on Candle's fast path, and channel-wise layer norm.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_device::kernels::{
    CudaConv1d, DepthwiseConv1d, GemmConv1d, GemmConvTranspose1d, PackedConv1d,
    PackedConvTranspose1d,
};

/// Loads a conv weight of `shape`, folding weight norm when the checkpoint stores it
/// (`weight_g`/`weight_v`, or `parametrizations.weight.original0/1`): `w = g · v / ‖v‖`, the norm
/// taken per output channel (dim 0).
pub fn conv_weight(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    let (out, _, _) = shape;
    let folded = |g: &str, v: &str| -> Result<Tensor> {
        let g = vb.get((out, 1, 1), g)?;
        let v = vb.get(shape, v)?;
        let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
        v.broadcast_mul(&g.broadcast_div(&norm)?)
    };
    if vb.contains_tensor("weight") {
        vb.get(shape, "weight")
    } else if vb.contains_tensor("weight_g") {
        folded("weight_g", "weight_v")
    } else if vb.contains_tensor("parametrizations.weight.original0") {
        folded(
            "parametrizations.weight.original0",
            "parametrizations.weight.original1",
        )
    } else {
        vb.get(shape, "weight")
    }
}

/// `weight · factor`, untouched when the factor is 1.
pub(crate) fn scaled(weight: Tensor, factor: f64) -> Result<Tensor> {
    if factor == 1.0 {
        Ok(weight)
    } else {
        weight * factor
    }
}

/// A 1-D convolution (`torch.nn.Conv1d`) with symmetric padding.
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
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

/// WaveNet's gate `tanh(x[:, ..h]) · sigmoid(x[:, h..])` of `states` `[b, 2h, t]`.
pub fn gated_tanh(states: &Tensor, h: usize) -> Result<Tensor> {
    if use_cpu_kernels(states) {
        return states
            .contiguous()?
            .apply_op1(ferrovox_device::kernels::GatedTanh);
    }
    let (t, s) = split_channels(states, h)?;
    t.tanh()? * candle_nn::ops::sigmoid(&s)?
}

/// `tanh`, vectorised on the CPU.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    if use_cpu_kernels(x) {
        return x.contiguous()?.apply_op1(ferrovox_device::kernels::Tanh);
    }
    x.tanh()
}

/// Whether a layer with `weight` should use ferrovox's CPU kernels.
fn use_cpu_kernels(weight: &Tensor) -> bool {
    matches!(weight.device(), Device::Cpu)
        && weight.dtype() == DType::F32
        && ferrovox_device::kernels::enabled()
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
            conv_weight(&vb, (out_channels, in_channels / spec.groups, kernel))?,
            spec.input_scale,
        )?;
        let bias = if spec.bias {
            Some(vb.get(out_channels, "bias")?)
        } else {
            None
        };
        let (_, _, k) = weight.dims3()?;
        // Pointwise convs stay on Candle's matmul unless the direct kernel runs them.
        let packed = if use_cpu_kernels(&weight)
            && spec.groups == 1
            && (k > 1
                || spec.input_leaky_relu.is_some()
                || ferrovox_device::kernels::direct_conv_available())
        {
            let op = PackedConv1d::new(&weight, bias.as_ref(), spec.padding, spec.dilation)?;
            Some(match spec.input_leaky_relu {
                Some(slope) => op.with_input_leaky_relu(slope as f32),
                None => op,
            })
        } else {
            None
        };
        let depthwise = if use_cpu_kernels(&weight)
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
        let cuda = if !weight.device().is_cpu() && spec.groups == 1 {
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
            && ferrovox_device::kernels::gemm_conv_enabled()
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

/// Padding, dilation, groups and bias of a [`Conv1d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    /// A leaky ReLU slope applied to the input first (HiFi-GAN's pre-activation).
    pub input_leaky_relu: Option<f64>,
    /// A factor the input is multiplied by, folded into the weight at load (HiFi-GAN's mean
    /// over residual blocks; leaky ReLU commutes with a positive factor).
    pub input_scale: f64,
}

impl Default for ConvSpec {
    fn default() -> Self {
        Self {
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
            input_leaky_relu: None,
            input_scale: 1.0,
        }
    }
}

impl ConvSpec {
    /// "Same" padding for `kernel` at `dilation`, as VITS computes it.
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
        let activated;
        let x = match self.input_slope {
            Some(slope) => {
                activated = leaky_relu(x, slope)?;
                &activated
            }
            None => x,
        };
        // A single item is launch-bound: Candle's one unfold kernel beats the GEMM path's
        // row copies there.
        if let (Some(op), true) = (&self.gemm, x.dim(0)? > 1) {
            return op.forward(x);
        }
        let (_, _, k) = self.weight.dims3()?;
        let y = if k == 1 && self.groups == 1 {
            // A pointwise conv is a matmul; Candle's conv path would unfold first.
            let (b, _, t) = x.dims3()?;
            let w = self.weight.squeeze(2)?;
            w.broadcast_left(b)?
                .matmul(&x.contiguous()?)?
                .reshape((b, (), t))?
        } else if let Some(taps) = &self.taps {
            depthwise_by_taps(x, taps, self.padding, self.dilation)?
        } else {
            x.conv1d(&self.weight, self.padding, 1, self.dilation, self.groups)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
            None => Ok(y),
        }
    }
}

/// `torch.nn.ConvTranspose1d` with padding `(kernel - stride) / 2`, run unpadded and cropped:
/// Candle's padded transposed conv falls back to a slow generic loop.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    input_slope: f64,
    packed: Option<PackedConvTranspose1d>,
    /// ferrovox's tensor-core kernel on the polyphase form, on CUDA.
    cuda: Option<Box<CudaConv1d>>,
    gemm: Option<GemmConvTranspose1d>,
}

impl ConvTranspose1d {
    /// Loads `weight` `[in, out, kernel]` and `bias` `[out]`; the input first goes through a
    /// leaky ReLU of `input_slope` and is multiplied by `input_scale` (folded into the weight).
    pub fn new(
        vb: VarBuilder,
        (in_channels, out_channels): (usize, usize),
        kernel: usize,
        stride: usize,
        input_slope: f64,
        input_scale: f64,
    ) -> Result<Self> {
        let weight = scaled(
            conv_weight(&vb, (in_channels, out_channels, kernel))?,
            input_scale,
        )?;
        let bias = vb.get(out_channels, "bias")?;
        let padding = (kernel - stride) / 2;
        let packed = if use_cpu_kernels(&weight) {
            Some(
                PackedConvTranspose1d::new(&weight, Some(&bias), stride, padding)?
                    .with_input_leaky_relu(input_slope as f32),
            )
        } else {
            None
        };
        let cuda = if weight.device().is_cpu() {
            None
        } else {
            CudaConv1d::transposed(&weight, &bias, stride, padding)?
                .map(|op| Box::new(op.with_input_leaky_relu(input_slope as f32)))
        };
        let gemm = if weight.device().is_cpu()
            || cuda.is_some()
            || !ferrovox_device::kernels::gemm_conv_transpose_enabled()
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
        let x = &leaky_relu(x, self.input_slope)?;
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

/// Layer norm over the channel axis of `[batch, channels, time]` tensors.
#[derive(Debug, Clone)]
pub struct ChannelLayerNorm {
    inner: candle_nn::LayerNorm,
    /// The CPU kernel, which normalises channels in place of a transpose.
    packed: Option<ferrovox_device::kernels::ChannelNorm>,
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
            Some(ferrovox_device::kernels::ChannelNorm::new(
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

/// `torch.nn.functional.leaky_relu`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if (0.0..=1.0).contains(&slope) {
        // max(x, slope·x): two passes, where Candle's op takes four on the GPU.
        return x.maximum(&(x * slope)?);
    }
    candle_nn::ops::leaky_relu(x, slope)
}

/// Splits `[b, c, t]` into its first `at` channels and the rest.
pub fn split_channels(x: &Tensor, at: usize) -> Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    Ok((x.narrow(1, 0, at)?, x.narrow(1, at, c - at)?))
}

/// Reverses the channel axis (`torch.flip(x, [1])`).
pub fn flip_channels(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let idx: Vec<u32> = (0..c as u32).rev().collect();
    let idx = Tensor::new(idx.as_slice(), x.device())?;
    x.index_select(&idx, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let diff = ferrovox_device::compare::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "k {k} dilation {dilation}: {diff}");
        }
    }
}
