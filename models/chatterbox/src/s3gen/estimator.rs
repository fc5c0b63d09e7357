//! Mirrors `ConditionalDecoder` (`decoder.py`) with `causal=True` and one U-Net level, plus
//! `CausalBlock1D`, `CausalResnetBlock1D`, `CausalConv1d` and matcha's `SinusoidalPosEmb` /
//! `TimestepEmbedding`: the flow-matching vector field `v(x, t | mu, spks, cond)`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use ferrovox_layers::{mish, Conv1d, ConvSpec};

use crate::s3gen::basic_transformer::{BasicTransformerBlock, KeyBias};
use crate::s3gen::flow_config::EstimatorConfig;

/// `CausalConv1d`: `kernel − 1` zeros on the left, none on the right.
#[derive(Debug, Clone)]
struct CausalConv1d {
    conv: Conv1d,
    left_pad: usize,
}

impl CausalConv1d {
    fn new(c_in: usize, c_out: usize, kernel: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv1d::new(vb, c_in, c_out, kernel, ConvSpec::default())?,
            left_pad: kernel - 1,
        })
    }
}

impl Module for CausalConv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv
            .forward(&x.pad_with_zeros(D::Minus1, self.left_pad, 0)?)
    }
}

/// `CausalBlock1D`: causal conv k3, LayerNorm over channels (not the GroupNorm of the
/// non-causal `Block1D`), Mish, all under the mask.
#[derive(Debug, Clone)]
struct CausalBlock1D {
    conv: CausalConv1d,
    norm: LayerNorm,
}

impl CausalBlock1D {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: CausalConv1d::new(c_in, c_out, 3, vb.pp("block.0"))?,
            norm: candle_nn::layer_norm(c_out, 1e-5, vb.pp("block.2"))?,
        })
    }

    /// `x` `[b, c_in, t]`, `mask` `[b, 1, t]`.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward(&x.broadcast_mul(mask)?)?;
        let y = self
            .norm
            .forward(&y.transpose(1, 2)?.contiguous()?)?
            .transpose(1, 2)?;
        mish(&y)?.broadcast_mul(mask)
    }
}

/// `CausalResnetBlock1D`: two causal blocks with the time embedding added between them, and a
/// k1 conv on the residual path.
#[derive(Debug, Clone)]
struct CausalResnetBlock1D {
    mlp: Linear,
    block1: CausalBlock1D,
    block2: CausalBlock1D,
    res_conv: Conv1d,
}

impl CausalResnetBlock1D {
    fn new(c_in: usize, c_out: usize, time_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mlp: candle_nn::linear(time_dim, c_out, vb.pp("mlp.1"))?,
            block1: CausalBlock1D::new(c_in, c_out, vb.pp("block1"))?,
            block2: CausalBlock1D::new(c_out, c_out, vb.pp("block2"))?,
            res_conv: Conv1d::new(vb.pp("res_conv"), c_in, c_out, 1, ConvSpec::default())?,
        })
    }

    /// `x` `[b, c_in, t]`, `mask` `[b, 1, t]`, `temb` `[b, time_dim]`.
    fn forward(&self, x: &Tensor, mask: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.block1.forward(x, mask)?;
        let h = h.broadcast_add(&self.mlp.forward(&mish(temb)?)?.unsqueeze(2)?)?;
        let h = self.block2.forward(&h, mask)?;
        h + self.res_conv.forward(&x.broadcast_mul(mask)?)?
    }
}

/// One U-Net block: resnet then transformer blocks (time-major inside).
#[derive(Debug, Clone)]
struct UNetBlock {
    resnet: CausalResnetBlock1D,
    transformers: Vec<BasicTransformerBlock>,
}

