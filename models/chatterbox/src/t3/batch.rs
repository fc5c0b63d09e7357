//! Continuous batching of T3's decode steps: the generations of concurrent requests decode as
//! one batch, each with its own guidance pair, sampling controls, positions, draws and stop.
//! A generation joins between two steps (its prefill runs alone, into its rows of a shared
//! cache) and leaves at its stop token or its token budget, without waiting for the others.
//!
//! Every generation holds two rows of the cache, conditional and unconditional. One without
//! guidance keeps the second row and a guidance weight of 0, which leaves its conditional
//! logits exactly as they are; the processors a generation does not use run on it with values
//! that make them exact no-ops ([`Processors::union`]). So a generation's tokens are the ones it
//! draws alone, under the same draws (the products' rounding may differ with the batch's row
//! count; the tests bound it).
//!
//! On CUDA a step is one graph per (generations decoding, attention window, processors), as
//! [`super::decode`]'s lone generations are.

use candle_core::{DType, Device, IndexOp, Tensor};
use ferrovox_device::{device_work, GraphCache};

use super::cond_enc::T3Cond;
use super::decode::WINDOW;
use super::llama::{KvCache, StepAt};
use super::model::T3;
use super::sampling::{
    batch_row, Draw, ProcessorTables, Processors, SamplingNoise, SamplingOptions, CONTROLS,
    IDLE_ROW,
};
use crate::{Error, Result};

/// Graphs a batch holds at most: windows × batch sizes in use.
const MAX_GRAPHS: usize = 48;

/// The shape of a decode batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most generations decoding together (the cache grows to it by doubling).
    pub max_slots: usize,
    /// Cache positions each generation may fill: conditioning, text, the start tokens and
    /// every new token. A generation that may need more runs alone ([`T3::generate`]).
    pub positions: usize,
    /// Positions the attended window grows by (see [`WINDOW`]).
    pub window: usize,
}

impl BatchConfig {
    /// Room for `max_new_tokens` after the longest conditioning and `text_tokens` text tokens,
    /// rounded up to whole windows.
    pub fn for_lengths(
        t3: &T3,
        max_slots: usize,
        text_tokens: usize,
        max_new_tokens: usize,
    ) -> Self {
        let need = t3.positions_for(text_tokens, max_new_tokens);
        let positions = need.div_ceil(WINDOW) * WINDOW;
        Self {
            max_slots: max_slots.max(1),
            positions: positions.min(t3.max_positions()).max(need),
            window: WINDOW,
        }
    }

    /// Whether a generation of `text_tokens` text tokens and up to `max_new_tokens` fits a
    /// slot's positions.
    pub fn fits(&self, t3: &T3, text_tokens: usize, max_new_tokens: usize) -> bool {
        t3.positions_for(text_tokens, max_new_tokens) <= self.positions
    }

    /// Bytes of cache one generation holds (two rows of keys and values in every layer).
    pub fn slot_bytes(&self, t3: &T3, dtype: DType) -> u64 {
        let l = &t3.config().llama;
        let per_row = l.num_key_value_heads * l.head_dim * self.positions;
        (l.num_hidden_layers * 2 * 2 * per_row * dtype.size_in_bytes()) as u64
    }
}

