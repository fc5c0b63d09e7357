//! Mirrors transformers' `LlamaModel` (`models/llama/modeling_llama.py`) as T3 drives it: input
//! embeddings in (T3 builds its own), final-normed hidden states out, llama3-scaled RoPE, and a
//! key/value cache preallocated for the longest generation rather than grown by concatenation.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use ferrovox_kernels::cuda_decode;
use ferrovox_layers::{RowFormat, StepLinear};

use super::config::LlamaConfig;

/// `cos` and `sin` tables `[positions, head_dim / 2]` of the rotary embedding.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// The inverse frequencies of `cfg`, llama3-scaled where configured
    /// (transformers' `_compute_llama3_parameters`), in f32 as transformers computes them.
    pub fn inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
        let dim = cfg.head_dim;
        let base: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / dim as f32))
            .collect();
        let Some(s) = cfg
            .rope_scaling
            .as_ref()
            .filter(|s| s.rope_type == "llama3")
        else {
            return base;
        };
        let old = s.original_max_position_embeddings as f32;
        let (factor, low, high) = (
            s.factor as f32,
            s.low_freq_factor as f32,
            s.high_freq_factor as f32,
        );
        let low_wavelen = old / low;
        let high_wavelen = old / high;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen > low_wavelen {
                    f / factor
                } else if wavelen < high_wavelen {
                    f
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
    }

    /// Tables for positions `0..positions`.
    pub fn new(cfg: &LlamaConfig, positions: usize, device: &Device) -> Result<Self> {
        let inv = Self::inv_freq(cfg);
        let half = inv.len();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// Rotates `x` `[b, heads, t, head_dim]` at positions `start..start + t`.
    fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.cos.narrow(0, start, t)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, start, t)?.to_dtype(x.dtype())?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }

    /// How many positions the tables cover.
    pub fn positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }
}

/// One layer's keys and values, `[b, kv_heads, capacity, head_dim]`, filled up to `len`.
#[derive(Debug, Clone)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// The key/value cache of every layer, allocated once for `capacity` positions.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for a batch of `batch` rows and up to `capacity` positions.
    pub fn new(
        cfg: &LlamaConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                Ok(LayerCache {
                    k: Tensor::zeros(shape, dtype, device)?,
                    v: Tensor::zeros(shape, dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (the buffers stay allocated).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Counts `n` more positions as filled (written by [`Llama::step_at`]).
    pub fn advance(&mut self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            candle_core::bail!(
                "{} positions exceed the cache's {}",
                self.len + n,
                self.capacity
            );
        }
        self.len += n;
        Ok(())
    }

    /// Rows `first..first + rows` of every layer, empty: a view whose writes land in this
    /// cache (a generation's prefill into its rows of a shared batch).
    pub fn rows_view(&self, first: usize, rows: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerCache {
                    k: l.k.narrow(0, first, rows)?,
                    v: l.v.narrow(0, first, rows)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity: self.capacity,
        })
    }

    /// The same positions in a cache of `rows` rows (at least as many), layer by layer: each
    /// old layer is freed once copied, so the peak is the new cache and one old layer, not
    /// both caches whole.
    pub fn grow_rows(self, rows: usize) -> Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for old in self.layers {
            let (have, kv, cap, d) = old.k.dims4()?;
            if rows < have {
                candle_core::bail!("growing a cache of {have} rows to {rows}");
            }
            let grown = |t: &Tensor| -> Result<Tensor> {
                let new = Tensor::zeros((rows, kv, cap, d), t.dtype(), t.device())?;
                new.slice_set(t, 0, 0)?;
                Ok(new)
            };
            let layer = LayerCache {
                k: grown(&old.k)?,
                v: grown(&old.v)?,
            };
            drop(old);
            layers.push(layer);
        }
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
        })
    }

    /// Rows of the batch it was built for.
    pub fn rows(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.k.dim(0).ok())
            .unwrap_or(0)
    }
}

