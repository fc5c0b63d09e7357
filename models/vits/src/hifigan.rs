//! Mirrors `VitsHifiGan` and `HifiGanResidualBlock` of transformers' `modeling_vits.py`, plus
//! VITS's second residual block (`ResBlock2`), which Piper's medium and low voices use.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_device::kernels::PackedConv1d;

use crate::config::ResBlockKind;
use crate::layers::{Conv1d, ConvSpec, ConvTranspose1d};
use crate::Config;

/// A residual block of either kind.
#[derive(Debug, Clone)]
pub struct ResBlock {
    /// `(dilated conv, plain conv)` pairs for kind 1; `(dilated conv, None)` for kind 2.
    convs: Vec<(Conv1d, Option<Conv1d>)>,
    /// Per kind-1 pair, both convs on the CPU's Winograd kernel, the first writing its output
    /// channels-last and the second reading it so: the transposes between them are skipped.
    handoffs: Vec<Option<(PackedConv1d, PackedConv1d)>>,
    /// Every conv reading and writing channels-last, residuals included, where the CPU's
    /// Winograd kernel runs them all: a stage of such blocks transposes only at its ends.
    channels_last: Option<Vec<(PackedConv1d, Option<PackedConv1d>)>>,
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
        let channels_last = if ferrovox_device::kernels::channels_last_enabled() {
            convs
                .iter()
                .map(|(dilated, plain)| {
                    let dilated = dilated.channels_last(true, true)?;
                    Some(match plain {
                        Some(plain) => (dilated, Some(plain.channels_last(true, true)?)),
                        None => (dilated, None),
                    })
                })
                .collect()
        } else {
            None
        };
        Ok(Self {
            convs,
            handoffs,
            channels_last,
        })
    }

    /// [`ResBlock::forward_into`] on channels-last `x` and `sum` (`[b, t, c]`); an error
    /// where a conv lacks that layout ([`ResBlock::has_channels_last`]).
    pub fn forward_channels_last(&self, x: &Tensor, sum: Option<&Tensor>) -> Result<Tensor> {
        let Some(convs) = &self.channels_last else {
            candle_core::bail!("residual block: a conv has no channels-last kernel");
        };
        let last = convs.len() - 1;
        let mut x = x.contiguous()?;
        for (i, (dilated, plain)) in convs.iter().enumerate() {
            let (conv, input) = match plain {
                Some(plain) => (plain, x.apply_op1(dilated.clone())?),
                None => (dilated, x.clone()),
            };
            x = match sum {
                Some(sum) if i == last => input.apply_op3(&x, sum, conv.clone())?,
                _ => input.apply_op2(&x, conv.clone())?,
            };
        }
        Ok(x)
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

impl ResBlock {
    /// Whether every conv of the block reads and writes channels-last.
    pub fn has_channels_last(&self) -> bool {
        self.channels_last.is_some()
    }
}

impl HifiGan {
    /// One stage's residual blocks, channels-last between its two transposes.
    /// Takes `x` by value: the channels-first copy is freed as soon as the channels-last one
    /// exists, so the stage holds no more activations than it does channels-first.
    fn stage_channels_last(blocks: &[ResBlock], x: Tensor) -> Result<Tensor> {
        use ferrovox_device::kernels::{ToChannelsFirst, ToChannelsLast};
        let x = {
            let channels_first = x;
            channels_first.contiguous()?.apply_op1(ToChannelsLast)?
        };
        let mut sum: Option<Tensor> = None;
        for block in blocks {
            sum = Some(block.forward_channels_last(&x, sum.as_ref())?);
        }
        match sum {
            Some(sum) => sum.apply_op1(ToChannelsFirst),
            None => x.apply_op1(ToChannelsFirst),
        }
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
                cfg.leaky_relu_slope,
                input_scale,
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
        Ok(Self {
            conv_pre,
            upsampler,
            resblocks,
            conv_post,
            cond,
            num_kernels: cfg.resblock_kernel_sizes.len(),
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
            if x.dtype() == DType::F32 && blocks.iter().all(ResBlock::has_channels_last) {
                x = Self::stage_channels_last(blocks, x)?;
                continue;
            }
            let mut sum = blocks[0].forward(&x)?;
            for block in &blocks[1..] {
                sum = block.forward_into(&x, Some(&sum))?;
            }
            // Not divided by the number of blocks: the next layer's weight holds the 1/n.
            x = sum;
        }
        crate::layers::tanh(&self.conv_post.forward(&x)?)
    }
}
