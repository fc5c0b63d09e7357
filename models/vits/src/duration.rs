//! Mirrors `VitsStochasticDurationPredictor` (with `VitsDilatedDepthSeparableConv`,
//! `VitsConvFlow`, `VitsElementwiseAffine`) and `VitsDurationPredictor` of transformers'
//! `modeling_vits.py`. Only the inference direction is built: the posterior flows and the
//! flow that reverse mode skips are training-only and are never loaded.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::spline::{self, SplineParams};
use crate::Config;
use ferrovox_layers::{flip_channels, split_channels, ChannelLayerNorm, Conv1d, ConvSpec};

/// Dilated depth-wise separable convolutions with layer norm and GELU (`conv_dds`).
#[derive(Debug, Clone)]
pub struct DilatedDepthSeparableConv {
    convs_dilated: Vec<Conv1d>,
    convs_pointwise: Vec<Conv1d>,
    norms_1: Vec<ChannelLayerNorm>,
    norms_2: Vec<ChannelLayerNorm>,
}

impl DilatedDepthSeparableConv {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (c, k) = (cfg.hidden_size, cfg.duration_predictor_kernel_size);
        let mut s = Self {
            convs_dilated: Vec::new(),
            convs_pointwise: Vec::new(),
            norms_1: Vec::new(),
            norms_2: Vec::new(),
        };
        for i in 0..cfg.depth_separable_num_layers {
            let dilation = k.pow(i as u32);
            let spec = ConvSpec {
                groups: c,
                ..ConvSpec::same(k, dilation)
            };
            s.convs_dilated.push(Conv1d::new(
                vb.pp(format!("convs_dilated.{i}")),
                c,
                c,
                k,
                spec,
            )?);
            s.convs_pointwise.push(Conv1d::new(
                vb.pp(format!("convs_pointwise.{i}")),
                c,
                c,
                1,
                ConvSpec::default(),
            )?);
            s.norms_1.push(ChannelLayerNorm::new(
                vb.pp(format!("norms_1.{i}")),
                c,
                1e-5,
            )?);
            s.norms_2.push(ChannelLayerNorm::new(
                vb.pp(format!("norms_2.{i}")),
                c,
                1e-5,
            )?);
        }
        Ok(s)
    }

    pub fn forward(&self, x: &Tensor, mask: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let mut x = match cond {
            Some(g) => x.broadcast_add(g)?,
            None => x.clone(),
        };
        for i in 0..self.convs_dilated.len() {
            let h = self.convs_dilated[i].forward(&x.broadcast_mul(mask)?)?;
            let h = self.norms_1[i].forward_gelu(&h)?;
            let h = self.convs_pointwise[i].forward(&h)?;
            let h = self.norms_2[i].forward_gelu(&h)?;
            x = (x + h)?;
        }
        x.broadcast_mul(mask)
    }
}

/// A coupling flow whose transform is a rational-quadratic spline (`VitsConvFlow`).
#[derive(Debug, Clone)]
pub struct ConvFlow {
    conv_pre: Conv1d,
    conv_dds: DilatedDepthSeparableConv,
    conv_proj: Conv1d,
    num_bins: usize,
    tail_bound: f32,
    filter_channels: usize,
}

