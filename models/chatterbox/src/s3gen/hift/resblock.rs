//! Mirrors `Snake` and `ResBlock` of `s3gen/hifigan.py` (HiFT's BigVGAN-style residual block).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::conv::{self, Conv1d};
use crate::{Error, Result};

/// Snake activation, `x + 1/(α + 1e-9) · sin²(α x)`, with a per-channel α on a linear scale
/// (upstream's `alpha_logscale=False`).
#[derive(Debug, Clone)]
pub struct Snake {
    /// `[1, C, 1]`.
    alpha: Tensor,
    /// `1 / (α + 1e-9)`, `[1, C, 1]`, computed once in f32 as torch does per call.
    inv_alpha: Tensor,
    /// The one-pass CPU kernel over the same values, for f32 weights on the CPU.
    cpu: Option<ferrovox_kernels::Snake>,
}

impl Snake {
    /// Loads `alpha` `[channels]`.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let alpha = vb.get(channels, "alpha").map_err(|e| Error::Checkpoint {
            path: format!("{}.alpha", vb.prefix()),
            reason: e.to_string(),
        })?;
        let alpha = alpha.reshape((1, channels, 1))?;
        let inv_alpha = (alpha.affine(1.0, 1e-9)?).recip()?;
        let cpu = if alpha.device().is_cpu() && alpha.dtype() == candle_core::DType::F32 {
            let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            Some(ferrovox_kernels::Snake::new(
                host(&alpha)?,
                host(&inv_alpha)?,
            )?)
        } else {
            None
        };
        Ok(Self {
            alpha,
            inv_alpha,
            cpu,
        })
    }
}

impl Module for Snake {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(op) = &self.cpu {
            if ferrovox_layers::use_cpu_kernels(x) {
                return x.contiguous()?.apply_op1(op.clone());
            }
        }
        let wave = x.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        x + wave.broadcast_mul(&self.inv_alpha)?
    }
}

/// One dilation of a [`ResBlock`]: Snake, dilated conv, Snake, plain conv.
#[derive(Debug, Clone)]
struct Branch {
    act1: Snake,
    conv1: Conv1d,
    act2: Snake,
    conv2: Conv1d,
}

/// `ResBlock(channels, kernel, dilations)`: for each dilation `x = x + branch(x)`.
#[derive(Debug, Clone)]
pub struct ResBlock {
    branches: Vec<Branch>,
}

impl ResBlock {
    /// `vb` at the block (`convs1.{i}`, `convs2.{i}`, `activations1.{i}`, `activations2.{i}`).
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        kernel: usize,
        dilations: &[usize],
    ) -> Result<Self> {
        let branches = dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                Ok(Branch {
                    act1: Snake::new(vb.pp(format!("activations1.{i}")), channels)?,
                    conv1: conv::conv1d(
                        vb.pp(format!("convs1.{i}")),
                        channels,
                        channels,
                        kernel,
                        conv::same(kernel, d),
                    )?,
                    act2: Snake::new(vb.pp(format!("activations2.{i}")), channels)?,
                    conv2: conv::conv1d(
                        vb.pp(format!("convs2.{i}")),
                        channels,
                        channels,
                        kernel,
                        conv::same(kernel, 1),
                    )?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { branches })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for b in &self.branches {
            let xt = b.conv1.forward(&b.act1.forward(&x)?)?;
            let xt = b.conv2.forward(&b.act2.forward(&xt)?)?;
            x = (xt + x)?;
        }
        Ok(x)
    }
}
