//! How T3 runs its decode steps. The dynamic path attends exactly the positions filled so far,
//! a shape that changes every step. The fixed path writes each step at a position read from
//! the device and attends a window of the cache rounded up to [`WINDOW`] positions under a
//! mask, so every step of a window has the same shapes and the same buffers: on CUDA it is
//! captured once per window as a graph and replayed (one launch per token instead of several
//! hundred), with the cache kept between generations so the graphs' buffers stay valid.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};
use ferrovox_device::GraphCache;

use super::llama::{KvCache, StepAt};
use super::model::T3;
use super::sampling::{Draw, ProcessorTables, Sampler, SamplingNoise};
use crate::Result;

/// Positions a fixed-shape window grows by: a graph per 256 positions keeps the masked part
/// of the attention under a quarter of it past the first window.
pub const WINDOW: usize = 256;

/// Graphs held at most: every window of the longest context T3 takes.
const MAX_GRAPHS: usize = 32;

/// Which decode path a generation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodePath {
    /// Fixed windows of [`WINDOW`] on CUDA (where graphs pay), dynamic elsewhere.
    #[default]
    Auto,
    /// Attend exactly the positions filled so far.
    Dynamic,
    /// Fixed shapes per window of this many positions, through CUDA graphs where the device
    /// has them.
    Fixed(usize),
}

impl DecodePath {
    /// The window `device` decodes in, or `None` for the dynamic path.
    pub fn window_on(self, device: &Device) -> Option<usize> {
        match self {
            Self::Auto => device.is_cuda().then_some(WINDOW),
            Self::Dynamic => None,
            Self::Fixed(w) => Some(w.max(1)),
        }
    }
}

/// The fixed path's cache and graphs, shared by clones of a model.
#[derive(Debug)]
pub struct FixedDecoder {
    slot: Mutex<Option<Slot>>,
    graphs: GraphCache,
}

/// A cache kept between generations, with the mask tables for its capacity.
#[derive(Debug)]
pub(crate) struct Slot {
    pub cache: KvCache,
    window: usize,
    ramp: Tensor,
    neg_inf: Tensor,
    zeros: Tensor,
    /// The sampler's constant tensors, which the graphs read.
    tables: ProcessorTables,
}

impl FixedDecoder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(None),
            graphs: GraphCache::with_limit("chatterbox.t3.decode", MAX_GRAPHS),
        })
    }

    /// The graphs held, for benches and logs.
    pub fn graphs(&self) -> &GraphCache {
        &self.graphs
    }

    /// The shared cache, reset and at least `positions` long for `rows` rows; `None` while
    /// another generation holds it (that one then takes the dynamic path).
    pub(crate) fn acquire(
        &self,
        t3: &T3,
        rows: usize,
        positions: usize,
        window: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<SlotGuard<'_>>> {
        let mut guard = match self.slot.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let fits = guard.as_ref().is_some_and(|s| {
            s.cache.rows() == rows
                && s.window == window
                && s.cache.capacity() >= positions
                && s.neg_inf.dtype() == dtype
                && s.zeros.device().same_device(device)
        });
        if !fits {
            // The graphs baked in the old buffers' addresses.
            *guard = None;
            self.graphs.clear();
            let capacity = positions.div_ceil(window) * window;
            let capacity = capacity.min(t3.max_positions()).max(positions);
            *guard = Some(Slot {
                cache: t3.cache(rows, capacity, dtype, device)?,
                window,
                ramp: Tensor::arange(0u32, capacity as u32, device)?
                    .to_dtype(DType::F32)?
                    .unsqueeze(0)?,
                neg_inf: Tensor::full(f32::NEG_INFINITY, (1, capacity), device)?.to_dtype(dtype)?,
                zeros: Tensor::zeros((1, capacity), dtype, device)?,
                tables: ProcessorTables::new(t3.config().speech_tokens_dict_size, device)?,
            });
        }
        if let Some(slot) = guard.as_mut() {
            slot.cache.reset();
        }
        Ok(Some(SlotGuard { guard, owner: self }))
    }
}

/// The shared cache, held for one generation.
pub(crate) struct SlotGuard<'a> {
    guard: MutexGuard<'a, Option<Slot>>,
    owner: &'a FixedDecoder,
}

impl SlotGuard<'_> {
    pub fn cache(&mut self) -> Result<&mut KvCache> {
        match self.guard.as_mut() {
            Some(slot) => Ok(&mut slot.cache),
            None => Err(crate::Error::Input(
                "the decode cache was not allocated".into(),
            )),
        }
    }

    /// The tables a sampler of this generation must use (the graphs read them).
    pub fn tables(&self) -> Result<&ProcessorTables> {
        match self.guard.as_ref() {
            Some(slot) => Ok(&slot.tables),
            None => Err(crate::Error::Input(
                "the decode cache was not allocated".into(),
            )),
        }
    }

    /// The token after `token` (`[1]` u32, at speech position `speech_position`): the step
    /// written at the cache's next position, then `sampler`'s processors and draw number
    /// `speech_position`, all in one graph. The cache's length advances and the sampler's
    /// history takes the new token.
    pub fn step_sampled(
        &mut self,
        t3: &T3,
        token: &Tensor,
        speech_position: usize,
        sampler: &mut Sampler,
        noise: &mut dyn SamplingNoise,
    ) -> Result<Tensor> {
        let Some(slot) = self.guard.as_mut() else {
            return Err(crate::Error::Input(
                "the decode cache was not allocated".into(),
            ));
        };
        let position = slot.cache.len();
        let window =
            ((position + 1).div_ceil(slot.window) * slot.window).min(slot.cache.capacity());
        let rows = slot.cache.rows();
        let which = sampler.processors();
        let at = Tensor::new(&[position as u32, speech_position as u32], token.device())?;
        // Greedy decoding reads no draws (its graphs are keyed apart): a small stand-in.
        let q = if !which.sampled {
            sampler.controls().clone()
        } else {
            noise.exponentials(speech_position, slot.tables.vocab(), token.device())?
        };
        let slot_ref: &Slot = slot;
        let variant = ((window * 4 + rows) << 5) | which.bits();
        let (mut ys, _) = self.owner.graphs.run_many(
            variant,
            &[token, &at, sampler.seen(), &q, sampler.controls()],
            |i| {
                let logits = fixed_step(t3, slot_ref, window, &i[0], &i[1])?;
                let draw = Draw {
                    controls: &i[4],
                    which,
                    tables: &slot_ref.tables,
                };
                let (token, seen) = draw.token(&logits.squeeze(1)?, &i[2], &i[3])?;
                Ok(vec![token, seen])
            },
        )?;
        slot.cache.advance(1)?;
        let seen = ys.pop().expect("two outputs");
        sampler.set_seen(seen);
        Ok(ys.pop().expect("two outputs"))
    }
}

/// The captured function: embeddings of the token at its speech position, the backbone's
/// step at the cache position, the speech head.
fn fixed_step(
    t3: &T3,
    slot: &Slot,
    window: usize,
    token: &Tensor,
    at: &Tensor,
) -> candle_core::Result<Tensor> {
    let position = at.narrow(0, 0, 1)?;
    let speech_position = at.narrow(0, 1, 1)?;
    let embed = t3.step_embed(token, &speech_position, slot.cache.rows())?;
    let step = StepAt {
        position: &position,
        window,
        ramp: &slot.ramp,
        neg_inf: &slot.neg_inf,
        zeros: &slot.zeros,
    };
    let hidden = t3.backbone().step_at(&embed, &slot.cache, &step)?;
    t3.speech_head().forward(&hidden)
}
