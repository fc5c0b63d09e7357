//! Mirrors diffusers 0.29's `BasicTransformerBlock` as `matcha/transformer.py` builds it for the
//! U-Net: layer norm, bias-free self-attention, layer norm, exact-GELU feed-forward. No
//! cross-attention and no ada-norm, so the timestep it is passed upstream is unused.

use std::sync::Arc;

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use ferrovox_kernels::CpuSelfAttention;
use ferrovox_layers::{gelu_erf, use_cpu_kernels, StepLinear};

/// The scores' key bias of one estimator call: upstream's `(1 − mask) · −1e10`, as a tensor
/// `[b, 1, 1, t]` for Candle's ops and, where the CPU kernels run, as rows `[b, t]` on the host
/// for [`CpuSelfAttention`].
#[derive(Debug, Clone)]
pub struct KeyBias {
    tensor: Tensor,
    host: Option<Arc<Vec<f32>>>,
}

impl KeyBias {
    /// From the frame mask `[b, 1, t]`.
    pub fn from_mask(mask: &Tensor) -> Result<Self> {
        let tensor = ((mask.affine(-1.0, 1.0))? * -1e10)?.unsqueeze(1)?;
        let host = if use_cpu_kernels(mask) {
            Some(Arc::new(tensor.flatten_all()?.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(Self { tensor, host })
    }
}

/// One pre-norm self-attention + feed-forward block over time-major `[b, t, dim]`.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    /// `to_q`, `to_k`, `to_v` as one projection, the score scale `1/√head_dim` folded into the
    /// query rows: one GEMM and one head split instead of three, and no pass over the scores.
    to_qkv: StepLinear,
    to_out: StepLinear,
    norm3: LayerNorm,
    ff_proj: StepLinear,
    ff_out: StepLinear,
    heads: usize,
    head_dim: usize,
    /// Products on bf16-rounded inputs on the CPU (see [`Self::bf16_products`]).
    bf16: bool,
}

impl BasicTransformerBlock {
    pub fn new(dim: usize, heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = heads * head_dim;
        let attn = vb.pp("attn1");
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            to_qkv: StepLinear::new(Linear::new(
                Tensor::cat(
                    &[
                        (attn.pp("to_q").get((inner, dim), "weight")? / (head_dim as f64).sqrt())?,
                        attn.pp("to_k").get((inner, dim), "weight")?,
                        attn.pp("to_v").get((inner, dim), "weight")?,
                    ],
                    0,
                )?,
                None,
            )),
            to_out: StepLinear::new(candle_nn::linear(inner, dim, attn.pp("to_out.0"))?),
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_proj: StepLinear::new(candle_nn::linear(dim, 4 * dim, vb.pp("ff.net.0.proj"))?),
            ff_out: StepLinear::new(candle_nn::linear(4 * dim, dim, vb.pp("ff.net.2"))?),
            heads,
            head_dim,
            bf16: false,
        })
    }

    /// The block's four projections and both attention products on bf16-rounded inputs with
    /// f32 sums when `on` and the CPU has AVX-512 BF16 (norms, softmax and activations stay
    /// f32); f32 products otherwise.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        let mut used = true;
        for p in [
            &mut self.to_qkv,
            &mut self.to_out,
            &mut self.ff_proj,
            &mut self.ff_out,
        ] {
            used &= p.bf16_products(on)?;
        }
        self.bf16 = used;
        Ok(())
    }

    /// `x` `[b, t, dim]`; `key_bias` added to the scores.
    pub fn forward(&self, x: &Tensor, key_bias: &KeyBias) -> Result<Tensor> {
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
        let a = match &key_bias.host {
            Some(bias) if use_cpu_kernels(x) => {
                let op = CpuSelfAttention::with_key_bias(bias.clone()).bf16_products(self.bf16);
                q.apply_op3(&k, &v, op)?
            }
            _ => {
                let scores = q.matmul(&k.t()?)?.broadcast_add(&key_bias.tensor)?;
                candle_nn::ops::softmax_last_dim(&scores)?
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, t, h * hd))?
            }
        };
        let x = (x + self.to_out.forward(&a)?)?;
        let n = self.norm3.forward(&x)?;
        let ff = gelu_erf(&self.ff_proj.forward(&n)?)?;
        x + self.ff_out.forward(&ff)?
    }
}
