//! Mirrors `FCM` and `BasicResBlock` (upstream `s3gen/xvector.py`): the 2-D ResNet head that
//! turns `[b, feat_dim, t]` features into `[b, m_channels * feat_dim / 8, t]`, each BatchNorm
//! folded into the conv before it.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use super::batch_norm::BatchNorm;
use crate::Result;

/// A bias-free `Conv2d` with `stride = (stride, 1)` and the `BatchNorm2d` after it, folded.
#[derive(Debug, Clone)]
struct Conv2dBn {
    weight: Tensor,
    /// `[1, out, 1, 1]`.
    bias: Tensor,
    kernel: usize,
    /// Along frequency (axis 2) only; time keeps stride 1.
    stride: usize,
}

impl Conv2dBn {
    fn new(
        conv: VarBuilder,
        norm: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let norm = BatchNorm::new(&norm, cout, true)?;
        let (weight, bias) = norm.fold(&conv.get((cout, cin, kernel, kernel), "weight")?)?;
        Ok(Self {
            weight,
            bias: bias.reshape((1, cout, 1, 1))?,
            kernel,
            stride,
        })
    }

    /// `bn(conv(x))` on `[b, c, f, t]`, "same" padding (`kernel / 2`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pad = self.kernel / 2;
        let y = if self.stride == 1 {
            x.conv2d(&self.weight, pad, 1, 1, 1)?
        } else if self.kernel == 1 {
            // A pointwise conv: drop the rows first.
            every_nth_row(x, self.stride)?.conv2d(&self.weight, 0, 1, 1, 1)?
        } else {
            // Candle strides both axes alike; the rows a (stride, 1) conv keeps are every
            // stride-th row of the unit-stride one.
            every_nth_row(&x.conv2d(&self.weight, pad, 1, 1, 1)?, self.stride)?
        };
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// Rows `0, n, 2n, ...` of axis 2 of `[b, c, h, w]`: `ceil(h / n)` of them.
fn every_nth_row(x: &Tensor, n: usize) -> Result<Tensor> {
    let h = x.dim(2)?;
    let kept = h.div_ceil(n);
    let x = x.pad_with_zeros(2, 0, kept * n - h)?;
    let (b, c, _, w) = x.dims4()?;
    Ok(x.reshape((b, c, kept, n * w))?.narrow(D::Minus1, 0, w)?)
}

/// `BasicResBlock`: two 3x3 convs with a residual, the first striding frequency by `stride`;
/// a 1x1 conv shortcut where the shape changes.
#[derive(Debug, Clone)]
struct BasicResBlock {
    conv1: Conv2dBn,
    conv2: Conv2dBn,
    shortcut: Option<Conv2dBn>,
}

impl BasicResBlock {
    fn new(vb: VarBuilder, cin: usize, planes: usize, stride: usize) -> Result<Self> {
        let shortcut = if stride != 1 || cin != planes {
            Some(Conv2dBn::new(
                vb.pp("shortcut.0"),
                vb.pp("shortcut.1"),
                cin,
                planes,
                1,
                stride,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1: Conv2dBn::new(vb.pp("conv1"), vb.pp("bn1"), cin, planes, 3, stride)?,
            conv2: Conv2dBn::new(vb.pp("conv2"), vb.pp("bn2"), planes, planes, 3, 1)?,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.conv2.forward(&self.conv1.forward(x)?.relu()?)?;
        let residual = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((out + residual)?.relu()?)
    }
}

/// `FCM`: conv, two layers of two residual blocks (each layer halving frequency), a last
/// conv halving it again, then channels and frequency flattened together.
#[derive(Debug, Clone)]
pub struct Fcm {
    conv1: Conv2dBn,
    blocks: Vec<BasicResBlock>,
    conv2: Conv2dBn,
}

impl Fcm {
    /// Upstream's `num_blocks=[2, 2]`: both layers take `num_blocks[0]` blocks.
    const BLOCKS_PER_LAYER: usize = 2;

    pub fn new(vb: VarBuilder, m_channels: usize) -> Result<Self> {
        let m = m_channels;
        let mut blocks = Vec::new();
        for layer in ["layer1", "layer2"] {
            for i in 0..Self::BLOCKS_PER_LAYER {
                let stride = if i == 0 { 2 } else { 1 };
                blocks.push(BasicResBlock::new(vb.pp(layer).pp(i), m, m, stride)?);
            }
        }
        Ok(Self {
            conv1: Conv2dBn::new(vb.pp("conv1"), vb.pp("bn1"), 1, m, 3, 1)?,
            blocks,
            conv2: Conv2dBn::new(vb.pp("conv2"), vb.pp("bn2"), m, m, 3, 2)?,
        })
    }

    /// `[b, feat_dim, t]` to `[b, m_channels * ceil(feat_dim / 8), t]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = self.conv1.forward(&x.unsqueeze(1)?)?.relu()?;
        for block in &self.blocks {
            out = block.forward(&out)?;
        }
        let out = self.conv2.forward(&out)?.relu()?;
        let (b, c, f, t) = out.dims4()?;
        Ok(out.reshape((b, c * f, t))?)
    }
}
