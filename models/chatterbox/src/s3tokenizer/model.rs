//! Mirrors `s3tokenizer/model_v2.py` (s3tokenizer 0.3.0): `AudioEncoderV2` (two stride-2
//! convs, then `ResidualAttentionBlock`s of rotary `FSMNMultiHeadAttention`), `FSQCodebook`, and
//! the padding masks of `s3tokenizer/utils.py` (`make_non_pad_mask`, `mask_to_bias`).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv1dConfig, LayerNorm, Linear, VarBuilder};
use ferrovox_layers::{Conv1d, ConvSpec};

use super::config::{S3TokenizerConfig, HEAD_DIM, MAX_POSITIONS};
use crate::{Error, Result};

/// FSMN memory's depthwise kernel (`FSMNMultiHeadAttention(kernel_size=31)`).
const FSMN_KERNEL: usize = 31;
/// `mask_to_bias`: the score added at padded keys. `exp` of it underflows to exactly 0, so a
/// valid position never sees padding.
const MASK_BIAS: f64 = -1.0e10;
/// FSQ's scale before rounding, `0.9990000128746033` upstream: 0.999 as an f32.
const FSQ_SCALE: f32 = 0.999;
/// Digits of an FSQ code (`project_down`'s width) and levels per digit.
pub const FSQ_DIGITS: usize = 8;
const FSQ_LEVELS: u32 = 3;

/// A length after one of the encoder's convs (kernel 3, padding 1, stride 2):
/// `(len + 2 - 2 - 1) // 2 + 1`, with Python's floor division (0 stays 0).
pub fn conv_out_len(len: usize) -> usize {
    len.div_ceil(2)
}

/// `make_non_pad_mask(lens, t)` as f32 1/0, `[b, t]`.
fn non_pad_mask(lens: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..t).map(move |i| if i < n { 1.0 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (lens.len(), t), device)?)
}

/// The rotary table of `precompute_freqs_cis(64, 2048)` for positions `0..t`, as its cos and
/// sin `[t, 64]` (each half repeating the 32 frequencies).
///
/// The arithmetic is torch's f32: exponent `2j / 64`, `10000 ** e` rounded to f32 (a correctly
/// rounded f64 power, which torch's f32 `pow` agrees with at these 32 points), its f32
/// reciprocal, the angle `t * freq` as an f32 product; the cosine and sine of that f32 angle
/// are taken in f64 and rounded once (torch's vectorised f32 ones are within an ulp).
fn rotary_table(t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = HEAD_DIM / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|j| {
            let exponent = (2 * j) as f32 / HEAD_DIM as f32;
            1.0 / 10_000f64.powf(f64::from(exponent)) as f32
        })
        .collect();
    let mut cos = Vec::with_capacity(t * HEAD_DIM);
    let mut sin = Vec::with_capacity(t * HEAD_DIM);
    for pos in 0..t {
        let row: Vec<(f32, f32)> = freqs
            .iter()
            .map(|&f| {
                let angle = f64::from(pos as f32 * f);
                (angle.cos() as f32, angle.sin() as f32)
            })
            .collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|r| r.0));
            sin.extend(row.iter().map(|r| r.1));
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, HEAD_DIM), device)?,
        Tensor::from_vec(sin, (t, HEAD_DIM), device)?,
    ))
}

/// `apply_rotary_emb` on `[b, t, heads, 64]` with the table as `[1, t, 1, 64]`: the halves
/// rotate as `(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)`.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = HEAD_DIM / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `FSMNMultiHeadAttention`: rotary multi-head attention over the unpadded keys, plus a memory
/// of V through a depthwise conv (kernel 31, centred).
#[derive(Debug, Clone)]
struct FsmnAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    fsmn: Conv1d,
    heads: usize,
}

