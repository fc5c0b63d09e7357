//! Mirrors `VitsTextEncoder`, `VitsEncoder`, `VitsEncoderLayer`, `VitsAttention` and
//! `VitsFeedForward` of transformers' `modeling_vits.py`: a transformer encoder with windowed
//! relative-position attention whose output is projected to the prior's means and log-variances.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::Config;
use ferrovox_layers::{scaled, Conv1d, ConvSpec};

/// Self-attention with relative position embeddings shared by all heads.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `q_proj`, `k_proj` and `v_proj` stacked into one projection, the query's scaling
    /// folded into its rows.
    qkv_proj: Linear,
    out_proj: Linear,
    emb_rel_k: Option<Tensor>,
    emb_rel_v: Option<Tensor>,
    num_heads: usize,
    head_dim: usize,
    window_size: usize,
}

impl Attention {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let head_dim = h / cfg.num_attention_heads;
        let linear = |name: &str, scale: f64| -> Result<(Tensor, Option<Tensor>)> {
            let vb = vb.pp(name);
            let w = scaled(vb.get((h, h), "weight")?, scale)?;
            let b = if cfg.use_bias {
                Some(scaled(vb.get(h, "bias")?, scale)?)
            } else {
                None
            };
            Ok((w, b))
        };
        let scaling = (head_dim as f64).powf(-0.5);
        let (q, k, v) = (
            linear("q_proj", scaling)?,
            linear("k_proj", 1.0)?,
            linear("v_proj", 1.0)?,
        );
        let qkv_bias = match (q.1, k.1, v.1) {
            (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
            _ => None,
        };
        let qkv_proj = Linear::new(Tensor::cat(&[q.0, k.0, v.0], 0)?, qkv_bias);
        let (out_w, out_b) = linear("out_proj", 1.0)?;
        let window_size = cfg.window_size.unwrap_or(0);
        let rel = |name: &str| -> Result<Option<Tensor>> {
            if window_size == 0 {
                return Ok(None);
            }
            vb.get((1, 2 * window_size + 1, head_dim), name).map(Some)
        };
        Ok(Self {
            qkv_proj,
            out_proj: Linear::new(out_w, out_b),
            emb_rel_k: rel("emb_rel_k")?,
            emb_rel_v: rel("emb_rel_v")?,
            num_heads: cfg.num_attention_heads,
            head_dim,
            window_size,
        })
    }

    /// `[bh, t, 2w + 1]` logits of the relative positions −w..=w → `[bh, t, t]` absolute ones,
    /// zero outside the window: row i's band is written from column i of a matrix `t + 2w` wide
    /// by reading the rows, padded to `t + 2w + 1`, at a stride one shorter.
    fn band_to_absolute(x: &Tensor, w: usize) -> Result<Tensor> {
        let (bh, t, _) = x.dims3()?;
        let wide = t + 2 * w;
        x.pad_with_zeros(2, 0, t)?
            .reshape((bh, t * (wide + 1)))?
            .narrow(1, 0, t * wide)?
            .reshape((bh, t, wide))?
            .narrow(2, w, t)?
            .contiguous()
    }

    /// `[bh, t, t]` absolute weights → `[bh, t, 2w + 1]` weights of the relative positions
    /// −w..=w (zero where a position falls outside the sequence): the inverse skew.
    fn absolute_to_band(x: &Tensor, w: usize) -> Result<Tensor> {
        let (bh, t, _) = x.dims3()?;
        let wide = t + 2 * w;
        x.pad_with_zeros(2, w, w)?
            .reshape((bh, t * wide))?
            .pad_with_zeros(1, 0, t)?
            .reshape((bh, t, wide + 1))?
            .narrow(2, 0, 2 * w + 1)?
            .contiguous()
    }

    /// `hidden` `[b, t, h]`; `mask_bias` `[b, 1, 1, t]` additive (0 or a large negative).
    pub fn forward(&self, hidden: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let (nh, hd) = (self.num_heads, self.head_dim);
        // [b, t, 3, nh, hd] → [3, b, nh, t, hd] in one copy; q, k and v are then slices.
        let qkv = self
            .qkv_proj
            .forward(hidden)?
            .reshape((b, t, 3, nh, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let part = |i: usize| qkv.get(i)?.reshape((b * nh, t, hd));
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let mut scores = q.matmul(&k.t()?)?;
        // Relative positions beyond the window have zero embeddings upstream, so only the
        // 2w + 1 positions of the window are computed.
        let w = self.window_size;
        if let Some(rel_k) = &self.emb_rel_k {
            let logits = q.broadcast_matmul(&rel_k.squeeze(0)?.t()?)?;
            scores = (scores + Self::band_to_absolute(&logits, w)?)?;
        }
        let scores = scores
            .reshape((b, nh, t, t))?
            .broadcast_add(mask_bias)?
            .reshape((b * nh, t, t))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let mut out = probs.matmul(&v)?;
        if let Some(rel_v) = &self.emb_rel_v {
            let weights = Self::absolute_to_band(&probs, w)?;
            out = (out + weights.broadcast_matmul(&rel_v.squeeze(0)?)?)?;
        }
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h))?;
        self.out_proj.forward(&out)
    }
}