/// Self-attention with `q_proj`, `k_proj` and `v_proj` fused into one projection at load (one
/// GEMM a step instead of three) and the `1/√d` score scale folded into the query rows.
#[derive(Debug, Clone)]
struct Attention {
    qkv: StepLinear,
    o: StepLinear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (q_rows, kv_rows) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let q = (vb.pp("q_proj").get((q_rows, h), "weight")? / (d as f64).sqrt())?;
        let k = vb.pp("k_proj").get((kv_rows, h), "weight")?;
        let v = vb.pp("v_proj").get((kv_rows, h), "weight")?;
        Ok(Self {
            qkv: StepLinear::new(Linear::new(Tensor::cat(&[q, k, v], 0)?, None)),
            o: StepLinear::new(candle_nn::linear_no_bias(q_rows, h, vb.pp("o_proj"))?),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// `x` `[b, t, hidden]` at positions `start..start + t`, its keys and values written into
    /// `cache` (the caller advances the length once every layer has run), and the attention
    /// probabilities `[b, heads, t, start + t]`.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &mut LayerCache,
        start: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        // `[b, heads + 2·kv_heads, t, d]`: at one position (a decode step) a view, no copy.
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, h + 2 * kv, d))?
            .transpose(1, 2)?;
        let q = rope.apply(&qkv.narrow(1, 0, h)?, start)?;
        let k = rope.apply(&qkv.narrow(1, h, kv)?, start)?;
        let v = qkv.narrow(1, h + kv, kv)?.contiguous()?;
        cache.k.slice_set(&k, 2, start)?;
        cache.v.slice_set(&v, 2, start)?;
        let seen = start + t;
        let k = cache.k.narrow(2, 0, seen)?;
        let v = cache.v.narrow(2, 0, seen)?;
        let (k, v) = if kv == h {
            (k, v)
        } else {
            (repeat_kv(k, h / kv)?, repeat_kv(v, h / kv)?)
        };
        // The cache's views go to the GEMM as they are (a batch stride over the whole capacity,
        // `k` transposed by its strides): no copy of the keys and values seen so far per step.
        let mut scores = q.matmul(&k.t()?)?;
        if t > 1 {
            scores = scores.broadcast_add(&causal_mask(t, seen, scores.dtype(), x.device())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?;
        let out = self
            .o
            .forward(&y.transpose(1, 2)?.reshape((b, t, h * d))?)?;
        Ok((out, probs))
    }

    /// One position `x` `[b, 1, hidden]` at `at.position`, attending the cache's first
    /// `at.window` positions under `shared.mask`: every shape is fixed for the window, and
    /// nothing is read back to the host.
    fn step_at(
        &self,
        x: &Tensor,
        cache: &LayerCache,
        at: &StepAt,
        shared: &StepShared,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        if t != 1 {
            candle_core::bail!("a fixed-shape step takes one position, not {t}");
        }
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, 1, h + 2 * kv, d))?
            .transpose(1, 2)?;
        let turn =
            |x: &Tensor| candle_nn::rotary_emb::rope(&x.contiguous()?, &shared.cos, &shared.sin);
        let q = turn(&qkv.narrow(1, 0, h)?)?;
        let k = turn(&qkv.narrow(1, h, kv)?)?;
        let v = qkv.narrow(1, h + kv, kv)?.contiguous()?;
        cache.k.scatter_set(&shared.slot, &k, 2)?;
        cache.v.scatter_set(&shared.slot, &v, 2)?;
        let k = cache.k.narrow(2, 0, at.window)?;
        let v = cache.v.narrow(2, 0, at.window)?;
        let (k, v) = if kv == h {
            (k, v)
        } else {
            (repeat_kv(k, h / kv)?, repeat_kv(v, h / kv)?)
        };
        let scores = q.matmul(&k.t()?)?.broadcast_add(&shared.mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?;
        self.o.forward(&y.transpose(1, 2)?.reshape((b, 1, h * d))?)
    }
}

impl Attention {
    /// [`Attention::step_at`] on the fused CUDA kernels: RoPE with the cache write, then the
    /// attention over the window, each one kernel.
    fn step_fused(
        &self,
        x: &Tensor,
        cache: &LayerCache,
        at: &StepAt,
        rows: &RopeRows,
    ) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let q = cuda_decode::rope_write(
            &qkv,
            &rows.cos,
            &rows.sin,
            &rows.positions,
            &cache.k,
            &cache.v,
            self.heads,
            self.kv_heads,
        )?;
        let y = cuda_decode::attention(&q, &cache.k, &cache.v, &rows.positions, at.window)?;
        self.o.forward(&y)
    }
}

