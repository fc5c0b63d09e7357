//! Mirrors `VitsWaveNet`, `VitsResidualCouplingLayer` and `VitsResidualCouplingBlock` of
//! transformers' `modeling_vits.py`: the prior flow, run in reverse at inference.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::Config;
use ferrovox_layers::{flip_channels, gated_tanh, split_channels, Conv1d, ConvSpec};

/// Gated dilated convolutions with residual and skip outputs.
#[derive(Debug, Clone)]
pub struct WaveNet {
    in_layers: Vec<Conv1d>,
    res_skip_layers: Vec<Conv1d>,
    cond_layer: Option<Conv1d>,
    hidden: usize,
}

impl WaveNet {
    pub fn new(cfg: &Config, num_layers: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let k = cfg.wavenet_kernel_size;
        let cond_layer = if cfg.speaker_embedding_size > 0 {
            Some(Conv1d::new(
                vb.pp("cond_layer"),
                cfg.speaker_embedding_size,
                2 * h * num_layers,
                1,
                ConvSpec::default(),
            )?)
        } else {
            None
        };
        let mut in_layers = Vec::with_capacity(num_layers);
        let mut res_skip_layers = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let dilation = cfg.wavenet_dilation_rate.pow(i as u32);
            in_layers.push(Conv1d::new(
                vb.pp(format!("in_layers.{i}")),
                h,
                2 * h,
                k,
                ConvSpec::same(k, dilation),
            )?);
            let out = if i + 1 < num_layers { 2 * h } else { h };
            res_skip_layers.push(Conv1d::new(
                vb.pp(format!("res_skip_layers.{i}")),
                h,
                out,
                1,
                ConvSpec::default(),
            )?);
        }
        Ok(Self {
            in_layers,
            res_skip_layers,
            cond_layer,
            hidden: h,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: &Tensor, speaker: Option<&Tensor>) -> Result<Tensor> {
        let h = self.hidden;
        let cond = match (&self.cond_layer, speaker) {
            (Some(layer), Some(g)) => Some(layer.forward(g)?),
            _ => None,
        };
        let mut x = x.clone();
        let mut skip: Option<Tensor> = None;
        let n = self.in_layers.len();
        for i in 0..n {
            let mut states = self.in_layers[i].forward(&x)?;
            if let Some(cond) = &cond {
                states = states.broadcast_add(&cond.narrow(1, i * 2 * h, 2 * h)?)?;
            }
            let acts = gated_tanh(&states, h)?;
            let res_skip = self.res_skip_layers[i].forward(&acts)?;
            let add = if i + 1 < n {
                let (res, skip_part) = split_channels(&res_skip, h)?;
                x = (x + res)?.broadcast_mul(mask)?;
                skip_part
            } else {
                res_skip
            };
            skip = Some(match skip {
                Some(s) => (s + add)?,
                None => add,
            });
        }
        match skip {
            Some(s) => s.broadcast_mul(mask),
            None => x.zeros_like(),
        }
    }
}

/// Mean-only affine coupling: the second half is shifted by a WaveNet of the first.
#[derive(Debug, Clone)]
pub struct ResidualCouplingLayer {
    conv_pre: Conv1d,
    wavenet: WaveNet,
    conv_post: Conv1d,
    half: usize,
}

impl ResidualCouplingLayer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let half = cfg.flow_size / 2;
        let pointwise = ConvSpec::default();
        Ok(Self {
            conv_pre: Conv1d::new(vb.pp("conv_pre"), half, cfg.hidden_size, 1, pointwise)?,
            wavenet: WaveNet::new(cfg, cfg.prior_encoder_num_wavenet_layers, vb.pp("wavenet"))?,
            conv_post: Conv1d::new(vb.pp("conv_post"), cfg.hidden_size, half, 1, pointwise)?,
            half,
        })
    }

    pub fn reverse(&self, x: &Tensor, mask: &Tensor, speaker: Option<&Tensor>) -> Result<Tensor> {
        let (first, second) = split_channels(x, self.half)?;
        let h = self.conv_pre.forward(&first)?.broadcast_mul(mask)?;
        let h = self.wavenet.forward(&h, mask, speaker)?;
        let mean = self.conv_post.forward(&h)?.broadcast_mul(mask)?;
        let second = (second - mean)?.broadcast_mul(mask)?;
        Tensor::cat(&[&first, &second], 1)
    }
}

/// The stack of coupling layers with channel flips between them.
#[derive(Debug, Clone)]
pub struct ResidualCouplingBlock {
    flows: Vec<ResidualCouplingLayer>,
}

impl ResidualCouplingBlock {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let flows = (0..cfg.prior_encoder_num_flows)
            .map(|i| ResidualCouplingLayer::new(cfg, vb.pp(format!("flows.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { flows })
    }

    /// Maps prior latents `[b, flow, frames]` to the decoder's latent space.
    pub fn reverse(&self, x: &Tensor, mask: &Tensor, speaker: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for flow in self.flows.iter().rev() {
            x = flip_channels(&x)?;
            x = flow.reverse(&x, mask, speaker)?;
        }
        Ok(x)
    }
}