/// Two convolutions with asymmetric "same" padding and a masked activation between them.
#[derive(Debug, Clone)]
pub struct FeedForward {
    conv_1: Conv1d,
    conv_2: Conv1d,
    /// Zero padding added before each conv: none when the padding is symmetric (odd kernels),
    /// which the convs then apply themselves.
    pad: (usize, usize),
    gelu: bool,
}

impl FeedForward {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let k = cfg.ffn_kernel_size;
        let (pad, spec) = if k % 2 == 1 {
            ((0, 0), ConvSpec::same(k, 1))
        } else {
            (((k - 1) / 2, k / 2), ConvSpec::default())
        };
        Ok(Self {
            conv_1: Conv1d::new(vb.pp("conv_1"), cfg.hidden_size, cfg.ffn_dim, k, spec)?,
            conv_2: Conv1d::new(vb.pp("conv_2"), cfg.ffn_dim, cfg.hidden_size, k, spec)?,
            pad,
            gelu: cfg.hidden_act == "gelu",
        })
    }

    fn padded(&self, x: &Tensor) -> Result<Tensor> {
        match self.pad {
            (0, 0) => Ok(x.clone()),
            (l, r) => x.pad_with_zeros(2, l, r),
        }
    }

    /// `hidden` `[b, t, h]`; `mask` `[b, 1, t]`, or `None` when no position is padding.
    pub fn forward(&self, hidden: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let masked = |x: Tensor| -> Result<Tensor> {
            match mask {
                Some(m) => x.broadcast_mul(m),
                None => Ok(x),
            }
        };
        let x = masked(hidden.transpose(1, 2)?.contiguous()?)?;
        let x = self.conv_1.forward(&self.padded(&x)?)?;
        let x = if self.gelu { x.gelu_erf()? } else { x.relu()? };
        let x = masked(x)?;
        let x = self.conv_2.forward(&self.padded(&x)?)?;
        masked(x)?.transpose(1, 2)
    }
}

/// Post-norm transformer layer.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    attention: Attention,
    layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attention: Attention::new(cfg, vb.pp("attention"))?,
            layer_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            feed_forward: FeedForward::new(cfg, vb.pp("feed_forward"))?,
            final_layer_norm: candle_nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
        })
    }

    /// `mask` `[b, 1, t]`, or `None` when no position is padding.
    pub fn forward(
        &self,
        hidden: &Tensor,
        mask: Option<&Tensor>,
        mask_bias: &Tensor,
    ) -> Result<Tensor> {
        let attn = self.attention.forward(hidden, mask_bias)?;
        let hidden = self.layer_norm.forward(&(hidden + attn)?)?;
        let ff = self.feed_forward.forward(&hidden, mask)?;
        self.final_layer_norm.forward(&(hidden + ff)?)
    }
}

/// The text encoder's outputs.
#[derive(Debug, Clone)]
pub struct TextEncoderOutput {
    /// `[b, t, hidden]`
    pub hidden: Tensor,
    /// `[b, t, flow_size]`
    pub prior_means: Tensor,
    /// `[b, t, flow_size]`
    pub prior_log_variances: Tensor,
}

/// Token embedding, encoder layers and the projection to prior statistics.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    embed_tokens: Embedding,
    layers: Vec<EncoderLayer>,
    project: Conv1d,
    hidden_size: usize,
    flow_size: usize,
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<_>>()?;
        let project = Conv1d::new(
            vb.pp("project"),
            cfg.hidden_size,
            2 * cfg.flow_size,
            1,
            ConvSpec::default(),
        )?;
        Ok(Self {
            embed_tokens,
            layers,
            project,
            hidden_size: cfg.hidden_size,
            flow_size: cfg.flow_size,
        })
    }

    /// `input_ids` `[b, t]` (u32), `mask` `[b, t]` f32 (1 = token, 0 = padding); `padded`:
    /// whether any position is padding (without, the masking passes are skipped).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        mask: &Tensor,
        padded: bool,
    ) -> Result<TextEncoderOutput> {
        let dtype = self.project.weight().dtype();
        let mask = mask.to_dtype(dtype)?;
        let (b, t) = mask.dims2()?;
        let mask_btc = mask.unsqueeze(2)?;
        let mask_bct = mask.unsqueeze(1)?;
        // transformers adds (1 − mask) · finfo.min to the scores of padded keys.
        let mask_bias = ((1.0 - &mask)?.to_dtype(DType::F32)? * f32::MIN as f64)?
            .to_dtype(dtype)?
            .reshape((b, 1, 1, t))?;
        let mut hidden =
            (self.embed_tokens.forward(input_ids)? * (self.hidden_size as f64).sqrt())?;
        hidden = hidden.broadcast_mul(&mask_btc)?;
        let ffn_mask = padded.then_some(&mask_bct);
        for layer in &self.layers {
            hidden = layer.forward(&hidden, ffn_mask, &mask_bias)?;
        }
        let hidden = hidden.broadcast_mul(&mask_btc)?;
        let stats = self
            .project
            .forward(&hidden.transpose(1, 2)?)?
            .transpose(1, 2)?
            .broadcast_mul(&mask_btc)?;
        let f = self.flow_size;
        Ok(TextEncoderOutput {
            hidden,
            prior_means: stats.narrow(D::Minus1, 0, f)?,
            prior_log_variances: stats.narrow(D::Minus1, f, f)?,
        })
    }
}
