//! Mirrors `TDNNLayer`, `TransitLayer` and `DenseLayer` (upstream `s3gen/xvector.py`), with
//! CAMPPlus's `config_str="batchnorm-relu"` (and `"batchnorm_"` for the dense layer).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ferrovox_layers::{Conv1d, ConvSpec};

use super::batch_norm::{conv1d_bn, conv1d_from, BatchNorm};
use crate::Result;

/// `TDNNLayer`: a bias-free conv, then BatchNorm (folded into it) and ReLU. CAMPPlus builds
/// one, kernel 5, stride 2, "same" padding (`padding=-1`).
#[derive(Debug, Clone)]
pub struct TdnnLayer {
    conv: Conv1d,
}

impl TdnnLayer {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let norm = BatchNorm::new(&vb.pp("nonlinear.batchnorm"), cout, true)?;
        let spec = ConvSpec {
            padding: (kernel - 1) / 2,
            stride,
            ..ConvSpec::default()
        };
        Ok(Self {
            conv: conv1d_bn(&vb.pp("linear"), &norm, (cout, cin, kernel), spec)?,
        })
    }

    /// `[b, cin, t]` to `[b, cout, (t - 1) / stride + 1]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.conv.forward(x)?.relu()?)
    }
}

/// `TransitLayer` (`bias=False` in CAMPPlus): BatchNorm and ReLU, then a pointwise conv.
#[derive(Debug, Clone)]
pub struct TransitLayer {
    norm: BatchNorm,
    linear: Conv1d,
}

impl TransitLayer {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let weight = vb.pp("linear").get((cout, cin, 1), "weight")?;
        Ok(Self {
            norm: BatchNorm::new(&vb.pp("nonlinear.batchnorm"), cin, true)?,
            linear: conv1d_from(weight, None, ConvSpec::default())?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.linear.forward(&self.norm.forward_relu(x)?)?)
    }
}

/// `DenseLayer` on pooled statistics: a bias-free pointwise conv (a matrix on `[b, cin]`)
/// and a BatchNorm without affine parameters (`"batchnorm_"`), folded together.
#[derive(Debug, Clone)]
pub struct DenseLayer {
    /// `[cin, cout]`, transposed once at load.
    weight_t: Tensor,
    /// `[1, cout]`.
    bias: Tensor,
}

impl DenseLayer {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let norm = BatchNorm::new(&vb.pp("nonlinear.batchnorm"), cout, false)?;
        let (weight, bias) = norm.fold(&vb.pp("linear").get((cout, cin, 1), "weight")?)?;
        Ok(Self {
            weight_t: weight.squeeze(2)?.t()?.contiguous()?,
            bias: bias.unsqueeze(0)?,
        })
    }

    /// `[b, cin]` to `[b, cout]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
    }
}