impl ConvFlow {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let half = cfg.depth_separable_channels / 2;
        let filter = cfg.hidden_size;
        let bins = cfg.duration_predictor_flow_bins;
        let pointwise = ConvSpec::default();
        Ok(Self {
            conv_pre: Conv1d::new(vb.pp("conv_pre"), half, filter, 1, pointwise)?,
            conv_dds: DilatedDepthSeparableConv::new(cfg, vb.pp("conv_dds"))?,
            conv_proj: Conv1d::new(
                vb.pp("conv_proj"),
                filter,
                half * (3 * bins - 1),
                1,
                pointwise,
            )?,
            num_bins: bins,
            tail_bound: cfg.duration_predictor_tail_bound as f32,
            filter_channels: filter,
        })
    }

    /// The inverse transform of `x` `[b, 2, t]` conditioned on `cond` `[b, filter, t]`.
    pub fn reverse(&self, x: &Tensor, mask: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let (first, second) = split_channels(x, 1)?;
        let h = self.conv_pre.forward(&first)?;
        let h = self.conv_dds.forward(&h, mask, Some(cond))?;
        let h = self.conv_proj.forward(&h)?.broadcast_mul(mask)?;
        let scale = (self.filter_channels as f32).sqrt();
        if let Some(op) = ferrovox_kernels::CudaSplineInverse::new(
            &h,
            self.num_bins,
            scale,
            self.tail_bound,
            spline::boundary_derivative(),
        ) {
            let second = second.contiguous()?.apply_op2(&h.contiguous()?, op)?;
            return Tensor::cat(&[&first, &second], 1)?.broadcast_mul(mask);
        }
        let (b, _, t) = h.dims3()?;
        let params = h
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?;
        let params = params
            .reshape((b, 3 * self.num_bins - 1, t))?
            .to_vec3::<f32>()?;
        let values = second
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .reshape((b, t))?
            .to_vec2::<f32>()?;
        let bins = self.num_bins;
        let mut out = Vec::with_capacity(b * t);
        for (item, row) in values.iter().enumerate() {
            for (pos, &y) in row.iter().enumerate() {
                let column = |range: std::ops::Range<usize>, div: f32| -> Vec<f32> {
                    range.map(|c| params[item][c][pos] / div).collect()
                };
                let widths = column(0..bins, scale);
                let heights = column(bins..2 * bins, scale);
                let derivatives = column(2 * bins..3 * bins - 1, 1.0);
                let p = SplineParams {
                    widths: &widths,
                    heights: &heights,
                    derivatives: &derivatives,
                };
                out.push(spline::inverse(y, p, self.tail_bound));
            }
        }
        let second = Tensor::from_vec(out, (b, 1, t), x.device())?.to_dtype(x.dtype())?;
        Tensor::cat(&[&first, &second], 1)?.broadcast_mul(mask)
    }
}

/// `VitsElementwiseAffine`: `y = translate + exp(log_scale) · x` per channel.
#[derive(Debug, Clone)]
pub struct ElementwiseAffine {
    translate: Tensor,
    log_scale: Tensor,
}

impl ElementwiseAffine {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.depth_separable_channels;
        Ok(Self {
            translate: vb.get((c, 1), "translate")?,
            log_scale: vb.get((c, 1), "log_scale")?,
        })
    }

    pub fn reverse(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        x.broadcast_sub(&self.translate)?
            .broadcast_mul(&self.log_scale.neg()?.exp()?)?
            .broadcast_mul(mask)
    }
}

/// The stochastic duration predictor, reverse (sampling) direction only.
#[derive(Debug, Clone)]
pub struct StochasticDurationPredictor {
    conv_pre: Conv1d,
    conv_proj: Conv1d,
    conv_dds: DilatedDepthSeparableConv,
    cond: Option<Conv1d>,
    affine: ElementwiseAffine,
    /// `flows.2 ..= flows.N`, in load order; `flows.1` is skipped by upstream's reverse pass.
    conv_flows: Vec<ConvFlow>,
}