/// A generation asking to join.
pub struct Request {
    pub cond: T3Cond,
    /// Start and stop text tokens included.
    pub text_tokens: Vec<u32>,
    pub options: SamplingOptions,
    pub noise: Box<dyn SamplingNoise>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("text_tokens", &self.text_tokens.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a generation produced at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A speech token (never the stop token).
    Token(u32),
    /// The stop token came: the generation is over.
    Stopped,
    /// `max_new_tokens` were generated without a stop token: the generation is over.
    Exhausted,
}

impl Event {
    /// Whether the generation is over.
    pub fn ends(self) -> bool {
        !matches!(self, Self::Token(_))
    }
}

/// The place a running generation holds in the batch.
pub type Slot = usize;

/// What [`T3Batch::join`] did with a request.
#[derive(Debug)]
pub enum Joined {
    /// Prefilled and its first token drawn: `slot` while it goes on (`None` when it ended at
    /// once), and its events so far.
    Admitted {
        slot: Option<Slot>,
        events: Vec<Event>,
    },
    /// Every slot is taken: the request, to join after a generation leaves.
    NoRoom(Request),
}

/// A generation decoding in the batch.
struct Live {
    /// Cache positions filled.
    len: usize,
    /// Tokens given out (the next one is drawn at speech position and draw index `produced`).
    produced: usize,
    /// The last token given out, the next step's input.
    token: u32,
    max_new: usize,
    controls: [f32; CONTROLS],
    which: Processors,
    noise: Box<dyn SamplingNoise>,
}

/// The cache every generation decodes in: two rows per slot.
struct Pool {
    cache: KvCache,
    slots: usize,
    /// `[slots, vocab]` u8: each generation's history for the repetition penalty.
    seen: Tensor,
    ramp: Tensor,
    neg_inf: Tensor,
    zeros: Tensor,
}

/// The decode batch: one owner (a scheduler's thread) joins generations and steps them.
pub struct T3Batch {
    t3: T3,
    config: BatchConfig,
    dtype: DType,
    device: Device,
    pool: Option<Pool>,
    live: Vec<Option<Live>>,
    tables: ProcessorTables,
    graphs: GraphCache,
}

impl std::fmt::Debug for T3Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T3Batch")
            .field("config", &self.config)
            .field("slots", &self.slots())
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl T3Batch {
    /// An empty batch for `t3`; the cache is allocated as generations join.
    pub fn new(t3: &T3, config: BatchConfig, device: &Device) -> Result<Self> {
        if config.positions > t3.max_positions() || config.window == 0 {
            return Err(Error::Config(format!(
                "a decode batch of {} positions (window {}): T3 attends at most {}",
                config.positions,
                config.window,
                t3.max_positions()
            )));
        }
        let dtype = t3.dtype();
        Ok(Self {
            tables: ProcessorTables::new(t3.config().speech_tokens_dict_size, device)?,
            t3: t3.clone(),
            config,
            dtype,
            device: device.clone(),
            pool: None,
            live: Vec::new(),
            graphs: GraphCache::with_limit("chatterbox.t3.batch", MAX_GRAPHS),
        })
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// The graphs held, for benches and logs.
    pub fn graphs(&self) -> &GraphCache {
        &self.graphs
    }

    /// Slots the cache holds now.
    pub fn slots(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.slots)
    }

    /// Generations decoding.
    pub fn running(&self) -> usize {
        self.live.iter().filter(|l| l.is_some()).count()
    }

    /// Whether a generation of `text_tokens` text tokens and up to `max_new_tokens` fits a
    /// slot's positions.
    pub fn fits(&self, text_tokens: usize, max_new_tokens: usize) -> bool {
        self.config.fits(&self.t3, text_tokens, max_new_tokens)
    }

    /// Ends the generation at `slot` (its consumer is gone).
    pub fn leave(&mut self, slot: Slot) {
        if let Some(l) = self.live.get_mut(slot) {
            *l = None;
        }
    }

    /// Ends every generation (after a failed step).
    pub fn clear(&mut self) {
        self.live.iter_mut().for_each(|l| *l = None);
    }

    /// Prefills `request` into a free slot and draws its first token, as [`T3::generate`]
    /// does; [`Joined::NoRoom`] when every slot is taken and the cache is at `max_slots`.
    pub fn join(&mut self, request: Request) -> Result<Joined> {
        device_work(|| self.join_now(request))
    }

    fn join_now(&mut self, mut request: Request) -> Result<Joined> {
        if !self.t3.config().alignment_heads.is_empty() {
            return Err(Error::Input(
                "this T3's stop detector reads each generation's attention: it decodes alone \
                 (T3::generate), not in a batch"
                    .into(),
            ));
        }
        let o = request.options;
        o.validate()
            .map_err(|(field, reason)| Error::Input(format!("{field}: {reason}")))?;
        if !self.fits(request.text_tokens.len(), o.max_new_tokens) {
            return Err(Error::Input(format!(
                "{} text tokens and {} new ones exceed the decode batch's {} positions",
                request.text_tokens.len(),
                o.max_new_tokens,
                self.config.positions
            )));
        }
        let Some(slot) = self.free_slot()? else {
            return Ok(Joined::NoRoom(request));
        };
        let t3 = &self.t3;
        let cond_emb = t3.prepare_conditioning(&request.cond)?;
        let embeds = t3
            .prefill_embeds(&cond_emb, &request.text_tokens, true)?
            .to_dtype(self.dtype)?;
        let len = embeds.dim(1)?;
        let pool = self.pool.as_ref().expect("a free slot has a pool");
        let mut rows = pool.cache.rows_view(2 * slot, 2)?;
        let logits = t3.forward(&embeds, &mut rows)?;
        let last = logits.i((.., len - 1, ..))?;
        let which = Processors {
            cfg: true,
            ..Processors::of(&o)
        };
        let controls = batch_row(&o);
        let vocab = self.tables.vocab();
        let start = Tensor::new(&[t3.config().start_speech_token], &self.device)?;
        let draw = Draw {
            controls: &Tensor::new(&[controls], &self.device)?,
            which,
            tables: &self.tables,
        };
        // The history before the first draw holds the start token, as upstream's
        // `generated_ids` does.
        let empty = Tensor::zeros((1, vocab), DType::U8, &self.device)?;
        let seen = draw.record(&empty, &start)?;
        let q = noise_for(&mut *request.noise, which, 0, vocab, &self.device)?;
        let (token, seen) = draw.token(&last, &seen, &q)?;
        let token = token.to_vec1::<u32>()?[0];
        let mut events = Vec::with_capacity(2);
        if token == t3.config().stop_speech_token {
            events.push(Event::Stopped);
            return Ok(Joined::Admitted { slot: None, events });
        }
        events.push(Event::Token(token));
        if o.max_new_tokens == 1 {
            events.push(Event::Exhausted);
            return Ok(Joined::Admitted { slot: None, events });
        }
        pool.seen.slice_set(&seen, 0, slot)?;
        self.live[slot] = Some(Live {
            len,
            produced: 1,
            token,
            max_new: o.max_new_tokens,
            controls,
            which,
            noise: request.noise,
        });
        Ok(Joined::Admitted {
            slot: Some(slot),
            events,
        })
    }

    /// The lowest free slot, the cache doubled (up to `max_slots`) when every one is taken.
    fn free_slot(&mut self) -> Result<Option<Slot>> {
        if let Some(i) = self.live.iter().position(Option::is_none) {
            return Ok(Some(i));
        }
        let slots = self.slots();
        if slots >= self.config.max_slots {
            return Ok(None);
        }
        let grown = (slots * 2).clamp(1, self.config.max_slots);
        self.grow(grown)?;
        Ok(Some(slots))
    }

    /// A cache of `slots` slots holding the current one's rows, grown layer by layer
    /// ([`KvCache::grow_rows`]). The graphs baked in the old buffers' addresses (and hold
    /// them), so they go first. A growth that fails (the device out of memory) ends every
    /// running generation: their rows were in the cache being moved.
    fn grow(&mut self, slots: usize) -> Result<()> {
        self.graphs.clear();
        let grown = self.grown(slots);
        if grown.is_err() {
            self.live.iter_mut().for_each(|l| *l = None);
        }
        let (cache, seen) = grown?;
        let positions = self.config.positions;
        let device = &self.device;
        self.pool = Some(Pool {
            cache,
            slots,
            seen,
            ramp: Tensor::arange(0u32, positions as u32, device)?
                .to_dtype(DType::F32)?
                .unsqueeze(0)?,
            neg_inf: Tensor::full(f32::NEG_INFINITY, (1, positions), device)?
                .to_dtype(self.dtype)?,
            zeros: Tensor::zeros((1, positions), self.dtype, device)?,
        });
        self.live.resize_with(slots, || None);
        Ok(())
    }

    fn grown(&mut self, slots: usize) -> Result<(KvCache, Tensor)> {
        let positions = self.config.positions;
        let seen = Tensor::zeros((slots, self.tables.vocab()), DType::U8, &self.device)?;
        Ok(match self.pool.take() {
            Some(old) => {
                seen.slice_set(&old.seen, 0, 0)?;
                (old.cache.grow_rows(2 * slots)?, seen)
            }
            None => (
                self.t3
                    .cache(2 * slots, positions, self.dtype, &self.device)?,
                seen,
            ),
        })
    }

    /// One decode step of every running generation: each one's next token, or its end. The
    /// batch runs the smallest power of two of slots that covers the running ones.
    pub fn step(&mut self) -> Result<Vec<(Slot, Event)>> {
        device_work(|| self.step_now())
    }

    fn step_now(&mut self) -> Result<Vec<(Slot, Event)>> {
        let Some(last) = self.live.iter().rposition(Option::is_some) else {
            return Ok(Vec::new());
        };
        let pool = self.pool.as_ref().expect("running generations have a pool");
        let n = (last + 1).next_power_of_two().min(pool.slots);
        let vocab = self.tables.vocab();
        let mut which: Option<Processors> = None;
        let (mut tokens, mut at, mut controls, mut draws) = (
            Vec::with_capacity(n),
            Vec::with_capacity(2 * n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut furthest = 0;
        for live in self.live.iter_mut().take(n) {
            match live {
                Some(l) => {
                    which = Some(which.map_or(l.which, |w| w.union(l.which)));
                    tokens.push(l.token);
                    at.extend([l.len as u32, l.produced as u32]);
                    controls.push(l.controls);
                    draws.push(noise_for(
                        &mut *l.noise,
                        l.which,
                        l.produced,
                        vocab,
                        &self.device,
                    )?);
                    furthest = furthest.max(l.len + 1);
                }
                None => {
                    tokens.push(0);
                    at.extend([0, 0]);
                    controls.push(IDLE_ROW);
                    draws.push(Tensor::ones((1, vocab), DType::F32, &self.device)?);
                }
            }
        }
        let which = which.expect("a running generation");
        let window =
            (furthest.div_ceil(self.config.window) * self.config.window).min(self.config.positions);
        let device = &self.device;
        let tokens = Tensor::new(tokens, device)?;
        let at = Tensor::from_vec(at, (n, 2), device)?;
        let controls = Tensor::from_vec(controls.concat(), (n, CONTROLS), device)?;
        let q = Tensor::cat(&draws, 0)?;
        let seen = pool.seen.narrow(0, 0, n)?;
        let rows = pool.cache.rows_view(0, 2 * n)?;
        let (t3, tables) = (&self.t3, &self.tables);
        let (mut ys, _) = self.graphs.run_many(
            (window << 7) | which.bits(),
            &[&tokens, &at, &seen, &q, &controls],
            |i| {
                let logits = batch_step(t3, pool, &rows, window, &i[0], &i[1])?;
                let draw = Draw {
                    controls: &i[4],
                    which,
                    tables,
                };
                let (token, seen) = draw.token(&logits, &i[2], &i[3])?;
                Ok(vec![token, seen])
            },
        )?;
        let seen = ys.pop().expect("two outputs");
        let next = ys.pop().expect("two outputs").to_vec1::<u32>()?;
        pool.seen.slice_set(&seen, 0, 0)?;
        let stop = self.t3.config().stop_speech_token;
        let mut events = Vec::new();
        for (slot, live) in self.live.iter_mut().enumerate().take(n) {
            let Some(l) = live else { continue };
            let token = next[slot];
            l.len += 1;
            l.produced += 1;
            if token == stop {
                events.push((slot, Event::Stopped));
                *live = None;
                continue;
            }
            l.token = token;
            events.push((slot, Event::Token(token)));
            if l.produced == l.max_new {
                events.push((slot, Event::Exhausted));
                *live = None;
            }
        }
        Ok(events)
    }
}

/// A generation's draws for draw index `step`, `[1, vocab]`: ones when it is greedy (never
/// read).
fn noise_for(
    noise: &mut dyn SamplingNoise,
    which: Processors,
    step: usize,
    vocab: usize,
    device: &Device,
) -> Result<Tensor> {
    Ok(if which.sampled {
        noise.exponentials(step, vocab, device)?
    } else {
        Tensor::ones((1, vocab), DType::F32, device)?
    })
}

/// The captured function: `n` generations' tokens `[n]` at their `(cache position, speech
/// position)` pairs `at` `[n, 2]`, through the backbone over `rows` (their `2n` cache rows) and
/// the speech head: logits `[2n, vocab]`.
fn batch_step(
    t3: &T3,
    pool: &Pool,
    rows: &KvCache,
    window: usize,
    tokens: &Tensor,
    at: &Tensor,
) -> candle_core::Result<Tensor> {
    let n = tokens.dim(0)?;
    let position = at
        .narrow(1, 0, 1)?
        .broadcast_as((n, 2))?
        .contiguous()?
        .reshape(2 * n)?;
    let speech_position = at.narrow(1, 1, 1)?.contiguous()?.reshape(n)?;
    let embed = t3.step_embed(tokens, &speech_position, 2)?;
    let step = StepAt {
        position: &position,
        window,
        ramp: &pool.ramp,
        neg_inf: &pool.neg_inf,
        zeros: &pool.zeros,
    };
    let hidden = t3.backbone().step_at(&embed, rows, &step)?;
    t3.speech_head().forward(&hidden)?.squeeze(1)
}