/// Each of `x`'s `[b, kv_heads, s, d]` heads repeated `rep` times, for grouped-query attention.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    let (b, n, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, n, rep, s, d))?
        .reshape((b, n * rep, s, d))
}

/// Where a fixed-shape decode step writes and what it attends: the positions read from the
/// device, so one captured CUDA graph serves every step of a window.
#[derive(Debug, Clone)]
pub struct StepAt<'a> {
    /// `[1]` or `[rows]` u32: the cache position each row's key and value go to (one for
    /// every row, or each row its own: the generations of a batch are at different places).
    pub position: &'a Tensor,
    /// Cache positions `0..window` are attended (each row's past its position masked out).
    pub window: usize,
    /// `[1, ≥ window]` f32 `0, 1, 2, …`: compared with the positions for the mask.
    pub ramp: &'a Tensor,
    /// `[1, ≥ window]` of −∞ and of 0 in the attention's dtype.
    pub neg_inf: &'a Tensor,
    pub zeros: &'a Tensor,
}

/// What every layer of one fixed-shape step reads alike, made once per step rather than per
/// layer (each is a kernel or more, and a step's kernels are what its time goes to): the
/// RoPE rows of each row's position, the cache slots they write, the attention mask.
struct StepShared {
    /// `[rows, 1, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    /// `[rows, kv_heads, 1, head_dim]` u32: where `scatter_set` writes each row.
    slot: Tensor,
    /// `[rows, 1, 1, window]` in the attention's dtype.
    mask: Tensor,
}

/// Each row's position `[rows]` u32 and its RoPE rows `[rows, 1, head_dim / 2]`.
struct RopeRows {
    positions: Tensor,
    cos: Tensor,
    sin: Tensor,
}

impl RopeRows {
    fn new(at: &StepAt, rope: &Rope, b: usize, dtype: DType) -> Result<Self> {
        let positions = match at.position.dim(0)? {
            n if n == b => at.position.contiguous()?,
            1 => at.position.broadcast_as(b)?.contiguous()?,
            n => candle_core::bail!("{n} step positions for a batch of {b} rows"),
        };
        let half = rope.cos.dim(1)?;
        let turn = |table: &Tensor| -> Result<Tensor> {
            table
                .index_select(&positions, 0)?
                .reshape((b, 1, half))?
                .to_dtype(dtype)
        };
        Ok(Self {
            cos: turn(&rope.cos)?,
            sin: turn(&rope.sin)?,
            positions,
        })
    }
}

impl StepShared {
    fn new(at: &StepAt, rope: &Rope, cfg: &LlamaConfig, b: usize, dtype: DType) -> Result<Self> {
        let RopeRows {
            positions,
            cos,
            sin,
        } = RopeRows::new(at, rope, b, dtype)?;
        let after = at
            .ramp
            .narrow(1, 0, at.window)?
            .broadcast_gt(&positions.to_dtype(DType::F32)?.reshape((b, 1))?)?;
        let spread = |t: &Tensor| t.narrow(1, 0, at.window)?.broadcast_as((b, at.window));
        let mask = after
            .where_cond(&spread(at.neg_inf)?, &spread(at.zeros)?)?
            .reshape((b, 1, 1, at.window))?
            .to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            slot: positions
                .reshape((b, 1, 1, 1))?
                .broadcast_as((b, cfg.num_key_value_heads, 1, cfg.head_dim))?
                .contiguous()?,
            mask,
        })
    }
}

/// `[t, seen]` additive mask: query `i` (at position `seen - t + i`) sees keys up to its own.
pub(crate) fn causal_mask(t: usize, seen: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let offset = seen - t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..seen).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, seen), device)?.to_dtype(dtype)
}

/// The SwiGLU feed-forward, `gate_proj` and `up_proj` fused into one projection at load.
#[derive(Debug, Clone)]
struct Mlp {
    gate_up: StepLinear,
    down: StepLinear,
    intermediate: usize,
}

impl Mlp {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = vb.pp("gate_proj").get((i, h), "weight")?;
        let up = vb.pp("up_proj").get((i, h), "weight")?;
        Ok(Self {
            gate_up: StepLinear::new(Linear::new(Tensor::cat(&[gate, up], 0)?, None)),
            down: StepLinear::new(candle_nn::linear_no_bias(i, h, vb.pp("down_proj"))?),
            intermediate: i,
        })
    }
}

