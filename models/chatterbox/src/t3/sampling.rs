//! T3's logits processing and sampling, as `T3.inference` (`t3/t3.py`) applies transformers'
//! processors (`generation/logits_process.py`), in its order: classifier-free guidance,
//! repetition penalty, temperature, min-p, top-p, then one multinomial draw. Everything stays
//! on the device: the only value a caller needs on the host is the token, for the stop check.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::s3gen::SeededSourceNoise;

/// The sampling controls of one generation (upstream's `generate` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Classifier-free guidance: `cond + w · (cond − uncond)`; 0 turns the unconditional row off.
    pub cfg_weight: f32,
    /// Divides the logits; 0 means greedy decoding (the most likely token, no draw).
    pub temperature: f32,
    /// Keeps the smallest set of most likely tokens whose probability reaches it (1 keeps all).
    pub top_p: f32,
    /// Drops tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of every token generated so far.
    pub repetition_penalty: f32,
    /// The most speech tokens generated before giving up on a stop token.
    pub max_new_tokens: usize,
}

impl Default for SamplingOptions {
    /// `ChatterboxTTS.generate`'s defaults, with upstream's 1000 new tokens.
    fn default() -> Self {
        Self {
            cfg_weight: 0.5,
            temperature: 0.8,
            top_p: 1.0,
            min_p: 0.05,
            repetition_penalty: 1.2,
            max_new_tokens: 1000,
        }
    }
}

impl SamplingOptions {
    /// Checks every control, naming the first one out of range.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let range = |name, v: f32, lo: f32, hi: f32| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((name, format!("{v} is outside {lo}..={hi}")))
            }
        };
        range("cfg_weight", self.cfg_weight, 0.0, 10.0)?;
        range("temperature", self.temperature, 0.0, 10.0)?;
        range("top_p", self.top_p, f32::MIN_POSITIVE, 1.0)?;
        range("min_p", self.min_p, 0.0, 1.0)?;
        range(
            "repetition_penalty",
            self.repetition_penalty,
            f32::MIN_POSITIVE,
            10.0,
        )?;
        if self.max_new_tokens == 0 {
            return Err(("max_new_tokens", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Where the sampler's random draws come from: for each sampled token, one `Exp(1)` draw per
/// vocabulary entry, and the token is `argmax(probs / q)`. That is a multinomial draw (the
/// exponential race), and the one torch runs for `torch.multinomial(probs, 1)`, so a fixture's
/// recorded `q` replays upstream's tokens exactly.
pub trait SamplingNoise: Send {
    /// `[1, vocab]` draws for the token sampled at `step`.
    fn exponentials(&mut self, step: usize, vocab: usize, device: &Device) -> Result<Tensor>;
}

/// Draws keyed by (seed, step): the same seed gives the same tokens whether a request runs
/// alone or beside others. They are made on the host a block of steps at a time, so the
/// device receives one upload per block rather than one per token.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seed: u64,
    /// The first step of the block held, and its draws `[BLOCK, vocab]`.
    block: Option<(usize, Tensor)>,
}

/// Steps whose draws are uploaded together.
const BLOCK: usize = 16;

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self { seed, block: None }
    }

    /// The draws of `step` as `SeededSourceNoise` keys them.
    fn draws(&self, step: usize, vocab: usize) -> Vec<f32> {
        let mut rng = SeededSourceNoise::keyed(self.seed, T3_STREAM, step as u64);
        // 1 − u lies in (0, 1]: −ln of it is finite.
        rng.uniforms(vocab)
            .into_iter()
            .map(|u| -(1.0 - u).ln())
            .collect()
    }
}

/// The key of T3's draws among a request's random streams (S3Gen's use others).
const T3_STREAM: u64 = 0x7433;

impl SamplingNoise for SeededNoise {
    fn exponentials(&mut self, step: usize, vocab: usize, device: &Device) -> Result<Tensor> {
        let first = step - step % BLOCK;
        let held = matches!(&self.block, Some((f, t)) if *f == first && t.dim(1)? == vocab && t.device().same_device(device));
        if !held {
            let q: Vec<f32> = (first..first + BLOCK)
                .flat_map(|s| self.draws(s, vocab))
                .collect();
            self.block = Some((first, Tensor::from_vec(q, (BLOCK, vocab), device)?));
        }
        let (_, block) = self.block.as_ref().expect("just filled");
        block.narrow(0, step - first, 1)
    }
}

