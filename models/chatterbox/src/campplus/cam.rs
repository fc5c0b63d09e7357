//! Mirrors `CAMLayer`, `CAMDenseTDNNLayer` and `CAMDenseTDNNBlock` (upstream
//! `s3gen/xvector.py`): densely connected TDNN layers whose outputs are gated by
//! context-aware masks pooled over the utterance and over 100-frame segments.

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use ferrovox_layers::{Conv1d, ConvSpec};

use super::batch_norm::{conv1d_at, conv1d_bn, BatchNorm};
use crate::Result;

/// `CAMLayer.seg_pooling`'s `seg_len`.
const SEG_LEN: usize = 100;

/// `CAMLayer` (`reduction=2`, `bias=False` for the local conv as CAMPPlus builds it).
#[derive(Debug, Clone)]
struct CamLayer {
    linear_local: Conv1d,
    linear1: Conv1d,
    linear2: Conv1d,
}

impl CamLayer {
    fn new(
        vb: VarBuilder,
        bn_channels: usize,
        out_channels: usize,
        kernel: usize,
        dilation: usize,
    ) -> Result<Self> {
        let reduced = bn_channels / 2;
        let local = ConvSpec {
            padding: (kernel - 1) / 2 * dilation,
            dilation,
            bias: false,
            ..ConvSpec::default()
        };
        Ok(Self {
            linear_local: conv1d_at(
                &vb.pp("linear_local"),
                (out_channels, bn_channels, kernel),
                local,
            )?,
            linear1: conv1d_at(
                &vb.pp("linear1"),
                (reduced, bn_channels, 1),
                ConvSpec::default(),
            )?,
            linear2: conv1d_at(
                &vb.pp("linear2"),
                (out_channels, reduced, 1),
                ConvSpec::default(),
            )?,
        })
    }

    /// `linear_local(x)` times the sigmoid mask of `x`'s utterance mean plus its segment
    /// means.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.linear_local.forward(x)?;
        let (b, c, t) = x.dims3()?;
        let segments = t.div_ceil(SEG_LEN);
        // avg_pool1d(ceil_mode=True): the last, partial segment averages only the frames it
        // has (the overhang is not padding, so it is not counted).
        let sums = x
            .pad_with_zeros(D::Minus1, 0, segments * SEG_LEN - t)?
            .reshape((b, c, segments, SEG_LEN))?
            .sum(D::Minus1)?;
        let counts: Vec<f32> = (0..segments)
            .map(|s| (t - s * SEG_LEN).min(SEG_LEN) as f32)
            .collect();
        let counts = Tensor::from_vec(counts, (1, 1, segments), x.device())?.to_dtype(x.dtype())?;
        let context = sums
            .broadcast_div(&counts)?
            .broadcast_add(&x.mean_keepdim(D::Minus1)?)?;
        // The mask is pointwise in time and constant over a segment: computed once per
        // segment rather than per frame as upstream's repeated context has it.
        let mask = candle_nn::ops::sigmoid(
            &self
                .linear2
                .forward(&self.linear1.forward(&context)?.relu()?)?,
        )?;
        let out = mask.dim(1)?;
        let mask = mask
            .unsqueeze(D::Minus1)?
            .broadcast_as((b, out, segments, SEG_LEN))?
            .reshape((b, out, segments * SEG_LEN))?
            .narrow(D::Minus1, 0, t)?;
        Ok((y * mask)?)
    }
}

/// `CAMDenseTDNNLayer`: BatchNorm-ReLU, a pointwise bottleneck conv (its BatchNorm folded
/// in), ReLU, then a [`CamLayer`].
#[derive(Debug, Clone)]
struct CamDenseTdnnLayer {
    norm1: BatchNorm,
    linear1: Conv1d,
    cam_layer: CamLayer,
}

impl CamDenseTdnnLayer {
    fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        bn_channels: usize,
        kernel: usize,
        dilation: usize,
    ) -> Result<Self> {
        let norm2 = BatchNorm::new(&vb.pp("nonlinear2.batchnorm"), bn_channels, true)?;
        Ok(Self {
            norm1: BatchNorm::new(&vb.pp("nonlinear1.batchnorm"), in_channels, true)?,
            linear1: conv1d_bn(
                &vb.pp("linear1"),
                &norm2,
                (bn_channels, in_channels, 1),
                ConvSpec::default(),
            )?,
            cam_layer: CamLayer::new(
                vb.pp("cam_layer"),
                bn_channels,
                out_channels,
                kernel,
                dilation,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear1.forward(&self.norm1.forward_relu(x)?)?.relu()?;
        self.cam_layer.forward(&h)
    }
}

/// The shape of one dense block: CAMPPlus's three are (12, 3, 1), (24, 3, 2), (16, 3, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub num_layers: usize,
    pub kernel: usize,
    pub dilation: usize,
}

/// `CAMDenseTDNNBlock`: each layer's `growth_rate` channels appended to its input.
#[derive(Debug, Clone)]
pub struct CamDenseTdnnBlock {
    layers: Vec<CamDenseTdnnLayer>,
}

impl CamDenseTdnnBlock {
    /// Layers `tdnnd1..=tdnnd{num_layers}` at `vb`.
    pub fn new(
        vb: VarBuilder,
        spec: BlockSpec,
        in_channels: usize,
        growth_rate: usize,
        bn_channels: usize,
    ) -> Result<Self> {
        let layers = (0..spec.num_layers)
            .map(|i| {
                CamDenseTdnnLayer::new(
                    vb.pp(format!("tdnnd{}", i + 1)),
                    in_channels + i * growth_rate,
                    growth_rate,
                    bn_channels,
                    spec.kernel,
                    spec.dilation,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `[b, c, t]` to `[b, c + num_layers * growth_rate, t]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            let y = layer.forward(&x)?;
            x = Tensor::cat(&[&x, &y], 1)?;
        }
        Ok(x)
    }
}
