//! Mirrors `Perceiver` and `AttentionBlock2` (`t3/modules/perceiver.py`): 32 learned queries
//! attend to the prompt's speech-token embeddings, then to themselves, through one shared
//! pre-norm attention block.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::PerceiverConfig;

/// `AttentionBlock2`: `x1 + proj_out(attn(q(norm x1), k(norm x2), v(norm x2)))`.
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    proj_out: Linear,
    heads: usize,
}

impl AttentionBlock {
    fn new(channels: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let linear = |name| candle_nn::linear(channels, channels, vb.pp(name));
        Ok(Self {
            norm: candle_nn::layer_norm(channels, 1e-5, vb.pp("norm"))?,
            to_q: linear("to_q")?,
            to_k: linear("to_k")?,
            to_v: linear("to_v")?,
            proj_out: linear("proj_out")?,
            heads,
        })
    }

    fn forward(&self, x1: &Tensor, x2: &Tensor) -> Result<Tensor> {
        let n1 = self.norm.forward(x1)?;
        let n2 = self.norm.forward(x2)?;
        let (b, t, c) = x1.dims3()?;
        let s = x2.dim(1)?;
        let d = c / self.heads;
        let heads = |y: Tensor, len: usize| y.reshape((b, len, self.heads, d))?.transpose(1, 2);
        let q = heads(self.to_q.forward(&n1)?, t)?.contiguous()?;
        let k = heads(self.to_k.forward(&n2)?, s)?.contiguous()?;
        let v = heads(self.to_v.forward(&n2)?, s)?.contiguous()?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (d as f64).powf(-0.5))?;
        let h = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let h = h.transpose(1, 2)?.reshape((b, t, c))?;
        x1 + self.proj_out.forward(&h)?
    }
}

/// The prompt resampler: any number of prompt embeddings in, `query_tokens` out.
#[derive(Debug, Clone)]
pub struct Perceiver {
    query: Tensor,
    attn: AttentionBlock,
}

impl Perceiver {
    /// Loads `pre_attention_query` and `attn.*` from `vb` (at `cond_enc.perceiver`).
    pub fn new(cfg: &PerceiverConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            query: vb.get((1, cfg.query_tokens, cfg.query_size), "pre_attention_query")?,
            attn: AttentionBlock::new(cfg.embedding_dim, cfg.heads, vb.pp("attn"))?,
        })
    }

    /// `[b, s, dim]` prompt embeddings to `[b, query_tokens, dim]`.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let b = h.dim(0)?;
        let (_, n, c) = self.query.dims3()?;
        let query = self.query.broadcast_as((b, n, c))?.contiguous()?;
        let pre = self.attn.forward(&query, h)?;
        self.attn.forward(&pre, &pre)
    }
}