impl FsmnAttention {
    fn new(n_state: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            query: candle_nn::linear(n_state, n_state, vb.pp("query"))?,
            key: candle_nn::linear_no_bias(n_state, n_state, vb.pp("key"))?,
            value: candle_nn::linear(n_state, n_state, vb.pp("value"))?,
            out: candle_nn::linear(n_state, n_state, vb.pp("out"))?,
            fsmn: Conv1d::new(
                vb.pp("fsmn_block"),
                n_state,
                n_state,
                FSMN_KERNEL,
                ConvSpec {
                    padding: (FSMN_KERNEL - 1) / 2,
                    groups: n_state,
                    bias: false,
                    ..ConvSpec::default()
                },
            )?,
            heads,
        })
    }

    /// `forward_fsmn`: `[b, t, c]` V, zeroed at padding, through the conv, plus itself, zeroed
    /// at padding again.
    fn memory(&self, v: &Tensor, mask_pad: &Tensor) -> Result<Tensor> {
        let inputs = v.broadcast_mul(mask_pad)?;
        let conv = self
            .fsmn
            .forward(&inputs.transpose(1, 2)?.contiguous()?)?
            .transpose(1, 2)?;
        Ok((conv + inputs)?.broadcast_mul(mask_pad)?)
    }

    /// `[b, t, c]` -> `[b, t, c]`; `bias` `[b, 1, 1, t]` masks padded keys, `mask_pad`
    /// `[b, t, 1]` padded positions of the memory.
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        mask_pad: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let q = self
            .query
            .forward(x)?
            .reshape((b, t, self.heads, HEAD_DIM))?;
        let k = self.key.forward(x)?.reshape((b, t, self.heads, HEAD_DIM))?;
        let v = self.value.forward(x)?;
        let q = rotate(&q, cos, sin)?;
        let k = rotate(&k, cos, sin)?;
        let memory = self.memory(&v, mask_pad)?;
        // Upstream scales q and k by head_dim^-1/4 each before their product.
        let scale = (HEAD_DIM as f64).powf(-0.25);
        let q = (q.transpose(1, 2)? * scale)?.contiguous()?;
        let k = (k.transpose(1, 2)? * scale)?.contiguous()?;
        let v = v
            .reshape((b, t, self.heads, HEAD_DIM))?
            .transpose(1, 2)?
            .contiguous()?;
        let scores = q
            .matmul(&k.t()?)?
            .broadcast_add(bias)?
            .to_dtype(DType::F32)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        Ok((self.out.forward(&attended)? + memory)?)
    }
}

/// `ResidualAttentionBlock`: pre-norm attention and a 4x GELU MLP, each residual.
#[derive(Debug, Clone)]
struct ResidualAttentionBlock {
    attn: FsmnAttention,
    attn_ln: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    mlp_ln: LayerNorm,
}

impl ResidualAttentionBlock {
    fn new(n_state: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let n_mlp = 4 * n_state;
        Ok(Self {
            attn: FsmnAttention::new(n_state, heads, vb.pp("attn"))?,
            attn_ln: candle_nn::layer_norm(n_state, 1e-5, vb.pp("attn_ln"))?,
            mlp_in: candle_nn::linear(n_state, n_mlp, vb.pp("mlp.0"))?,
            mlp_out: candle_nn::linear(n_mlp, n_state, vb.pp("mlp.2"))?,
            mlp_ln: candle_nn::layer_norm(n_state, 1e-5, vb.pp("mlp_ln"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        mask_pad: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.attn_ln.forward(x)?, bias, mask_pad, cos, sin)?)?;
        let h = self.mlp_in.forward(&self.mlp_ln.forward(&x)?)?.gelu_erf()?;
        Ok((&x + self.mlp_out.forward(&h)?)?)
    }
}

/// Every stage of one encoder call, in upstream's layouts.
#[derive(Debug, Clone)]
pub struct EncoderStages {
    /// `gelu(conv1(mel * mask))`, `[b, n_state, ceil(t / 2)]`.
    pub conv1: Tensor,
    /// `gelu(conv2(conv1 * mask))`, `[b, n_state, ceil(t / 4)]`.
    pub conv2: Tensor,
    /// Each block's output, `[b, tokens, n_state]`.
    pub blocks: Vec<Tensor>,
    /// The encoder's output, `[b, tokens, n_state]`: the last block's.
    pub hidden: Tensor,
    /// Each row's token count.
    pub lens: Vec<usize>,
}

/// `AudioEncoderV2`: 100 Hz log-mel to 25 Hz hidden states.
#[derive(Debug, Clone)]
pub struct AudioEncoderV2 {
    /// Candle's own conv: ferrovox-layers' `Conv1d` would run a batch through its stride-1
    /// GEMM on CUDA.
    conv1: candle_nn::Conv1d,
    conv2: candle_nn::Conv1d,
    blocks: Vec<ResidualAttentionBlock>,
    n_mels: usize,
}

impl AudioEncoderV2 {
    /// Loads `conv1`, `conv2` and `blocks.{i}` from `vb` (the tokenizer's `encoder`).
    pub fn new(cfg: &S3TokenizerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let strided = Conv1dConfig {
            padding: 1,
            stride: 2,
            ..Conv1dConfig::default()
        };
        let d = cfg.n_audio_state;
        let blocks = (0..cfg.n_audio_layer)
            .map(|i| ResidualAttentionBlock::new(d, cfg.n_audio_head, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            conv1: candle_nn::conv1d(cfg.n_mels, d, 3, strided, vb.pp("conv1"))?,
            conv2: candle_nn::conv1d(d, d, 3, strided, vb.pp("conv2"))?,
            blocks,
            n_mels: cfg.n_mels,
        })
    }

    /// A padded batch `[b, n_mels, t]` of mels with `lens[i]` valid frames each, through every
    /// stage. Positions past a row's length hold what upstream computes there too (it masks
    /// inputs, not outputs); no valid position depends on them.
    pub fn forward_stages(&self, mel: &Tensor, lens: &[usize]) -> Result<EncoderStages> {
        let (b, n_mels, t) = mel.dims3()?;
        if n_mels != self.n_mels || b != lens.len() || b == 0 {
            return Err(Error::Input(format!(
                "the S3 encoder takes [batch, {}, frames] mels with a length per row; got {:?} \
                 and {} lengths",
                self.n_mels,
                mel.dims(),
                lens.len()
            )));
        }
        if let Some(&bad) = lens.iter().find(|&&n| n == 0 || n > t) {
            return Err(Error::Input(format!(
                "a mel length of {bad} frames in a batch of {t}: each must be 1..={t}"
            )));
        }
        let tokens = conv_out_len(conv_out_len(t));
        if tokens > MAX_POSITIONS {
            return Err(Error::Input(format!(
                "{t} mel frames make {tokens} tokens, past the {MAX_POSITIONS} positions of the \
                 rotary table (upstream windows clips longer than 3000 frames)"
            )));
        }
        let device = mel.device();
        let dtype = self.conv1.weight().dtype();
        let mask = non_pad_mask(lens, t, device)?
            .to_dtype(dtype)?
            .unsqueeze(1)?;
        let conv1 = self
            .conv1
            .forward(&mel.to_dtype(dtype)?.broadcast_mul(&mask)?)?
            .gelu_erf()?;

        let lens1: Vec<usize> = lens.iter().map(|&n| conv_out_len(n)).collect();
        let t1 = conv_out_len(t);
        let mask = non_pad_mask(&lens1, t1, device)?
            .to_dtype(dtype)?
            .unsqueeze(1)?;
        let conv2 = self
            .conv2
            .forward(&conv1.broadcast_mul(&mask)?)?
            .gelu_erf()?;

        let lens2: Vec<usize> = lens1.iter().map(|&n| conv_out_len(n)).collect();
        let keep = non_pad_mask(&lens2, tokens, device)?.to_dtype(dtype)?;
        let mask_pad = keep.unsqueeze(2)?;
        let bias = ((1.0 - &keep)? * MASK_BIAS)?.unsqueeze(1)?.unsqueeze(1)?;
        let (cos, sin) = rotary_table(tokens, device)?;
        let cos = cos.to_dtype(dtype)?.unsqueeze(0)?.unsqueeze(2)?;
        let sin = sin.to_dtype(dtype)?.unsqueeze(0)?.unsqueeze(2)?;
        let mut x = conv2.transpose(1, 2)?.contiguous()?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, &bias, &mask_pad, &cos, &sin)?;
            blocks.push(x.clone());
        }
        Ok(EncoderStages {
            conv1,
            conv2,
            blocks,
            hidden: x,
            lens: lens2,
        })
    }

