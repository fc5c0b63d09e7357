//! Mirrors `VitsHifiGan` and `HifiGanResidualBlock` of transformers' `modeling_vits.py`, plus
//! VITS's second residual block (`ResBlock2`), which Piper's medium and low voices use.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_kernels::{PackedConv1d, ResidualStage, Step};

use crate::config::ResBlockKind;
use crate::Config;
use ferrovox_layers::{Conv1d, ConvSpec, ConvTranspose1d};

/// A residual block of either kind.
#[derive(Debug, Clone)]
pub struct ResBlock {
    /// `(dilated conv, plain conv)` pairs for kind 1; `(dilated conv, None)` for kind 2.
    convs: Vec<(Conv1d, Option<Conv1d>)>,
    /// Per kind-1 pair, both convs on the CPU's Winograd kernel, the first writing its output
    /// channels-last and the second reading it so: the transposes between them are skipped.
    handoffs: Vec<Option<(PackedConv1d, PackedConv1d)>>,
    /// Every conv reading and writing channels-last, as [`ResidualStage`] steps, where the
    /// CPU's Winograd kernel runs them all.
    steps: Option<Vec<Step>>,
}

impl ResBlock {
    pub fn new(
        kind: ResBlockKind,
        channels: usize,
        kernel: usize,
        dilations: &[usize],
        slope: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let convs = dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| -> Result<_> {
                let spec = ConvSpec {
                    input_leaky_relu: Some(slope),
                    ..ConvSpec::same(kernel, d)
                };
                Ok(match kind {
                    ResBlockKind::One => (
                        Conv1d::new(
                            vb.pp(format!("convs1.{i}")),
                            channels,
                            channels,
                            kernel,
                            spec,
                        )?,
                        Some(Conv1d::new(
                            vb.pp(format!("convs2.{i}")),
                            channels,
                            channels,
                            kernel,
                            ConvSpec {
                                input_leaky_relu: Some(slope),
                                ..ConvSpec::same(kernel, 1)
                            },
                        )?),
                    ),
                    ResBlockKind::Two => (
                        Conv1d::new(
                            vb.pp(format!("convs.{i}")),
                            channels,
                            channels,
                            kernel,
                            spec,
                        )?,
                        None,
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let handoffs = convs
            .iter()
            .map(|(dilated, plain)| {
                let plain = plain.as_ref()?;
                Some((
                    dilated.channels_last(false, true)?,
                    plain.channels_last(true, false)?,
                ))
            })
            .collect();
        let steps = if ferrovox_kernels::channels_last_enabled() {
            convs
                .iter()
                .map(|(dilated, plain)| {
                    std::iter::once(dilated)
                        .chain(plain)
                        .map(|conv| conv.channels_last(true, true))
                        .collect()
                })
                .collect()
        } else {
            None
        };
        Ok(Self {
            convs,
            handoffs,
            steps,
        })
    }
}

impl ResBlock {
    /// The block's output, plus `sum` when given: the last conv adds it in the same pass.
    pub fn forward_into(&self, x: &Tensor, sum: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        let last = self.convs.len() - 1;
        for (i, ((dilated, plain), handoff)) in self.convs.iter().zip(&self.handoffs).enumerate() {
            if let (Some((first, second)), DType::F32) = (handoff, x.dtype()) {
                let mid = x.contiguous()?.apply_op1(first.clone())?;
                x = match sum {
                    Some(sum) if i == last => {
                        mid.apply_op3(&x, &sum.contiguous()?, second.clone())?
                    }
                    _ => mid.apply_op2(&x, second.clone())?,
                };
                continue;
            }
            let (conv, input) = match plain {
                Some(plain) => (plain, dilated.forward(&x)?),
                None => (dilated, x.clone()),
            };
            x = match sum {
                Some(sum) if i == last => conv.forward_residual_sum(&input, &x, sum)?,
                _ => conv.forward_residual(&input, &x)?,
            };
        }
        Ok(x)
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_into(x, None)
    }
}

/// The HiFi-GAN generator: spectrogram latents `[b, flow, frames]` to audio `[b, 1, samples]`.
#[derive(Debug, Clone)]
pub struct HifiGan {
    conv_pre: Conv1d,
    upsampler: Vec<ConvTranspose1d>,
    resblocks: Vec<ResBlock>,
    conv_post: Conv1d,
    cond: Option<Conv1d>,
    num_kernels: usize,
    /// Per stage, its residual blocks as one chunked op, where the CPU's Winograd kernel runs
    /// every conv channels-last.
    stages: Vec<Option<ResidualStage>>,
}

impl HifiGan {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c0 = cfg.upsample_initial_channel;
        let conv_pre = Conv1d::new(
            vb.pp("conv_pre"),
            cfg.flow_size,
            c0,
            7,
            ConvSpec::same(7, 1),
        )?;
        let mut upsampler = Vec::new();
        let mut resblocks = Vec::new();
        let mut channels = c0;
        let mean = 1.0 / cfg.resblock_kernel_sizes.len() as f64;
        for (i, (&rate, &kernel)) in cfg
            .upsample_rates
            .iter()
            .zip(&cfg.upsample_kernel_sizes)
            .enumerate()
        {
            let out = c0 >> (i + 1);
            // The stage before averages its residual blocks: the 1/n is folded in here.
            let input_scale = if i == 0 { 1.0 } else { mean };
            upsampler.push(ConvTranspose1d::new(
                vb.pp(format!("upsampler.{i}")),
                (channels, out),
                kernel,
                rate,
                ConvSpec {
                    input_leaky_relu: Some(cfg.leaky_relu_slope),
                    input_scale,
                    ..ConvSpec::default()
                },
            )?);
            channels = out;
            for (j, (&k, dilations)) in cfg
                .resblock_kernel_sizes
                .iter()
                .zip(&cfg.resblock_dilation_sizes)
                .enumerate()
            {
                let index = i * cfg.resblock_kernel_sizes.len() + j;
                resblocks.push(ResBlock::new(
                    cfg.resblock_kind,
                    channels,
                    k,
                    dilations,
                    cfg.leaky_relu_slope,
                    vb.pp(format!("resblocks.{index}")),
                )?);
            }
        }
        // The last activation uses torch's default slope, not the configured one.
        let conv_post = Conv1d::new(
            vb.pp("conv_post"),
            channels,
            1,
            7,
            ConvSpec {
                bias: false,
                input_leaky_relu: Some(0.01),
                input_scale: mean,
                ..ConvSpec::same(7, 1)
            },
        )?;
        let cond = if cfg.speaker_embedding_size > 0 {
            Some(Conv1d::new(
                vb.pp("cond"),
                cfg.speaker_embedding_size,
                c0,
                1,
                ConvSpec::default(),
            )?)
        } else {
            None
        };
        let num_kernels = cfg.resblock_kernel_sizes.len();
        let stages = resblocks
            .chunks(num_kernels)
            .map(|blocks| {
                let branches = blocks
                    .iter()
                    .map(|b| b.steps.clone())
                    .collect::<Option<_>>()?;
                ResidualStage::new(branches)
            })
            .collect();
        Ok(Self {
            conv_pre,
            upsampler,
            resblocks,
            conv_post,
            cond,
            num_kernels,
            stages,
        })
    }

    pub fn forward(&self, spectrogram: &Tensor, speaker: Option<&Tensor>) -> Result<Tensor> {
        let mut x = self.conv_pre.forward(spectrogram)?;
        if let (Some(cond), Some(g)) = (&self.cond, speaker) {
            x = x.broadcast_add(&cond.forward(g)?)?;
        }
        for (i, up) in self.upsampler.iter().enumerate() {
            x = up.forward(&x)?;
            let blocks = &self.resblocks[i * self.num_kernels..(i + 1) * self.num_kernels];
            if let (Some(stage), DType::F32) = (&self.stages[i], x.dtype()) {
                x = x.contiguous()?.apply_op1(stage.clone())?;
                continue;
            }
            let mut sum = blocks[0].forward(&x)?;
            for block in &blocks[1..] {
                sum = block.forward_into(&x, Some(&sum))?;
            }
            // Not divided by the number of blocks: the next layer's weight holds the 1/n.
            x = sum;
        }
        ferrovox_layers::tanh(&self.conv_post.forward(&x)?)
    }
}
