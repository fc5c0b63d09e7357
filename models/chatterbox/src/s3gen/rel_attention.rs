//! Mirrors `RelPositionMultiHeadedAttention` (`transformer/attention.py`) and
//! `EspnetRelPositionalEncoding` (`transformer/embedding.py`): Transformer-XL self-attention
//! with espnet's relative positions, as the flow encoder's conformer blocks use it.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;
use ferrovox_layers::StepLinear;

/// The espnet relative position table for a sequence of `len`: `[1, 2·len − 1, d]`, row `n`
/// holding position `len − 1 − n` (so `len − 1, …, 0, …, −(len − 1)`), `[sin, cos]`
/// interleaved. Upstream slices a precomputed 5000-position table; the values are the same
/// element-wise formula, so it is computed for the length at hand.
pub fn rel_position_table(len: usize, d: usize, device: &Device) -> Result<Tensor> {
    let half = d / 2;
    let positions = Tensor::arange(0u32, (2 * len - 1) as u32, device)?
        .to_dtype(DType::F32)?
        .affine(-1.0, (len - 1) as f64)?
        .unsqueeze(1)?;
    // div[k] = exp(2k · −ln(10000)/d), computed in f32 as upstream does.
    let div = Tensor::arange_step(0f32, d as f32, 2.0, device)?
        .affine(-(10000f64.ln() / d as f64), 0.0)?
        .exp()?
        .unsqueeze(0)?;
    let angles = positions.broadcast_mul(&div)?;
    Tensor::stack(&[angles.sin()?, angles.cos()?], 2)?.reshape((1, 2 * len - 1, 2 * half))
}

/// Multi-head self-attention with Transformer-XL relative position terms.
#[derive(Debug, Clone)]
pub struct RelPositionMultiHeadedAttention {
    linear_q: StepLinear,
    linear_k: StepLinear,
    linear_v: StepLinear,
    linear_out: StepLinear,
    linear_pos: StepLinear,
    /// `[heads, d_k]` biases added to the queries for the content (`u`) and position (`v`) terms.
    pos_bias_u: Tensor,
    pos_bias_v: Tensor,
    heads: usize,
    d_k: usize,
}

impl RelPositionMultiHeadedAttention {
    pub fn new(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let d_k = d / heads;
        let linear = |name: &str| -> Result<StepLinear> {
            Ok(StepLinear::new(candle_nn::linear(d, d, vb.pp(name))?))
        };
        Ok(Self {
            linear_q: linear("linear_q")?,
            linear_k: linear("linear_k")?,
            linear_v: linear("linear_v")?,
            linear_out: linear("linear_out")?,
            linear_pos: StepLinear::new(candle_nn::linear_no_bias(d, d, vb.pp("linear_pos"))?),
            pos_bias_u: vb.get((heads, d_k), "pos_bias_u")?,
            pos_bias_v: vb.get((heads, d_k), "pos_bias_v")?,
            heads,
            d_k,
        })
    }

    /// The five projections on bf16-rounded inputs (see [`StepLinear::bf16_products`]).
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        for p in [
            &mut self.linear_q,
            &mut self.linear_k,
            &mut self.linear_v,
            &mut self.linear_out,
            &mut self.linear_pos,
        ] {
            p.bf16_products(on)?;
        }
        Ok(())
    }

    /// `x` `[b, t, d]`; `pos_emb` `[1, 2t − 1, d]` from [`rel_position_table`]; `key_bias`
    /// `[b, 1, 1, t]`, 0 for valid keys and −∞ for padded ones (upstream's `masked_fill(-inf)`;
    /// its re-zeroing after the softmax is a no-op as long as one key is valid).
    pub fn forward(&self, x: &Tensor, pos_emb: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, d_k) = (self.heads, self.d_k);
        // [b, t, d] -> [b, t, h, d_k]
        let split = |y: Tensor| y.reshape((b, t, h, d_k));
        let q = split(self.linear_q.forward(x)?)?;
        let k = split(self.linear_k.forward(x)?)?
            .transpose(1, 2)?
            .contiguous()?;
        let v = split(self.linear_v.forward(x)?)?
            .transpose(1, 2)?
            .contiguous()?;
        let n_pos = pos_emb.dim(1)?;
        let p = self
            .linear_pos
            .forward(pos_emb)?
            .reshape((n_pos, h, d_k))?
            .transpose(0, 1)?
            .contiguous()?; // [h, 2t-1, d_k]
        let q_u = q
            .broadcast_add(&self.pos_bias_u)?
            .transpose(1, 2)?
            .contiguous()?;
        let q_v = q
            .broadcast_add(&self.pos_bias_v)?
            .transpose(1, 2)?
            .contiguous()?;
        let ac = q_u.matmul(&k.t()?)?; // [b, h, t, t]
        let bd_full = q_v.broadcast_matmul(&p.t()?.unsqueeze(0)?)?; // [b, h, t, 2t-1]
        let bd = rel_shift(&bd_full)?;
        let scores = ((ac + bd)? / (d_k as f64).sqrt())?.broadcast_add(key_bias)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        self.linear_out.forward(&out)
    }
}

/// espnet's `rel_shift`: `[b, h, t, 2t − 1]` scores against positions `t − 1 … −(t − 1)` to
/// `[b, h, t, t]` with `out[i, j] = x[i, j + t − 1 − i]` (query `i` against position `i − j`),
/// by the same pad-and-reinterpret trick upstream uses, so no gather is needed.
fn rel_shift(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, n) = x.dims4()?;
    // A zero column in front, the [t, 2t] rows read as one run; dropping its first t entries
    // and re-reading rows of 2t − 1 lines each row i up at offset t − 1 − i.
    let padded = x
        .pad_with_zeros(D::Minus1, 1, 0)?
        .reshape((b, h, t * (n + 1)))?;
    padded
        .narrow(2, t, t * n)?
        .reshape((b, h, t, n))?
        .narrow(3, 0, t)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_shift_picks_query_minus_key() -> Result<()> {
        let t = 4;
        let n = 2 * t - 1;
        let data: Vec<f32> = (0..t * n).map(|v| v as f32).collect();
        let x = Tensor::from_vec(data, (1, 1, t, n), &Device::Cpu)?;
        let y = rel_shift(&x)?.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?;
        for (i, row) in y.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert_eq!(*v, (i * n + j + t - 1 - i) as f32, "({i}, {j})");
            }
        }
        Ok(())
    }
}
