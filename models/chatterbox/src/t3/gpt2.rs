//! transformers' `GPT2Model` as Chatterbox Turbo's T3 runs it (`GPT2_medium` of
//! `t3/llama_configs.py`): inputs given as embeddings, GPT-2's own learned positions added,
//! pre-norm blocks with fused q/k/v (`Conv1D`: weights stored `[in, out]`), `gelu_new`, and the
//! final `ln_f`. `wte` is not read: upstream deletes it after loading.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use ferrovox_layers::{gelu_tanh, RowFormat, StepLinear};
use serde::Deserialize;

use super::llama::causal_mask;

/// The fields of upstream's GPT-2 config that shape the model; `Default` is `GPT2_medium`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    pub n_positions: usize,
    pub layer_norm_epsilon: f64,
    pub activation_function: String,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            n_embd: 1024,
            n_head: 16,
            n_layer: 24,
            n_positions: 8196,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
        }
    }
}

impl Gpt2Config {
    /// `GPT2_small`: Chatterbox Nano's backbone (GPT-2 medium's entry at 12 layers, 768 wide,
    /// 12 heads).
    pub fn small() -> Self {
        Self {
            n_embd: 768,
            n_head: 12,
            n_layer: 12,
            ..Self::default()
        }
    }

    /// A config that describes a model this module runs, or why not.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.activation_function != "gelu_new" {
            return Err(format!(
                "activation `{}` (Turbo's GPT-2 uses gelu_new)",
                self.activation_function
            ));
        }
        Ok(())
    }
}

/// transformers' `Conv1D`: `x @ weight + bias` with `weight` `[in, out]`.
#[derive(Debug, Clone)]
struct Conv1D(StepLinear);

impl Conv1D {
    fn new(inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((inputs, outputs), "weight")?;
        // Held as a Linear's `[out, in]`, so decode steps take ferrovox's few-row products
        // (and packed weights on the CPU) as every other projection does.
        let dense =
            candle_nn::Linear::new(weight.t()?.contiguous()?, Some(vb.get(outputs, "bias")?));
        Ok(Self(StepLinear::new(dense)))
    }
}

impl Module for Conv1D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
}

/// One layer's keys and values, `[b, heads, capacity, head_dim]`, the first `len` positions
/// filled.
#[derive(Debug)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// Positions a cache grows by at least: a step writes its position in place, and the buffers
/// are copied only when they fill.
const CACHE_GROWTH: usize = 256;

/// The keys and values of every layer. Each forward writes its positions into buffers that
/// grow in steps of at least [`CACHE_GROWTH`] positions (doubling), so a decode step copies one
/// position, not the whole cache. Not `Clone`: the buffers are written in place.
#[derive(Debug, Default)]
pub struct Gpt2Cache {
    layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
}

impl Gpt2Cache {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for `needed` positions in every layer's buffers `[b, heads, _, head_dim]`,
    /// keeping what is cached.
    fn reserve(
        &mut self,
        needed: usize,
        layers: usize,
        like: (usize, usize, usize),
        embeds: &Tensor,
    ) -> Result<()> {
        if let Some(first) = self.layers.first() {
            if first.k.dim(0)? != like.0 {
                candle_core::bail!(
                    "a GPT-2 cache of {} rows fed {} rows",
                    first.k.dim(0)?,
                    like.0
                );
            }
        }
        if needed <= self.capacity && self.layers.len() == layers {
            return Ok(());
        }
        let capacity = needed.max(2 * self.capacity).max(CACHE_GROWTH);
        let (b, h, d) = like;
        let fresh = || Tensor::zeros((b, h, capacity, d), embeds.dtype(), embeds.device());
        let mut grown = Vec::with_capacity(layers);
        for i in 0..layers {
            let (k, v) = (fresh()?, fresh()?);
            if let Some(old) = self.layers.get(i) {
                if self.len > 0 {
                    k.slice_set(&old.k.narrow(2, 0, self.len)?, 2, 0)?;
                    v.slice_set(&old.v.narrow(2, 0, self.len)?, 2, 0)?;
                }
            }
            grown.push(LayerCache { k, v });
        }
        self.layers = grown;
        self.capacity = capacity;
        Ok(())
    }
}

/// GPT-2's transformer under `tfmr.*`: `wpe`, `h.{i}`, `ln_f`.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    cfg: Gpt2Config,
}

fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(dim, eps, vb)
}