impl StochasticDurationPredictor {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let pointwise = ConvSpec::default();
        let cond = if cfg.speaker_embedding_size > 0 {
            Some(Conv1d::new(
                vb.pp("cond"),
                cfg.speaker_embedding_size,
                c,
                1,
                pointwise,
            )?)
        } else {
            None
        };
        let conv_flows = (2..=cfg.duration_predictor_num_flows)
            .map(|i| ConvFlow::new(cfg, vb.pp(format!("flows.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_pre: Conv1d::new(vb.pp("conv_pre"), c, c, 1, pointwise)?,
            conv_proj: Conv1d::new(vb.pp("conv_proj"), c, c, 1, pointwise)?,
            conv_dds: DilatedDepthSeparableConv::new(cfg, vb.pp("conv_dds"))?,
            cond,
            affine: ElementwiseAffine::new(cfg, vb.pp("flows.0"))?,
            conv_flows,
        })
    }

    /// Log-durations `[b, 1, t]` from encoder states `[b, hidden, t]`, the padding mask
    /// `[b, 1, t]`, an optional speaker embedding `[b, s, 1]` and standard-normal `noise`
    /// `[b, 2, t]` scaled by `noise_scale`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        speaker: Option<&Tensor>,
        noise: &Tensor,
        noise_scale: f64,
    ) -> Result<Tensor> {
        let mut x = self.conv_pre.forward(hidden)?;
        if let (Some(cond), Some(g)) = (&self.cond, speaker) {
            x = x.broadcast_add(&cond.forward(g)?)?;
        }
        let x = self.conv_dds.forward(&x, mask, None)?;
        let x = self.conv_proj.forward(&x)?.broadcast_mul(mask)?;
        let mut latents = (noise * noise_scale)?;
        for flow in self.conv_flows.iter().rev() {
            latents = flip_channels(&latents)?;
            latents = flow.reverse(&latents, mask, &x)?;
        }
        latents = flip_channels(&latents)?;
        latents = self.affine.reverse(&latents, mask)?;
        latents.narrow(1, 0, 1)
    }
}

/// The deterministic duration predictor (`use_stochastic_duration_prediction = false`).
#[derive(Debug, Clone)]
pub struct DurationPredictor {
    conv_1: Conv1d,
    norm_1: ChannelLayerNorm,
    conv_2: Conv1d,
    norm_2: ChannelLayerNorm,
    proj: Conv1d,
    cond: Option<Conv1d>,
}

impl DurationPredictor {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (k, f) = (
            cfg.duration_predictor_kernel_size,
            cfg.duration_predictor_filter_channels,
        );
        let same = ConvSpec {
            padding: k / 2,
            ..ConvSpec::default()
        };
        let cond = if cfg.speaker_embedding_size > 0 {
            Some(Conv1d::new(
                vb.pp("cond"),
                cfg.speaker_embedding_size,
                cfg.hidden_size,
                1,
                ConvSpec::default(),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv_1: Conv1d::new(vb.pp("conv_1"), cfg.hidden_size, f, k, same)?,
            norm_1: ChannelLayerNorm::new(vb.pp("norm_1"), f, cfg.layer_norm_eps)?,
            conv_2: Conv1d::new(vb.pp("conv_2"), f, f, k, same)?,
            norm_2: ChannelLayerNorm::new(vb.pp("norm_2"), f, cfg.layer_norm_eps)?,
            proj: Conv1d::new(vb.pp("proj"), f, 1, 1, ConvSpec::default())?,
            cond,
        })
    }

    /// Log-durations `[b, 1, t]`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        speaker: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x = hidden.clone();
        if let (Some(cond), Some(g)) = (&self.cond, speaker) {
            x = x.broadcast_add(&cond.forward(g)?)?;
        }
        let x = self.conv_1.forward(&x.broadcast_mul(mask)?)?.relu()?;
        let x = self.norm_1.forward(&x)?;
        let x = self.conv_2.forward(&x.broadcast_mul(mask)?)?.relu()?;
        let x = self.norm_2.forward(&x)?;
        self.proj
            .forward(&x.broadcast_mul(mask)?)?
            .broadcast_mul(mask)
    }
}

/// Either duration predictor, as the config selects.
#[derive(Debug, Clone)]
pub enum Durations {
    /// `VitsStochasticDurationPredictor`.
    Stochastic(Box<StochasticDurationPredictor>),
    /// `VitsDurationPredictor`.
    Deterministic(Box<DurationPredictor>),
}

impl Durations {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(if cfg.use_stochastic_duration_prediction {
            Self::Stochastic(Box::new(StochasticDurationPredictor::new(cfg, vb)?))
        } else {
            Self::Deterministic(Box::new(DurationPredictor::new(cfg, vb)?))
        })
    }
}
