//! Mirrors the BatchNorms of upstream `s3gen/xvector.py` (`get_nonlinear`'s "batchnorm" and
//! "batchnorm_", and FCM's `BatchNorm2d`) in eval mode: each channel's running statistics and
//! affine parameters reduce to `x * scale + shift`.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use ferrovox_layers::{Conv1d, ConvSpec};

use crate::Result;

/// torch's default `eps` for `BatchNorm1d` / `BatchNorm2d`.
const EPS: f64 = 1e-5;

/// An eval-mode BatchNorm as one scale and shift per channel.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    scale: Vec<f64>,
    shift: Vec<f64>,
    /// `scale` and `shift` as `[1, channels, 1]` tensors in the model's dtype, for `[b, c, t]`.
    scale_t: Tensor,
    shift_t: Tensor,
}

impl BatchNorm {
    /// Reads `running_mean` and `running_var` (and, with `affine`, `weight` and `bias`), all
    /// `[channels]`; `num_batches_tracked` only counts training steps and is not read.
    pub fn new(vb: &VarBuilder, channels: usize, affine: bool) -> Result<Self> {
        let host = |name: &str| -> Result<Vec<f64>> {
            Ok(vb
                .get(channels, name)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?)
        };
        let (mean, var) = (host("running_mean")?, host("running_var")?);
        let (weight, bias) = if affine {
            (host("weight")?, host("bias")?)
        } else {
            (vec![1.0; channels], vec![0.0; channels])
        };
        // In f64 and rounded once: torch's CPU inference kernel also folds the statistics
        // into one multiply-add per channel.
        let scale: Vec<f64> = weight
            .iter()
            .zip(&var)
            .map(|(w, v)| w / (v + EPS).sqrt())
            .collect();
        let shift: Vec<f64> = bias
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let as_tensor = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, (1, channels, 1), vb.device())?.to_dtype(vb.dtype())?)
        };
        Ok(Self {
            scale_t: as_tensor(&scale)?,
            shift_t: as_tensor(&shift)?,
            scale,
            shift,
        })
    }

    /// The normalised `x`, channels on axis 1 of a `[b, c, t]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.scale_t)?
            .broadcast_add(&self.shift_t)?)
    }

    /// `relu(norm(x))`, `get_nonlinear("batchnorm-relu")`.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward(x)?.relu()?)
    }

    /// This norm folded into the bias-free conv before it: the weight `[out, ...]` scaled per
    /// output channel, and the shift as its bias.
    pub fn fold(&self, weight: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = weight.dim(0)?;
        let dtype = weight.dtype();
        let rows = weight
            .to_dtype(DType::F64)?
            .flatten_from(1)?
            .to_vec2::<f64>()?;
        let folded: Vec<f64> = rows
            .iter()
            .zip(&self.scale)
            .flat_map(|(row, s)| row.iter().map(move |w| w * s))
            .collect();
        let folded = Tensor::from_vec(folded, weight.shape(), weight.device())?.to_dtype(dtype)?;
        let bias = Tensor::from_slice(&self.shift, out, weight.device())?.to_dtype(dtype)?;
        Ok((folded, bias))
    }
}

/// A `ferrovox_layers` [`Conv1d`] over given tensors (a folded weight and its bias).
pub(crate) fn conv1d_from(weight: Tensor, bias: Option<Tensor>, spec: ConvSpec) -> Result<Conv1d> {
    let (out, inp, kernel) = weight.dims3()?;
    let (dtype, device) = (weight.dtype(), weight.device().clone());
    let mut tensors = HashMap::from([("weight".to_string(), weight)]);
    let has_bias = bias.is_some();
    if let Some(b) = bias {
        tensors.insert("bias".to_string(), b);
    }
    let vb = VarBuilder::from_tensors(tensors, dtype, &device);
    Ok(Conv1d::new(
        vb,
        inp * spec.groups,
        out,
        kernel,
        ConvSpec {
            bias: has_bias,
            ..spec
        },
    )?)
}

/// A conv1d `[out, in, kernel]` at `vb` (no bias) with the BatchNorm after it folded in.
pub(crate) fn conv1d_bn(
    conv: &VarBuilder,
    norm: &BatchNorm,
    shape: (usize, usize, usize),
    spec: ConvSpec,
) -> Result<Conv1d> {
    let (weight, bias) = norm.fold(&conv.get(shape, "weight")?)?;
    conv1d_from(weight, Some(bias), spec)
}

/// A plain (not weight-normed) conv1d `[out, in, kernel]` at `vb`, with `bias` `[out]` if
/// `spec.bias`.
pub(crate) fn conv1d_at(
    vb: &VarBuilder,
    shape: (usize, usize, usize),
    spec: ConvSpec,
) -> Result<Conv1d> {
    let weight = vb.get(shape, "weight")?;
    let bias = if spec.bias {
        Some(vb.get(shape.0, "bias")?)
    } else {
        None
    };
    conv1d_from(weight, bias, spec)
}
