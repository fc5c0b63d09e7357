//! Mirrors `UpsampleConformerEncoder` (`transformer/upsample_encoder.py`) with its
//! `LinearNoSubsampling` embeddings, `PreLookaheadLayer`, `Upsample1D` and
//! `ConformerEncoderLayer`s (`transformer/encoder_layer.py`): 25 Hz token embeddings to 50 Hz
//! frames, attending over the whole sequence.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use ferrovox_layers::{Conv1d, ConvSpec, StepLinear};

use crate::s3gen::flow_config::EncoderConfig;
use crate::s3gen::rel_attention::{rel_position_table, RelPositionMultiHeadedAttention};

/// `LinearNoSubsampling` + `EspnetRelPositionalEncoding`: Linear, LayerNorm, `· √d`.
#[derive(Debug, Clone)]
struct LinearEmbed {
    linear: Linear,
    norm: LayerNorm,
    xscale: f64,
}

impl LinearEmbed {
    fn new(in_dim: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear: candle_nn::linear(in_dim, d, vb.pp("out.0"))?,
            norm: candle_nn::layer_norm(d, 1e-5, vb.pp("out.1"))?,
            xscale: (d as f64).sqrt(),
        })
    }

    /// `[b, t, in]` -> (`[b, t, d]`, the rel-pos table `[1, 2t − 1, d]`).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.norm.forward(&self.linear.forward(x)?)?;
        let (_, t, d) = x.dims3()?;
        let pos_emb = rel_position_table(t, d, x.device())?.to_dtype(x.dtype())?;
        Ok(((x * self.xscale)?, pos_emb))
    }
}

/// `PreLookaheadLayer`: each token sees `len` tokens ahead through a conv, then a causal one.
#[derive(Debug, Clone)]
struct PreLookahead {
    conv1: Conv1d,
    conv2: Conv1d,
    len: usize,
}

impl PreLookahead {
    fn new(d: usize, len: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv1d::new(vb.pp("conv1"), d, d, len + 1, ConvSpec::default())?,
            conv2: Conv1d::new(vb.pp("conv2"), d, d, 3, ConvSpec::default())?,
            len,
        })
    }

    /// `[b, t, d]` -> `[b, t, d]`. Padded batch rows are read as they are (not masked), as
    /// upstream does.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.transpose(1, 2)?.pad_with_zeros(D::Minus1, 0, self.len)?;
        let y = candle_nn::ops::leaky_relu(&self.conv1.forward(&y)?, 0.01)?;
        let y = self.conv2.forward(&y.pad_with_zeros(D::Minus1, 2, 0)?)?;
        x + y.transpose(1, 2)?
    }
}

/// `Upsample1D` (the encoder's, not the U-Net's): nearest ×stride, `2·stride` zeros on the left,
/// conv of kernel `2·stride + 1`.
#[derive(Debug, Clone)]
struct Upsample1D {
    conv: Conv1d,
    stride: usize,
}

impl Upsample1D {
    fn new(d: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv1d::new(vb.pp("conv"), d, d, 2 * stride + 1, ConvSpec::default())?,
            stride,
        })
    }

    /// `[b, d, t]` -> `[b, d, stride·t]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let s = self.stride;
        let y = x
            .unsqueeze(3)?
            .broadcast_as((b, c, t, s))?
            .reshape((b, c, t * s))?
            .pad_with_zeros(D::Minus1, 2 * s, 0)?;
        self.conv.forward(&y)
    }
}

/// `ConformerEncoderLayer` without macaron FF or conv module: pre-norm attention and FF.
#[derive(Debug, Clone)]
pub struct ConformerEncoderLayer {
    self_attn: RelPositionMultiHeadedAttention,
    w_1: StepLinear,
    w_2: StepLinear,
    norm_mha: LayerNorm,
    norm_ff: LayerNorm,
}

impl ConformerEncoderLayer {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.output_size;
        // The conformer blocks' norms use espnet's 1e-12, not torch's 1e-5.
        let eps = 1e-12;
        Ok(Self {
            self_attn: RelPositionMultiHeadedAttention::new(
                d,
                cfg.attention_heads,
                vb.pp("self_attn"),
            )?,
            w_1: StepLinear::new(candle_nn::linear(
                d,
                cfg.linear_units,
                vb.pp("feed_forward.w_1"),
            )?),
            w_2: StepLinear::new(candle_nn::linear(
                cfg.linear_units,
                d,
                vb.pp("feed_forward.w_2"),
            )?),
            norm_mha: candle_nn::layer_norm(d, eps, vb.pp("norm_mha"))?,
            norm_ff: candle_nn::layer_norm(d, eps, vb.pp("norm_ff"))?,
        })
    }

    /// The attention's and the feed-forward's projections on bf16-rounded inputs (see
    /// [`StepLinear::bf16_products`]).
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.self_attn.bf16_products(on)?;
        self.w_1.bf16_products(on)?;
        self.w_2.bf16_products(on)?;
        Ok(())
    }

    /// `x` `[b, t, d]`; `pos_emb` and `key_bias` as [`RelPositionMultiHeadedAttention::forward`].
    pub fn forward(&self, x: &Tensor, pos_emb: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.norm_mha.forward(x)?, pos_emb, key_bias)?;
        let x = (x + attn)?;
        let ff = self.w_2.forward(&candle_nn::ops::silu(
            &self.w_1.forward(&self.norm_ff.forward(&x)?)?,
        )?)?;
        x + ff
    }
}