impl Mlp {
    /// The SwiGLU with `silu(gate) · up` as one fused CUDA kernel.
    fn step_fused(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        let down = self.down.dense().weight();
        let rows = gate_up.elem_count() / gate_up.dim(D::Minus1)?;
        if cuda_decode::rows_linear_preferred(rows)
            && cuda_decode::rows_linear_swiglu_fits(&gate_up, down)
        {
            return cuda_decode::rows_linear_swiglu(&gate_up, down);
        }
        self.down.forward(&cuda_decode::silu_mul(&gate_up)?)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, self.intermediate)?)?;
        let up = gate_up.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        self.down.forward(&(gate * up)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_norm: RmsNorm,
    post_attention_norm: RmsNorm,
    /// The two norms' weights again, for the fused residual add + norm.
    input_norm_weight: Tensor,
    post_attention_norm_weight: Tensor,
}

impl DecoderLayer {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_norm: candle_nn::rms_norm(h, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_attention_norm: candle_nn::rms_norm(
                h,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            input_norm_weight: vb.pp("input_layernorm").get(h, "weight")?,
            post_attention_norm_weight: vb.pp("post_attention_layernorm").get(h, "weight")?,
        })
    }
}

/// The Llama backbone under `tfmr.*` (its unused `embed_tokens` is not loaded).
#[derive(Debug, Clone)]
pub struct Llama {
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    norm_weight: Tensor,
    rope: Rope,
    cfg: LlamaConfig,
}

impl Llama {
    /// Loads `layers.*` and `norm` from `vb` (at `tfmr`), with RoPE tables for `positions`.
    pub fn new(cfg: &LlamaConfig, positions: usize, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            norm: candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            norm_weight: vb.pp("norm").get(cfg.hidden_size, "weight")?,
            rope: Rope::new(cfg, positions, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Every layer's four projections.
    fn projections(&mut self) -> impl Iterator<Item = &mut StepLinear> {
        self.layers.iter_mut().flat_map(|l| {
            [
                &mut l.attn.qkv,
                &mut l.attn.o,
                &mut l.mlp.gate_up,
                &mut l.mlp.down,
            ]
        })
    }

    /// Every projection's decode steps read its weight as `format` (see [`StepLinear`]).
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        self.projections().try_for_each(|p| p.pack_steps(format))
    }

    /// Every projection's products of more rows than a step (a prefill) on bf16-rounded
    /// inputs with f32 sums where the CPU has AVX-512 BF16 and `on` (see
    /// [`StepLinear::bf16_products`]).
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.projections()
            .try_for_each(|p| p.bf16_products(on).map(|_| ()))
    }