/// Replays recorded draws in order (a fixture's `q` tensors). Past the recording it gives
/// ones: a generation that checks for its stop token every few steps samples a few tokens past
/// it, and those are discarded, while upstream drew nothing for them.
#[derive(Debug, Clone)]
pub struct ReplayedNoise {
    draws: Vec<Tensor>,
}

impl ReplayedNoise {
    pub fn new(draws: Vec<Tensor>) -> Self {
        Self { draws }
    }
}

impl SamplingNoise for ReplayedNoise {
    fn exponentials(&mut self, step: usize, vocab: usize, device: &Device) -> Result<Tensor> {
        match self.draws.get(step) {
            Some(q) => q
                .reshape((1, vocab))?
                .to_device(device)?
                .to_dtype(DType::F32),
            None => Tensor::ones((1, vocab), DType::F32, device),
        }
    }
}

/// Which processors run for a set of controls: the choices that change the ops recorded, so
/// a CUDA graph is captured per set while the values themselves stay inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Processors {
    /// Two rows (conditional, unconditional) to guide.
    pub cfg: bool,
    /// The most likely token, no draw (for some rows of a batch).
    pub greedy: bool,
    /// A draw from the processed distribution (for some rows of a batch).
    pub sampled: bool,
    pub penalty: bool,
    pub min_p: bool,
    /// Top-p below 1 (at 1 it only drops tokens already at probability 0: skipped).
    pub top_p: bool,
}

impl Processors {
    pub fn of(o: &SamplingOptions) -> Self {
        Self {
            cfg: o.cfg_weight > 0.0,
            greedy: o.temperature == 0.0,
            sampled: o.temperature != 0.0,
            penalty: o.repetition_penalty != 1.0,
            min_p: o.min_p > 0.0,
            top_p: o.top_p < 1.0,
        }
    }

    /// The processors a batch of rows with either set needs: each row's values make the
    /// processors it does not use exact no-ops (a penalty of 1, min-p 0, top-p 1, a guidance
    /// weight of 0), and greedy rows pick their argmax beside the sampled ones.
    pub fn union(self, other: Self) -> Self {
        Self {
            cfg: self.cfg | other.cfg,
            greedy: self.greedy | other.greedy,
            sampled: self.sampled | other.sampled,
            penalty: self.penalty | other.penalty,
            min_p: self.min_p | other.min_p,
            top_p: self.top_p | other.top_p,
        }
    }

    /// A distinct number per set, for graph keys.
    pub fn bits(self) -> usize {
        [
            self.cfg,
            self.greedy,
            self.penalty,
            self.min_p,
            self.top_p,
            self.sampled,
        ]
        .iter()
        .enumerate()
        .map(|(i, &on)| usize::from(on) << i)
        .sum()
    }
}

/// Constant tensors the processors read, made once per vocabulary and device: a captured
/// graph keeps their addresses, so they must outlive it.
#[derive(Debug, Clone)]
pub struct ProcessorTables {
    /// `[1, vocab]` ids, to mark a token in the history.
    ids: Tensor,
    /// `[1, vocab]` of −∞, what filtered logits become.
    neg_inf: Tensor,
    /// `[1, vocab]` u8: 1 except at the last sorted place (top-p keeps the most likely).
    below_last: Tensor,
}

impl ProcessorTables {
    pub fn new(vocab: usize, device: &Device) -> Result<Self> {
        let ids = Tensor::arange(0u32, vocab as u32, device)?.unsqueeze(0)?;
        Ok(Self {
            below_last: ids.lt((vocab - 1) as f64)?,
            ids,
            neg_inf: Tensor::full(f32::NEG_INFINITY, (1, vocab), device)?,
        })
    }

    pub fn vocab(&self) -> usize {
        self.ids.dim(1).unwrap_or(0)
    }
}

/// Columns of a row of [`control_values`].
pub const CONTROLS: usize = 6;

/// The controls' values as one row (cfg weight, repetition penalty, temperature, min-p,
/// 1 − top-p, greedy flag), so one graph serves every value. A greedy row's temperature is
/// kept at 0 for a lone generation (its draw is never computed) and made 1 in a batch
/// ([`batch_row`]), where the sampled rows' draw is computed for it too.
pub fn control_row(o: &SamplingOptions) -> [f32; CONTROLS] {
    let drop_below = (1.0 - o.top_p as f64) as f32;
    let greedy = o.temperature == 0.0;
    [
        o.cfg_weight,
        o.repetition_penalty,
        o.temperature,
        o.min_p,
        drop_below,
        f32::from(u8::from(greedy)),
    ]
}