impl Gpt2 {
    pub fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let vb = vb.pp(format!("h.{i}"));
                Ok(Block {
                    ln_1: layer_norm(d, eps, vb.pp("ln_1"))?,
                    c_attn: Conv1D::new(d, 3 * d, vb.pp("attn.c_attn"))?,
                    attn_proj: Conv1D::new(d, d, vb.pp("attn.c_proj"))?,
                    ln_2: layer_norm(d, eps, vb.pp("ln_2"))?,
                    c_fc: Conv1D::new(d, 4 * d, vb.pp("mlp.c_fc"))?,
                    mlp_proj: Conv1D::new(4 * d, d, vb.pp("mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wpe: candle_nn::embedding(cfg.n_positions, d, vb.pp("wpe"))?,
            blocks,
            ln_f: layer_norm(d, eps, vb.pp("ln_f"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    /// Every block's four projections.
    fn projections(&mut self) -> impl Iterator<Item = &mut StepLinear> {
        self.blocks.iter_mut().flat_map(|b| {
            [
                &mut b.c_attn.0,
                &mut b.attn_proj.0,
                &mut b.c_fc.0,
                &mut b.mlp_proj.0,
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

    /// Final-normed hidden states `[b, t, n_embd]` of `embeds` `[b, t, n_embd]`, which follow
    /// the positions `cache` holds; their keys and values join it.
    pub fn forward(&self, embeds: &Tensor, cache: &mut Gpt2Cache) -> Result<Tensor> {
        let (b, t, _) = embeds.dims3()?;
        let start = cache.len;
        if start + t > self.cfg.n_positions {
            candle_core::bail!(
                "GPT-2 context of {} positions exceeds its {} positions",
                start + t,
                self.cfg.n_positions
            );
        }
        let (h, d) = (self.cfg.n_head, self.cfg.n_embd / self.cfg.n_head);
        cache.reserve(start + t, self.blocks.len(), (b, h, d), embeds)?;
        let positions = Tensor::arange(start as u32, (start + t) as u32, embeds.device())?;
        let mut x = embeds.broadcast_add(&self.wpe.forward(&positions)?.unsqueeze(0)?)?;
        let scale = 1.0 / (d as f64).sqrt();
        for (block, lc) in self.blocks.iter().zip(&cache.layers) {
            let qkv = block.c_attn.forward(&block.ln_1.forward(&x)?)?;
            let heads = |i: usize| -> Result<Tensor> {
                qkv.narrow(D::Minus1, i * h * d, h * d)?
                    .reshape((b, t, h, d))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            lc.k.slice_set(&k, 2, start)?;
            lc.v.slice_set(&v, 2, start)?;
            let k = lc.k.narrow(2, 0, start + t)?;
            let v = lc.v.narrow(2, 0, start + t)?;
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if t > 1 {
                scores = scores.broadcast_add(&causal_mask(
                    t,
                    start + t,
                    embeds.dtype(),
                    embeds.device(),
                )?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * d))?;
            x = (x + block.attn_proj.forward(&y)?)?;
            let h1 = gelu_tanh(&block.c_fc.forward(&block.ln_2.forward(&x)?)?)?;
            let m = block.mlp_proj.forward(&h1)?;
            x = (x + m)?;
        }
        cache.len = start + t;
        self.ln_f.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;

    /// A 2-layer GPT-2 with random weights, 512 positions.
    fn small() -> Gpt2 {
        let cfg = Gpt2Config {
            n_embd: 32,
            n_head: 4,
            n_layer: 2,
            n_positions: 512,
            ..Gpt2Config::default()
        };
        let dev = Device::Cpu;
        let d = cfg.n_embd;
        let mut w = HashMap::new();
        let mut put = |name: String, shape: &[usize]| {
            w.insert(name, Tensor::randn(0f32, 0.2, shape, &dev).unwrap());
        };
        put("wpe.weight".into(), &[cfg.n_positions, d]);
        put("ln_f.weight".into(), &[d]);
        put("ln_f.bias".into(), &[d]);
        for i in 0..cfg.n_layer {
            for (m, (i_dim, o_dim)) in [
                ("attn.c_attn", (d, 3 * d)),
                ("attn.c_proj", (d, d)),
                ("mlp.c_fc", (d, 4 * d)),
                ("mlp.c_proj", (4 * d, d)),
            ] {
                put(format!("h.{i}.{m}.weight"), &[i_dim, o_dim]);
                put(format!("h.{i}.{m}.bias"), &[o_dim]);
            }
            for n in ["ln_1", "ln_2"] {
                put(format!("h.{i}.{n}.weight"), &[d]);
                put(format!("h.{i}.{n}.bias"), &[d]);
            }
        }
        Gpt2::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &dev)).unwrap()
    }

    /// A prefill, then single positions past the cache's first buffers (256) and past their
    /// doubling: every position's hidden state equals the one of the whole sequence at once.
    #[test]
    fn the_cache_grows_in_place_and_keeps_every_position() {
        let model = small();
        let n = 600.min(model.config().n_positions);
        let x = Tensor::randn(0f32, 1.0, (1, n, 32), &Device::Cpu).unwrap();
        let whole = model.forward(&x, &mut Gpt2Cache::default()).unwrap();
        let mut cache = Gpt2Cache::default();
        let mut parts = vec![model
            .forward(&x.narrow(1, 0, 200).unwrap(), &mut cache)
            .unwrap()];
        for i in 200..n {
            parts.push(
                model
                    .forward(&x.narrow(1, i, 1).unwrap(), &mut cache)
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), n);
        let stepped = Tensor::cat(&parts, 1).unwrap();
        let err = ferrovox_kernels::compare::max_abs_diff(&stepped, &whole).unwrap();
        assert!(err < 1e-4, "{err}");
        let two = Tensor::randn(0f32, 1.0, (2, 1, 32), &Device::Cpu).unwrap();
        assert!(
            model.forward(&two, &mut cache).is_err(),
            "another batch size"
        );
    }
}