    /// Final-normed hidden states `[b, t, hidden]` of `embeds` `[b, t, hidden]`, which follow
    /// the `cache.len()` positions already cached; their keys and values join the cache.
    pub fn forward(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.forward_probed(embeds, cache, &[], 0)?.0)
    }

    /// [`Llama::forward`], with the attention probabilities `[t, positions attended]` of batch
    /// row `row` at each `(layer, head)` of `heads`, in that order.
    pub fn forward_probed(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        heads: &[(usize, usize)],
        row: usize,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let (b, t, _) = embeds.dims3()?;
        let start = cache.len;
        if start + t > cache.capacity || start + t > self.rope.positions() {
            candle_core::bail!(
                "T3 context of {} positions exceeds the cache's {} (or RoPE's {})",
                start + t,
                cache.capacity,
                self.rope.positions()
            );
        }
        if cache
            .layers
            .first()
            .is_some_and(|l| l.k.dim(0).ok() != Some(b))
        {
            candle_core::bail!("batch of {b} rows against a cache built for another batch");
        }
        if let Some(&(layer, head)) = heads
            .iter()
            .find(|&&(l, h)| l >= self.layers.len() || h >= self.cfg.num_attention_heads)
        {
            candle_core::bail!(
                "attention head ({layer}, {head}) outside a backbone of {} layers of {} heads",
                self.layers.len(),
                self.cfg.num_attention_heads
            );
        }
        let mut probed = vec![None; heads.len()];
        let mut x = embeds.clone();
        for (i, (layer, lc)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let (h, probs) =
                layer
                    .attn
                    .forward(&layer.input_norm.forward(&x)?, &self.rope, lc, start)?;
            for (slot, &(l, head)) in probed.iter_mut().zip(heads) {
                if l == i {
                    *slot = Some(probs.i((row, head))?);
                }
            }
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.post_attention_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        cache.len = start + t;
        let probed = probed
            .into_iter()
            .map(|p| p.expect("checked above"))
            .collect();
        Ok((self.norm.forward(&x)?, probed))
    }

    /// Final-normed hidden states `[b, 1, hidden]` of one position `embed` `[b, 1, hidden]`
    /// written at `at.position` of `cache`, attending its first `at.window` positions: the
    /// decode step with every shape fixed per window (what a CUDA graph captures). The
    /// caller keeps the cache's length.
    pub fn step_at(&self, embed: &Tensor, cache: &KvCache, at: &StepAt) -> Result<Tensor> {
        if at.window > cache.capacity || at.window > self.rope.positions() {
            candle_core::bail!(
                "a window of {} positions exceeds the cache's {} (or RoPE's {})",
                at.window,
                cache.capacity,
                self.rope.positions()
            );
        }
        if cuda_decode::available(embed) && !self.layers.is_empty() {
            return self.step_fused(embed, cache, at);
        }
        let shared = StepShared::new(at, &self.rope, &self.cfg, embed.dim(0)?, embed.dtype())?;
        let mut x = embed.clone();
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter()) {
            let h = layer
                .attn
                .step_at(&layer.input_norm.forward(&x)?, lc, at, &shared)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.post_attention_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        self.norm.forward(&x)
    }

    /// [`Llama::step_at`] on the fused CUDA kernels: per layer the three projections' GEMMs,
    /// RoPE with the cache write, the attention, SwiGLU, and two residual adds each fused with
    /// the norm that follows it (the last one with the final norm).
    fn step_fused(&self, embed: &Tensor, cache: &KvCache, at: &StepAt) -> Result<Tensor> {
        let rows = RopeRows::new(at, &self.rope, embed.dim(0)?, embed.dtype())?;
        let eps = self.cfg.rms_norm_eps;
        let mut x = embed.contiguous()?;
        let mut normed = self.layers[0].input_norm.forward(&x)?;
        for (i, (layer, lc)) in self.layers.iter().zip(cache.layers.iter()).enumerate() {
            let h = layer.attn.step_fused(&normed, lc, at, &rows)?;
            let (x1, n1) =
                cuda_decode::add_rms_norm(&x, &h, &layer.post_attention_norm_weight, eps)?;
            let m = layer.mlp.step_fused(&n1)?;
            let next = self
                .layers
                .get(i + 1)
                .map_or(&self.norm_weight, |l| &l.input_norm_weight);
            (x, normed) = cuda_decode::add_rms_norm(&x1, &m, next, eps)?;
        }
        Ok(normed)
    }

    /// A cache that fits `capacity` positions of a batch of `batch`.
    pub fn cache(
        &self,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        KvCache::new(&self.cfg, batch, capacity, dtype, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let cfg = LlamaConfig::default();
        let plain = Rope::inv_freq(&LlamaConfig {
            rope_scaling: None,
            ..cfg.clone()
        });
        let scaled = Rope::inv_freq(&cfg);
        assert_eq!(plain.len(), 32);
        // Highest frequency: wavelength 2π < 2048, untouched.
        assert_eq!(scaled[0], plain[0]);
        // Lowest: wavelength far above 8192, divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
        // Everything in between lies between the two.
        for (s, p) in scaled.iter().zip(&plain) {
            assert!(*s <= *p && *s >= p / 8.0 - 1e-12);
        }
    }

    #[test]
    fn the_causal_mask_lets_each_query_see_up_to_itself() {
        let m = causal_mask(2, 4, DType::F32, &Device::Cpu).unwrap();
        let m = m.to_vec2::<f32>().unwrap();
        assert_eq!(m[0][2], 0.0);
        assert_eq!(m[0][3], f32::NEG_INFINITY);
        assert_eq!(m[1][3], 0.0);
    }
}