/// [`control_row`] for a row of a batch: a greedy row's temperature is 1, so the batch's
/// draw (computed for its sampled rows) stays finite.
pub fn batch_row(o: &SamplingOptions) -> [f32; CONTROLS] {
    let mut row = control_row(o);
    if o.temperature == 0.0 {
        row[2] = 1.0;
    }
    row
}

/// The controls of a row of a batch no generation holds: every processor a no-op.
pub const IDLE_ROW: [f32; CONTROLS] = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0];

/// [`control_row`] as a `[1, CONTROLS]` f32 tensor on `device`.
pub fn control_values(o: &SamplingOptions, device: &Device) -> Result<Tensor> {
    Tensor::new(&[control_row(o)], device)
}

/// The processors over one step's logits of `n` generations, every value read from tensors:
/// what a decode graph records, and what the eager [`Sampler`] runs (`n` = 1). Each
/// generation's rows are independent of the others'.
#[derive(Debug, Clone, Copy)]
pub struct Draw<'a> {
    /// `[n, CONTROLS]`: [`control_values`] of each generation.
    pub controls: &'a Tensor,
    pub which: Processors,
    pub tables: &'a ProcessorTables,
}

impl Draw<'_> {
    /// Column `i` of the controls, `[n, 1]`.
    fn control(&self, i: usize) -> Result<Tensor> {
        self.controls.narrow(1, i, 1)
    }

    /// The guided logits `[n, vocab]` of the last position's rows: `[2n, vocab]` with CFG
    /// (each generation's conditional row, then its unconditional one), `[n, vocab]` without.
    pub fn guide(&self, rows: &Tensor) -> Result<Tensor> {
        let rows = rows.to_dtype(DType::F32)?;
        let n = self.controls.dim(0)?;
        if rows.dim(0)? == n {
            return Ok(rows);
        }
        let vocab = rows.dim(1)?;
        let pairs = rows.reshape((n, 2, vocab))?;
        let cond = pairs.narrow(1, 0, 1)?.reshape((n, vocab))?;
        let uncond = pairs.narrow(1, 1, 1)?.reshape((n, vocab))?;
        cond.clone() + (cond - uncond)?.broadcast_mul(&self.control(0)?)?
    }

    /// Guided logits after the repetition penalty over `seen` (`[n, vocab]` u8): greedy
    /// decoding's argmax is taken here.
    pub fn penalized(&self, logits: &Tensor, seen: &Tensor) -> Result<Tensor> {
        if !self.which.penalty {
            return Ok(logits.clone());
        }
        let p = self.control(1)?;
        let penalized = logits
            .lt(0f32)?
            .where_cond(&logits.broadcast_mul(&p)?, &logits.broadcast_div(&p)?)?;
        seen.where_cond(&penalized, logits)
    }

    /// The distribution the token is drawn from, `[n, vocab]`, after temperature, min-p and
    /// top-p (filtered tokens have probability 0).
    pub fn probabilities(&self, penalized: &Tensor) -> Result<Tensor> {
        let mut logits = penalized.broadcast_div(&self.control(2)?)?;
        let neg_inf = self.tables.neg_inf.broadcast_as(logits.shape())?;
        if self.which.min_p {
            let probs = candle_nn::ops::softmax_last_dim(&logits)?;
            let floor = probs
                .max_keepdim(D::Minus1)?
                .broadcast_mul(&self.control(3)?)?;
            logits = probs.broadcast_lt(&floor)?.where_cond(&neg_inf, &logits)?;
        }
        if self.which.top_p {
            logits = top_p_filter(&logits, &self.control(4)?, self.tables)?;
        }
        candle_nn::ops::softmax_last_dim(&logits)
    }

    /// One token per generation, `[n]` (u32), from the rows' logits, with draws `q`
    /// `[n, vocab]` (unread when every generation is greedy), and the histories `seen` with
    /// them added.
    pub fn token(&self, rows: &Tensor, seen: &Tensor, q: &Tensor) -> Result<(Tensor, Tensor)> {
        self.token_of_guided(&self.guide(rows)?, seen, q)
    }

    /// [`Draw::token`] from logits already guided (`[n, vocab]` f32).
    pub fn token_of_guided(
        &self,
        guided: &Tensor,
        seen: &Tensor,
        q: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = self.controls.dim(0)?;
        let penalized = self.penalized(guided, seen)?;
        let sampled = || (self.probabilities(&penalized)? / q)?.argmax(D::Minus1);
        let token = match (self.which.greedy, self.which.sampled) {
            (true, false) => penalized.argmax(D::Minus1)?,
            (false, _) => sampled()?,
            (true, true) => {
                let greedy = self.control(5)?.reshape(n)?.gt(0.5)?;
                greedy.where_cond(&penalized.argmax(D::Minus1)?, &sampled()?)?
            }
        };
        let token = token.reshape(n)?.to_dtype(DType::U32)?;
        let seen = self.record(seen, &token)?;
        Ok((token, seen))
    }

    /// `seen` with `token` (`[n]` u32) added.
    pub(crate) fn record(&self, seen: &Tensor, token: &Tensor) -> Result<Tensor> {
        let n = token.dim(0)?;
        let hit = self.tables.ids.broadcast_eq(&token.reshape((n, 1))?)?;
        seen.maximum(&hit)
    }
}