/// What the encoder returns.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `[b, stride·t, d]`
    pub hidden: Tensor,
    /// `[b, 1, stride·t]`, 1 for valid frames and 0 for padding (upstream's `h_masks`).
    pub mask: Tensor,
}

/// The flow's conformer encoder with a ×`upsample_stride` upsampling in the middle.
#[derive(Debug, Clone)]
pub struct UpsampleConformerEncoder {
    embed: LinearEmbed,
    pre_lookahead_layer: PreLookahead,
    encoders: Vec<ConformerEncoderLayer>,
    up_layer: Upsample1D,
    up_embed: LinearEmbed,
    up_encoders: Vec<ConformerEncoderLayer>,
    after_norm: LayerNorm,
    stride: usize,
}

impl UpsampleConformerEncoder {
    /// `vb` at `flow.encoder`.
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.output_size;
        let blocks = |prefix: &str, n: usize| -> Result<Vec<ConformerEncoderLayer>> {
            (0..n)
                .map(|i| ConformerEncoderLayer::new(cfg, vb.pp(format!("{prefix}.{i}"))))
                .collect()
        };
        Ok(Self {
            embed: LinearEmbed::new(cfg.input_size, d, vb.pp("embed"))?,
            pre_lookahead_layer: PreLookahead::new(
                d,
                cfg.pre_lookahead_len,
                vb.pp("pre_lookahead_layer"),
            )?,
            encoders: blocks("encoders", cfg.num_blocks)?,
            up_layer: Upsample1D::new(d, cfg.upsample_stride, vb.pp("up_layer"))?,
            up_embed: LinearEmbed::new(d, d, vb.pp("up_embed"))?,
            up_encoders: blocks("up_encoders", cfg.num_up_blocks)?,
            after_norm: candle_nn::layer_norm(d, 1e-5, vb.pp("after_norm"))?,
            stride: cfg.upsample_stride,
        })
    }

    /// Every conformer layer's projections on bf16-rounded inputs (see
    /// [`StepLinear::bf16_products`]).
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.encoders
            .iter_mut()
            .chain(self.up_encoders.iter_mut())
            .try_for_each(|l| l.bf16_products(on))
    }

    /// `xs` `[b, t, input_size]` (masked token embeddings), `lengths` each item's valid tokens
    /// (every one at least 1).
    pub fn forward(&self, xs: &Tensor, lengths: &[usize]) -> Result<EncoderOutput> {
        self.forward_recorded(xs, lengths, &mut |_, _| {})
    }

    /// [`Self::forward`], handing each stage's output to `record` under the fixture names
    /// (`embed.x`, `embed.pos_emb`, `pre_lookahead`, `encoders.{i}`, `up_layer` (channels
    /// first), `up_embed.x`, `up_embed.pos_emb`, `up_encoders.{i}`, `after_norm`).
    pub fn forward_recorded(
        &self,
        xs: &Tensor,
        lengths: &[usize],
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<EncoderOutput> {
        let (b, t, _) = xs.dims3()?;
        if lengths.len() != b {
            candle_core::bail!("{} lengths for a batch of {b}", lengths.len());
        }
        let device = xs.device();
        let (x, pos_emb) = self.embed.forward(xs)?;
        record("embed.x", &x);
        record("embed.pos_emb", &pos_emb);
        let mut x = self.pre_lookahead_layer.forward(&x)?;
        record("pre_lookahead", &x);
        let key_bias = key_padding_bias(lengths, t, device)?.to_dtype(x.dtype())?;
        for (i, layer) in self.encoders.iter().enumerate() {
            x = layer.forward(&x, &pos_emb, &key_bias)?;
            record(&format!("encoders.{i}"), &x);
        }
        let up = self.up_layer.forward(&x.transpose(1, 2)?)?;
        record("up_layer", &up);
        let t2 = t * self.stride;
        let lengths2: Vec<usize> = lengths.iter().map(|l| l * self.stride).collect();
        // Contiguous first: Candle 0.11.1's batched matmul (under `Linear`) mixes up the items
        // after the first when the input is a transposed view.
        let (mut x, pos_emb) = self.up_embed.forward(&up.transpose(1, 2)?.contiguous()?)?;
        record("up_embed.x", &x);
        record("up_embed.pos_emb", &pos_emb);
        let key_bias = key_padding_bias(&lengths2, t2, device)?.to_dtype(x.dtype())?;
        for (i, layer) in self.up_encoders.iter().enumerate() {
            x = layer.forward(&x, &pos_emb, &key_bias)?;
            record(&format!("up_encoders.{i}"), &x);
        }
        let hidden = self.after_norm.forward(&x)?;
        record("after_norm", &hidden);
        let mask = length_mask(&lengths2, t2, device)?
            .unsqueeze(1)?
            .to_dtype(hidden.dtype())?;
        Ok(EncoderOutput { hidden, mask })
    }
}

/// `[b, t]` f32: 1 where position < the item's length, else 0 (`~make_pad_mask`).
pub fn length_mask(lengths: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| if i < len { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (lengths.len(), t), device)
}

/// `[b, 1, 1, t]` f32: 0 for valid keys, −∞ for padded ones.
fn key_padding_bias(lengths: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let bias: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| if i < len { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(bias, (lengths.len(), 1, 1, t), device)
}