impl UNetBlock {
    fn new(c_in: usize, c_out: usize, cfg: &EstimatorConfig, vb: VarBuilder) -> Result<Self> {
        let transformers = (0..cfg.n_blocks)
            .map(|j| {
                BasicTransformerBlock::new(
                    c_out,
                    cfg.num_heads,
                    cfg.attention_head_dim,
                    vb.pp(format!("1.{j}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            resnet: CausalResnetBlock1D::new(c_in, c_out, 4 * cfg.channels(), vb.pp("0"))?,
            transformers,
        })
    }

    fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.transformers
            .iter_mut()
            .try_for_each(|t| t.bf16_products(on))
    }

    /// `[b, c_in, t]` -> `[b, c_out, t]`, recording `{name}.resnet` and `{name}.tf.{j}`.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        temb: &Tensor,
        key_bias: &KeyBias,
        name: &str,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let x = self.resnet.forward(x, mask, temb)?;
        record(&format!("{name}.resnet"), &x);
        let mut x = x.transpose(1, 2)?.contiguous()?;
        for (j, block) in self.transformers.iter().enumerate() {
            x = block.forward(&x, key_bias)?;
            record(&format!("{name}.tf.{j}"), &x);
        }
        x.transpose(1, 2)?.contiguous()
    }
}

/// The causal U-Net estimator.
#[derive(Debug, Clone)]
pub struct ConditionalDecoder {
    time_linear_1: Linear,
    time_linear_2: Linear,
    /// Meanflow's `time_embed_mixer`: `[time_dim, 2·time_dim]`, no bias.
    time_mixer: Option<Linear>,
    down: UNetBlock,
    down_conv: CausalConv1d,
    mid: Vec<UNetBlock>,
    up: UNetBlock,
    up_conv: CausalConv1d,
    final_block: CausalBlock1D,
    final_proj: Conv1d,
    in_channels: usize,
}

impl ConditionalDecoder {
    /// `vb` at `flow.decoder.estimator`.
    pub fn new(cfg: &EstimatorConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels();
        let time_dim = 4 * c;
        let mid = (0..cfg.num_mid_blocks)
            .map(|m| UNetBlock::new(c, c, cfg, vb.pp(format!("mid_blocks.{m}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            time_linear_1: candle_nn::linear(
                cfg.in_channels,
                time_dim,
                vb.pp("time_mlp.linear_1"),
            )?,
            time_linear_2: candle_nn::linear(time_dim, time_dim, vb.pp("time_mlp.linear_2"))?,
            time_mixer: cfg
                .meanflow
                .then(|| {
                    candle_nn::linear_no_bias(2 * time_dim, time_dim, vb.pp("time_embed_mixer"))
                })
                .transpose()?,
            down: UNetBlock::new(cfg.in_channels, c, cfg, vb.pp("down_blocks.0"))?,
            down_conv: CausalConv1d::new(c, c, 3, vb.pp("down_blocks.0.2"))?,
            mid,
            // The up block takes the mid output and the down block's skip, stacked.
            up: UNetBlock::new(2 * c, c, cfg, vb.pp("up_blocks.0"))?,
            up_conv: CausalConv1d::new(c, c, 3, vb.pp("up_blocks.0.2"))?,
            final_block: CausalBlock1D::new(c, c, vb.pp("final_block"))?,
            final_proj: Conv1d::new(
                vb.pp("final_proj"),
                c,
                cfg.out_channels,
                1,
                ConvSpec::default(),
            )?,
            in_channels: cfg.in_channels,
        })
    }

    /// The transformer blocks' products on bf16-rounded inputs with f32 sums where the CPU has
    /// AVX-512 BF16 and `on` ([`BasicTransformerBlock::bf16_products`]); the convolutions stay
    /// f32.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.down.bf16_products(on)?;
        for m in &mut self.mid {
            m.bf16_products(on)?;
        }
        self.up.bf16_products(on)
    }