/// The per-generation state of the processors: which tokens the repetition penalty covers.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    which: Processors,
    controls: Tensor,
    tables: ProcessorTables,
    /// `[1, vocab]` u8: 1 for every id generated so far (the start token included).
    seen: Tensor,
}

impl Sampler {
    /// A sampler whose history holds `start_token`, as upstream's `generated_ids` does.
    pub fn new(
        options: SamplingOptions,
        vocab: usize,
        start_token: u32,
        device: &Device,
    ) -> Result<Self> {
        Self::with_tables(options, ProcessorTables::new(vocab, device)?, start_token)
    }

    /// A sampler over tables made beforehand (a decode graph's).
    pub fn with_tables(
        options: SamplingOptions,
        tables: ProcessorTables,
        start_token: u32,
    ) -> Result<Self> {
        let device = tables.ids.device().clone();
        let mut s = Self {
            which: Processors::of(&options),
            controls: control_values(&options, &device)?,
            seen: Tensor::zeros((1, tables.vocab()), DType::U8, &device)?,
            tables,
            options,
        };
        s.record(&Tensor::new(&[start_token], &device)?)?;
        Ok(s)
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    pub fn processors(&self) -> Processors {
        self.which
    }

    /// [`control_values`] of this sampler's options.
    pub fn controls(&self) -> &Tensor {
        &self.controls
    }

    /// The history `[1, vocab]` u8.
    pub fn seen(&self) -> &Tensor {
        &self.seen
    }

    /// Replaces the history with one a decode graph computed.
    pub fn set_seen(&mut self, seen: Tensor) {
        self.seen = seen;
    }

    fn draw(&self) -> Draw<'_> {
        Draw {
            controls: &self.controls,
            which: self.which,
            tables: &self.tables,
        }
    }

    /// Adds `token` (`[1]` u32) to the history.
    pub fn record(&mut self, token: &Tensor) -> Result<()> {
        self.seen = self.draw().record(&self.seen, token)?;
        Ok(())
    }

    /// See [`Draw::guide`].
    pub fn guide(&self, rows: &Tensor) -> Result<Tensor> {
        self.draw().guide(rows)
    }

    /// See [`Draw::penalized`], over this sampler's history.
    pub fn penalized(&self, logits: &Tensor) -> Result<Tensor> {
        self.draw().penalized(logits, &self.seen)
    }

    /// See [`Draw::probabilities`].
    pub fn probabilities(&self, penalized: &Tensor) -> Result<Tensor> {
        self.draw().probabilities(penalized)
    }

