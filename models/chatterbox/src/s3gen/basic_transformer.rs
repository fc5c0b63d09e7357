//! Mirrors diffusers 0.29's `BasicTransformerBlock` as `matcha/transformer.py` builds it for the
//! U-Net: layer norm, bias-free self-attention, layer norm, exact-GELU feed-forward. No
//! cross-attention and no ada-norm, so the timestep it is passed upstream is unused.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

/// One pre-norm self-attention + feed-forward block over time-major `[b, t, dim]`.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    /// `to_q`, `to_k`, `to_v` as one projection, the score scale `1/√head_dim` folded into the
    /// query rows: one GEMM and one head split instead of three, and no pass over the scores.
    to_qkv: Linear,
    to_out: Linear,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl BasicTransformerBlock {
    pub fn new(dim: usize, heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = heads * head_dim;
        let attn = vb.pp("attn1");
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            to_qkv: Linear::new(
                Tensor::cat(
                    &[
                        (attn.pp("to_q").get((inner, dim), "weight")? / (head_dim as f64).sqrt())?,
                        attn.pp("to_k").get((inner, dim), "weight")?,
                        attn.pp("to_v").get((inner, dim), "weight")?,
                    ],
                    0,
                )?,
                None,
            ),
            to_out: candle_nn::linear(inner, dim, attn.pp("to_out.0"))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_proj: candle_nn::linear(dim, 4 * dim, vb.pp("ff.net.0.proj"))?,
            ff_out: candle_nn::linear(4 * dim, dim, vb.pp("ff.net.2"))?,
            heads,
            head_dim,
        })
    }

    /// `x` `[b, t, dim]`; `key_bias` `[b, 1, 1, t]` added to the scores (upstream's
    /// `(1 − mask) · −1e10`).
    pub fn forward(&self, x: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, hd) = (self.heads, self.head_dim);
        let n = self.norm1.forward(x)?;
        // [3, b, h, t, hd] in one copy; q, k and v are contiguous slices of it.
        let qkv = self
            .to_qkv
            .forward(&n)?
            .reshape((b, t, 3, h, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_add(key_bias)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let a = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h * hd))?;
        let x = (x + self.to_out.forward(&a)?)?;
        let n = self.norm3.forward(&x)?;
        let ff = self
            .ff_out
            .forward(&self.ff_proj.forward(&n)?.gelu_erf()?)?;
        x + ff
    }
}
