//! The torch layers HiFT is built from: `Conv1d` and `ConvTranspose1d` with weight norm folded
//! at load (`torch.nn.utils.parametrizations.weight_norm`), and a plain `Conv1d`.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// A checkpoint error naming the tensor's full key.
fn missing(vb: &VarBuilder, name: &str, err: candle_core::Error) -> Error {
    let prefix = vb.prefix();
    Error::Checkpoint {
        path: if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        },
        reason: err.to_string(),
    }
}

/// `torch._weight_norm(v, g, 0)`: `w = v * (g / ‖v‖)`, the norm over every dim but 0 (per
/// output channel of a conv, per input channel of a transposed conv).
///
/// Folded on the host so the rounding is pinned: the norm of each row is summed in f64 and
/// rounded once, then the f32 scale `g / ‖v‖` multiplies `v`, as torch's fused CPU kernel
/// does. The F0 path amplifies 1-ulp weight differences, so the order matters.
pub fn fold_weight_norm(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    let rows = v.dim(0)?;
    let v32 = v.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
    let g32 = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if g32.len() != rows {
        return Err(Error::Checkpoint {
            path: "weight norm".into(),
            reason: format!("g has {} values for {rows} rows of v", g32.len()),
        });
    }
    let mut folded = Vec::with_capacity(v.elem_count());
    for (row, &gain) in v32.iter().zip(&g32) {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
        let scale = gain / norm;
        folded.extend(row.iter().map(|&x| x * scale));
    }
    Ok(Tensor::from_vec(folded, v.dims(), v.device())?.to_dtype(v.dtype())?)
}

/// A conv weight of `shape`: plain `weight`, or weight norm as
/// `parametrizations.weight.original0/1` (torch >= 2.1) or `weight_g`/`weight_v` (older files).
pub fn weight_normed(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    let gain_shape = (shape.0, 1, 1);
    let get = |shape: (usize, usize, usize), name: &str| {
        vb.get(shape, name).map_err(|e| missing(vb, name, e))
    };
    let (g, v) = if vb.contains_tensor("parametrizations.weight.original0") {
        (
            get(gain_shape, "parametrizations.weight.original0")?,
            get(shape, "parametrizations.weight.original1")?,
        )
    } else if vb.contains_tensor("weight_g") {
        (get(gain_shape, "weight_g")?, get(shape, "weight_v")?)
    } else {
        return get(shape, "weight");
    };
    fold_weight_norm(&g, &v)
}

/// A conv's `bias` `[channels]`, shaped `[1, channels, 1]` to broadcast over batch and time.
fn channel_bias(vb: &VarBuilder, channels: usize) -> Result<Tensor> {
    Ok(vb
        .get(channels, "bias")
        .map_err(|e| missing(vb, "bias", e))?
        .reshape((1, channels, 1))?)
}

/// `torch.nn.Conv1d` with bias.
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
}

/// Padding, stride and dilation of a [`Conv1d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl ConvSpec {
    /// Length-preserving: stride 1, padding `(k * d - d) / 2` (upstream's `get_padding`).
    pub fn same(kernel: usize, dilation: usize) -> Self {
        Self {
            padding: (kernel * dilation - dilation) / 2,
            stride: 1,
            dilation,
        }
    }
}

impl Conv1d {
    /// Loads `[out, in, kernel]` (weight-normed or plain) and `bias` `[out]`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        let weight = weight_normed(&vb, (out_channels, in_channels, kernel))?;
        let bias = channel_bias(&vb, out_channels)?;
        Ok(Self {
            weight,
            bias,
            padding: spec.padding,
            stride: spec.stride,
            dilation: spec.dilation,
        })
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?
            .broadcast_add(&self.bias)
    }
}

/// `torch.nn.ConvTranspose1d(kernel, stride, padding=(kernel - stride) / 2)` with bias: the
/// output is exactly `stride` times longer. Run unpadded and cropped, one batch item at a
/// time: Candle 0.11.1's padded transposed conv takes a slow generic path, and its unpadded
/// one mixes up items of a batch larger than one.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    /// `[in, out, kernel]`.
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvTranspose1d {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight = weight_normed(&vb, (in_channels, out_channels, kernel))?;
        let bias = channel_bias(&vb, out_channels)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding: (kernel - stride) / 2,
        })
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, _, len) = x.dims3()?;
        let items = (0..batch)
            .map(|i| {
                x.narrow(0, i, 1)?.contiguous()?.conv_transpose1d(
                    &self.weight,
                    0,
                    0,
                    self.stride,
                    1,
                    1,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let full = Tensor::cat(&items, 0)?;
        let (_, _, k) = self.weight.dims3()?;
        let out_len = (len - 1) * self.stride + k - 2 * self.padding;
        full.narrow(2, self.padding, out_len)?
            .broadcast_add(&self.bias)
    }
}