    /// One token `[1]` (u32) from the last position's rows `[rows, vocab]`, with its draw
    /// from `noise`, recorded in the history. Greedy when the temperature is 0.
    pub fn sample(
        &mut self,
        rows: &Tensor,
        step: usize,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Tensor> {
        let guided = self.guide(rows)?;
        self.sample_guided(&guided, step, noise)
    }

    /// One token from logits already guided, with its draw, recorded in the history.
    fn sample_guided(
        &mut self,
        guided: &Tensor,
        step: usize,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Tensor> {
        let q = if !self.which.sampled {
            self.tables.neg_inf.clone()
        } else {
            noise.exponentials(step, self.tables.vocab(), guided.device())?
        };
        let (token, seen) = self.draw().token_of_guided(guided, &self.seen, &q)?;
        self.seen = seen;
        Ok(token)
    }

    /// [`Sampler::sample`] with `adjust` applied on the host to the guided logits of the one
    /// generation, before the repetition penalty (where upstream's stop detector works).
    pub fn sample_adjusted(
        &mut self,
        rows: &Tensor,
        step: usize,
        noise: &mut dyn SamplingNoise,
        adjust: &mut dyn FnMut(&mut [f32]),
    ) -> Result<Tensor> {
        let guided = self.guide(rows)?;
        let (n, vocab) = guided.dims2()?;
        if n != 1 {
            candle_core::bail!("logits adjusted on the host are one generation's, not {n}");
        }
        let mut host = guided.flatten_all()?.to_vec1::<f32>()?;
        adjust(&mut host);
        let guided = Tensor::from_vec(host, (1, vocab), rows.device())?;
        self.sample_guided(&guided, step, noise)
    }
}

/// transformers' `TopPLogitsWarper`: sort ascending, drop the tokens whose cumulative
/// probability is at most `1 − top_p` (`drop_below`, `[n, 1]`), always keeping the most likely.
fn top_p_filter(logits: &Tensor, drop_below: &Tensor, tables: &ProcessorTables) -> Result<Tensor> {
    let order = logits.arg_sort_last_dim(true)?;
    let sorted = logits.gather(&order, D::Minus1)?;
    let probs = candle_nn::ops::softmax_last_dim(&sorted)?;
    let cumulative = inclusive_scan(&probs)?;
    let drop_sorted = cumulative
        .broadcast_le(drop_below)?
        .broadcast_mul(&tables.below_last)?;
    // The inverse permutation takes the mask back to vocabulary order.
    let inverse = order.arg_sort_last_dim(true)?;
    let drop = drop_sorted.gather(&inverse, D::Minus1)?;
    drop.where_cond(&tables.neg_inf.broadcast_as(logits.shape())?, logits)
}

/// Inclusive prefix sums along the last axis of `[rows, n]` in `log2 n` shifted adds (Hillis and
/// Steele), all on the device: Candle's `cumsum` multiplies by an `n × n` triangle.
fn inclusive_scan(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    let mut sum = x.clone();
    let mut shift = 1;
    while shift < n {
        let shifted = sum
            .narrow(D::Minus1, 0, n - shift)?
            .pad_with_zeros(D::Minus1, shift, 0)?;
        sum = (sum + shifted)?;
        shift *= 2;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_is_a_prefix_sum() {
        let x: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        let t = Tensor::from_vec(x.clone(), (1, 11), &Device::Cpu).unwrap();
        let got = inclusive_scan(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut acc = 0.0;
        let want: Vec<f32> = x
            .iter()
            .map(|v| {
                acc += v;
                acc
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn top_p_keeps_the_smallest_likely_set() {
        // probs 0.5, 0.3, 0.15, 0.05: top-p 0.75 keeps the first two (ascending cumulative
        // 0.05, 0.2 <= 0.25 dropped; 0.5 > 0.25 kept).
        let p = [0.5f32, 0.3, 0.15, 0.05];
        let logits = Tensor::from_vec(
            p.iter().map(|x| x.ln()).collect::<Vec<_>>(),
            (1, 4),
            &Device::Cpu,
        )
        .unwrap();
        let tables = ProcessorTables::new(4, &Device::Cpu).unwrap();
        let drop_below = Tensor::new(&[[0.25f32]], &Device::Cpu).unwrap();
        let out = top_p_filter(&logits, &drop_below, &tables)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(out[0].is_finite() && out[1].is_finite());
        assert!(out[2] == f32::NEG_INFINITY && out[3] == f32::NEG_INFINITY);
    }

    #[test]
    fn greedy_takes_the_penalized_argmax_and_remembers_it() {
        let opts = SamplingOptions {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(opts, 4, 3, &Device::Cpu).unwrap();
        // Token 3 (the start token) is penalized: 3.0 / 2 < 2.0.
        let rows = Tensor::new(&[[0f32, 1.0, 2.0, 3.0]], &Device::Cpu).unwrap();
        let mut noise = SeededNoise::new(0);
        let t = s
            .sample(&rows, 0, &mut noise)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(t, [2]);
        // Now 2 is penalized too (1.0), below the start token's 1.5.
        let t = s
            .sample(&rows, 1, &mut noise)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(t, [3]);
    }

    #[test]
    fn a_seed_gives_the_same_tokens_and_another_seed_others() {
        let opts = SamplingOptions {
            temperature: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let rows = Tensor::zeros((1, 64), DType::F32, &Device::Cpu).unwrap();
        let run = |seed| {
            let mut s = Sampler::new(opts, 64, 0, &Device::Cpu).unwrap();
            let mut noise = SeededNoise::new(seed);
            (0..16)
                .map(|i| {
                    s.sample(&rows, i, &mut noise)
                        .unwrap()
                        .to_vec1::<u32>()
                        .unwrap()[0]
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