    /// The encoder's output `[b, tokens, n_state]` and each row's token count.
    pub fn forward(&self, mel: &Tensor, lens: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let stages = self.forward_stages(mel, lens)?;
        Ok((stages.hidden, stages.lens))
    }
}

/// `FSQCodebook.encode`: each hidden state to 8 ternary digits, `Σ dᵢ·3ⁱ`.
#[derive(Debug, Clone)]
pub struct FsqCodebook {
    project_down: Linear,
}

impl FsqCodebook {
    /// Loads `project_down` from `vb` (the tokenizer's `quantizer._codebook`).
    pub fn new(n_state: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            project_down: candle_nn::linear(n_state, FSQ_DIGITS, vb.pp("project_down"))?,
        })
    }

    /// The values FSQ rounds, `tanh(project_down(x)) * 0.999` in f32, `[b, t, 8]`.
    pub fn pre_round(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.project_down.forward(hidden)?.to_dtype(DType::F32)?;
        Ok(h.tanh()?.affine(f64::from(FSQ_SCALE), 0.0)?)
    }

    /// Codes of pre-round values `[b, t, 8]`: each value rounded half to even (torch's
    /// `round`) to -1, 0 or 1, shifted to a digit 0..=2, digit `i` weighing `3^i`.
    pub fn codes(pre_round: &Tensor) -> Result<Vec<Vec<u32>>> {
        let rows = pre_round.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        Ok(rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|digits| {
                        digits
                            .iter()
                            .rev()
                            .fold(0u32, |code, &h| code * FSQ_LEVELS + digit(h))
                    })
                    .collect()
            })
            .collect())
    }

    /// The codes of the encoder's output `[b, t, n_state]`, every position of every row.
    pub fn encode(&self, hidden: &Tensor) -> Result<Vec<Vec<u32>>> {
        Self::codes(&self.pre_round(hidden)?)
    }
}

/// One FSQ digit: `round(h) + 1`, for `h` in (-1, 1). A NaN (from non-finite weights) gives
/// digit 0 rather than a panic.
fn digit(h: f32) -> u32 {
    (h.round_ties_even() + 1.0).clamp(0.0, 2.0) as u32
}