    /// `SinusoidalPosEmb(in_channels)` at scale 1000: `t` `[b]` -> `[b, in_channels]`.
    pub fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.in_channels / 2;
        let step = -(10000f64.ln() / (half - 1) as f64);
        let freqs = Tensor::arange(0u32, half as u32, t.device())?
            .to_dtype(DType::F32)?
            .affine(step, 0.0)?
            .exp()?
            .to_dtype(t.dtype())?;
        let e = (t * 1000.0)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs.unsqueeze(0)?)?;
        Tensor::cat(&[e.sin()?, e.cos()?], 1)
    }

    /// Whether this is a meanflow estimator (it takes the step's end time too).
    pub fn is_meanflow(&self) -> bool {
        self.time_mixer.is_some()
    }

    /// `time_mlp` of a time embedding, `[b, in_channels]` -> `[b, time_dim]`.
    fn time_mlp(&self, time_emb: &Tensor) -> Result<Tensor> {
        self.time_linear_2.forward(&candle_nn::ops::silu(
            &self.time_linear_1.forward(time_emb)?,
        )?)
    }

    /// A meanflow estimator's field over the step from `t` to `r` (both `[b]`); the other
    /// arguments as [`Self::forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_meanflow(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mu: &Tensor,
        t: &Tensor,
        r: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let Some(mixer) = &self.time_mixer else {
            candle_core::bail!("this estimator is not a meanflow one: it takes no end time");
        };
        let embed = |t: &Tensor| self.time_mlp(&self.time_embedding(t)?);
        let temb = mixer.forward(&Tensor::cat(&[embed(t)?, embed(r)?], 1)?)?;
        self.forward_with_temb(x, mask, mu, &temb, spks, cond, &mut |_, _| {})
    }

    /// `x`, `mu`, `cond` `[b, out, t]`; `mask` `[b, 1, t]`; `t` `[b]`; `spks` `[b, out]`.
    /// Returns `[b, out, t]`, zero on masked frames.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mu: &Tensor,
        t: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        self.forward_recorded(x, mask, mu, t, spks, cond, &mut |_, _| {})
    }

    /// [`Self::forward`], handing each stage to `record` under the fixture names (`time_emb`,
    /// `time_mlp`, `down.0.resnet`, `down.0.tf.{j}` (time-major), `down.0.downsample`,
    /// `mid.{m}.resnet`, `mid.{m}.tf.{j}`, `up.0.resnet`, `up.0.tf.{j}`, `up.0.upsample`,
    /// `final_block`, `final_proj` (before the mask)).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_recorded(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mu: &Tensor,
        t: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let time_emb = self.time_embedding(t)?;
        record("time_emb", &time_emb);
        let temb = self.time_mlp(&time_emb)?;
        record("time_mlp", &temb);
        self.forward_with_temb(x, mask, mu, &temb, spks, cond, record)
    }

    /// The U-Net under the time embedding `temb` `[b, time_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn forward_with_temb(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mu: &Tensor,
        temb: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let (_, _, frames) = x.dims3()?;
        let spks = spks.unsqueeze(2)?.repeat((1, 1, frames))?;
        let h = Tensor::cat(&[x, mu, &spks, cond], 1)?;
        // diffusers adds the bias to the scores; −1e10 rather than −∞ (upstream's `mask_to_bias`).
        let key_bias = KeyBias::from_mask(mask)?;

        let h = self
            .down
            .forward(&h, mask, temb, &key_bias, "down.0", record)?;
        let skip = h.clone();
        let mut h = self.down_conv.forward(&h.broadcast_mul(mask)?)?;
        record("down.0.downsample", &h);
        for (m, block) in self.mid.iter().enumerate() {
            h = block.forward(&h, mask, temb, &key_bias, &format!("mid.{m}"), record)?;
        }
        let h = Tensor::cat(&[&h, &skip], 1)?;
        let h = self.up.forward(&h, mask, temb, &key_bias, "up.0", record)?;
        let h = self.up_conv.forward(&h.broadcast_mul(mask)?)?;
        record("up.0.upsample", &h);
        let h = self.final_block.forward(&h, mask)?;
        record("final_block", &h);
        let out = self.final_proj.forward(&h.broadcast_mul(mask)?)?;
        record("final_proj", &out);
        out.broadcast_mul(mask)
    }
}
