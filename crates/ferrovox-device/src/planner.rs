//! Batch sizes planned from the memory actually free, with out-of-memory back-off.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::{MemorySource, Result};

/// Memory a model needs for a batch: `fixed + per_item × batch` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ItemCost {
    /// Bytes needed whatever the batch size (activations shared across items, workspaces).
    pub fixed: u64,
    /// Bytes each further item adds.
    pub per_item: u64,
}

impl ItemCost {
    /// Derives the cost from two probe runs: peak bytes used at batch `small` and at `large`.
    pub fn from_probe(small: (usize, u64), large: (usize, u64)) -> Option<Self> {
        let ((b0, m0), (b1, m1)) = (small, large);
        if b1 <= b0 {
            return None;
        }
        // A noisy probe can come out with a smaller larger-batch figure; the item then costs at
        // least its share of the larger run.
        let per_item = (m1.saturating_sub(m0) / (b1 - b0) as u64)
            .max(m1 / (b1 as u64 * 4))
            .max(1);
        let fixed = m0.saturating_sub(per_item * b0 as u64);
        Some(Self { fixed, per_item })
    }

    /// Bytes for a batch of `batch` items.
    pub fn bytes(&self, batch: usize) -> u64 {
        self.fixed
            .saturating_add(self.per_item.saturating_mul(batch as u64))
    }
}

/// Planner settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PlannerConfig {
    /// Share of free memory a batch may use (default 0.9).
    pub margin: f64,
    /// Largest batch ever returned.
    pub max_batch: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            margin: 0.9,
            max_batch: 64,
        }
    }
}

/// Picks the largest batch that fits the free memory and remembers out-of-memory ceilings.
#[derive(Debug)]
pub struct BatchPlanner {
    config: PlannerConfig,
    cost: ItemCost,
    ceiling: AtomicUsize,
}

impl BatchPlanner {
    /// A planner for a model with the given per-batch cost.
    pub fn new(config: PlannerConfig, cost: ItemCost) -> Self {
        Self {
            ceiling: AtomicUsize::new(config.max_batch.max(1)),
            config,
            cost,
        }
    }

    /// The model's cost.
    pub fn cost(&self) -> ItemCost {
        self.cost
    }

    /// The largest batch allowed after out-of-memory back-offs.
    pub fn ceiling(&self) -> usize {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// The batch for the memory `source` reports now: at least 1, at most the ceiling.
    pub fn plan(&self, source: &dyn MemorySource) -> Result<usize> {
        let free = source.memory()?.free;
        Ok(self.plan_for_free(free))
    }

    /// The batch for `free` bytes.
    pub fn plan_for_free(&self, free: u64) -> usize {
        let budget = (free as f64 * self.config.margin) as u64;
        let fit = if budget <= self.cost.fixed {
            0
        } else {
            ((budget - self.cost.fixed) / self.cost.per_item.max(1)) as usize
        };
        fit.clamp(1, self.ceiling())
    }

    /// Records that `batch` ran out of memory; returns the batch to retry with, or `None` when
    /// even one item does not fit.
    pub fn record_oom(&self, batch: usize) -> Option<usize> {
        if batch <= 1 {
            self.ceiling.store(1, Ordering::Relaxed);
            return None;
        }
        let lower = (batch / 2).max(1);
        self.ceiling.fetch_min(lower, Ordering::Relaxed);
        Some(lower)
    }

    /// Runs `work` at the planned batch, halving on out-of-memory errors down to 1.
    /// `work(batch)` processes `batch` items; its error says whether it was out of memory.
    pub fn run_with_backoff<T, E: IsOutOfMemory>(
        &self,
        source: &dyn MemorySource,
        mut work: impl FnMut(usize) -> std::result::Result<T, E>,
    ) -> std::result::Result<(usize, T), E> {
        let mut batch = self.plan(source).unwrap_or(1);
        loop {
            match work(batch) {
                Ok(out) => return Ok((batch, out)),
                Err(e) if e.is_out_of_memory() => match self.record_oom(batch) {
                    Some(lower) => {
                        tracing::warn!(batch, lower, "out of memory; retrying at a smaller batch");
                        batch = lower;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }
}

/// Errors that can say they were an out-of-memory condition.
pub trait IsOutOfMemory {
    /// True when the backend ran out of memory.
    fn is_out_of_memory(&self) -> bool;
}

impl IsOutOfMemory for candle_core::Error {
    fn is_out_of_memory(&self) -> bool {
        is_oom_message(&self.to_string())
    }
}

/// Recognises the out-of-memory messages of CUDA, Metal and the host allocator.
pub fn is_oom_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("out_of_memory") || m.contains("cannot allocate")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryInfo;

    const GIB: u64 = 1 << 30;

    fn fake(free: u64) -> impl Fn() -> Result<MemoryInfo> {
        move || {
            Ok(MemoryInfo {
                total: 80 * GIB,
                free,
            })
        }
    }

    #[derive(Debug)]
    struct FakeErr(bool);
    impl IsOutOfMemory for FakeErr {
        fn is_out_of_memory(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn probe_slope_gives_fixed_and_per_item_cost() {
        let cost = ItemCost::from_probe((1, 3 * GIB), (5, 7 * GIB)).unwrap();
        assert_eq!(
            cost,
            ItemCost {
                fixed: 2 * GIB,
                per_item: GIB
            }
        );
        assert!(ItemCost::from_probe((4, GIB), (4, GIB)).is_none());
    }

    #[test]
    fn plans_the_largest_batch_within_free_times_margin() {
        let planner = BatchPlanner::new(
            PlannerConfig {
                margin: 0.9,
                max_batch: 64,
            },
            ItemCost {
                fixed: 2 * GIB,
                per_item: GIB,
            },
        );
        // 20 GiB free → budget 18 GiB → (18 - 2) / 1 = 16 items.
        let batch = planner.plan(&fake(20 * GIB)).unwrap();
        assert_eq!(batch, 16);
        assert!(planner.cost().bytes(batch) as f64 <= 20.0 * GIB as f64 * 0.9);
        assert!(planner.cost().bytes(batch + 1) as f64 > 20.0 * GIB as f64 * 0.9);
        // Nothing fits: still one item, the caller's back-off handles the rest.
        assert_eq!(planner.plan(&fake(GIB)).unwrap(), 1);
        // Huge memory: capped.
        assert_eq!(planner.plan(&fake(1000 * GIB)).unwrap(), 64);
    }

    #[test]
    fn out_of_memory_halves_and_remembers_the_ceiling() {
        let planner = BatchPlanner::new(
            PlannerConfig::default(),
            ItemCost {
                fixed: 0,
                per_item: GIB,
            },
        );
        let mut tried = Vec::new();
        // The fake backend fails above 5 items, whatever the free memory says.
        let (batch, out) = planner
            .run_with_backoff(&fake(40 * GIB), |b| {
                tried.push(b);
                if b > 5 {
                    Err(FakeErr(true))
                } else {
                    Ok(b * 10)
                }
            })
            .unwrap();
        assert_eq!(tried, [36, 18, 9, 4]);
        assert_eq!((batch, out), (4, 40));
        assert_eq!(planner.ceiling(), 4);
        assert_eq!(planner.plan(&fake(40 * GIB)).unwrap(), 4);
    }

    #[test]
    fn gives_up_below_one_and_passes_other_errors_through() {
        let planner = BatchPlanner::new(
            PlannerConfig::default(),
            ItemCost {
                fixed: 0,
                per_item: GIB,
            },
        );
        let mut calls = 0;
        let r = planner.run_with_backoff(&fake(2 * GIB), |_| -> std::result::Result<(), _> {
            calls += 1;
            Err(FakeErr(true))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert_eq!(planner.ceiling(), 1);
        let other = BatchPlanner::new(
            PlannerConfig::default(),
            ItemCost {
                fixed: 0,
                per_item: GIB,
            },
        );
        let mut calls = 0;
        let r = other.run_with_backoff(&fake(8 * GIB), |_| -> std::result::Result<(), _> {
            calls += 1;
            Err(FakeErr(false))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn recognises_backend_oom_messages() {
        assert!(is_oom_message(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
        ));
        assert!(is_oom_message(
            "memory allocation of 123 bytes failed: Cannot allocate memory"
        ));
        assert!(!is_oom_message("shape mismatch"));
    }
}
