//! No upstream counterpart. S3Gen's flow for concurrent utterances as one batch: each stream's
//! push (and each one-shot decode) hands its flow run to a shared [`FlowBatcher`], and the runs
//! waiting together go through [`S3Gen::mel_batch`] (the CFM solve as one masked batch) instead
//! of one after another.
//!
//! There is no batching thread: the first caller to find no run in progress leads, runs every
//! waiting job (its own among them, up to the batch limit) and hands out the results; callers
//! arriving meanwhile wait and the next of them leads the next batch. Streams register while
//! they last ([`FlowBatcher::stream_ticket`]): streams fed by one T3 decode batch push in the
//! same step but reach the batcher microseconds apart, so a leader waits for the registered
//! streams that have no job yet, for at most a tenth of the last run's time (and `gather`).
//! A caller alone runs its own job at once through [`S3Gen::mel`], so a lone stream is exactly
//! what it is without a batcher. A batched item equals its run alone up to f32 summation order (the padded frames
//! are masked out of every valid one; `tests/flow_batch.rs` measures it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use ferrovox_device::blocked;

use crate::s3gen::{S3Gen, SpeakerReference, UtteranceNoise};
use crate::{Error, Result};

/// How a [`FlowBatcher`] forms its batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowBatchConfig {
    /// Most utterances in one run (1: no batching).
    pub max_items: usize,
    /// The longest a leader waits for registered streams without a job yet (while its batch
    /// is not full).
    pub gather: Duration,
    /// The wait as a share of the last run's time (the first run waits up to `gather`).
    pub gather_share: f64,
}

impl FlowBatchConfig {
    /// Batches of up to `max_items`; a leader waits for the other registered streams at most
    /// a tenth of a run, and 2 s.
    pub fn new(max_items: usize) -> Self {
        Self {
            max_items: max_items.max(1),
            gather: Duration::from_secs(2),
            gather_share: 0.1,
        }
    }
}

/// Counters of a batcher, exported as metrics.
#[derive(Debug, Default)]
pub struct FlowBatchStats {
    /// Flow runs (a lone job or a batch).
    pub runs: AtomicU64,
    /// Jobs those runs carried.
    pub items: AtomicU64,
    /// Runs of more than one job.
    pub batched_runs: AtomicU64,
    /// Most jobs in one run.
    pub largest: AtomicUsize,
    /// Batches that failed as a whole and were run again job by job.
    pub split_retries: AtomicU64,
}

struct Job {
    id: u64,
    tokens: Vec<u32>,
    reference: SpeakerReference,
    noise: UtteranceNoise,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    pending: VecDeque<Job>,
    done: HashMap<u64, Result<Tensor>>,
    leading: bool,
    /// Streams registered now ([`StreamTicket`]).
    streams: usize,
    /// How long the last run took.
    last_run: Option<Duration>,
}

/// A stream's registration with a [`FlowBatcher`]: while it lives, leaders wait (briefly) for
/// its next job. Dropped when the stream ends.
#[derive(Debug)]
pub struct StreamTicket<'a> {
    batcher: &'a FlowBatcher,
}

impl Drop for StreamTicket<'_> {
    fn drop(&mut self) {
        let mut q = self.batcher.lock();
        q.streams -= 1;
        self.batcher.changed.notify_all();
    }
}

/// Batches the flow runs of one [`S3Gen`]'s concurrent utterances (see the module docs).
#[derive(Debug)]
pub struct FlowBatcher {
    config: FlowBatchConfig,
    /// The limit in force ([`Self::set_max_items`]); starts at `config.max_items`.
    max_items: AtomicUsize,
    queue: Mutex<Queue>,
    changed: Condvar,
    stats: FlowBatchStats,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("pending", &self.pending.len())
            .field("done", &self.done.len())
            .field("leading", &self.leading)
            .finish()
    }
}

impl FlowBatcher {
    pub fn new(config: FlowBatchConfig) -> Self {
        Self {
            max_items: AtomicUsize::new(config.max_items.max(1)),
            config,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            stats: FlowBatchStats::default(),
        }
    }

    pub fn config(&self) -> &FlowBatchConfig {
        &self.config
    }

    /// Most jobs in one run from now on (1: every job runs alone, one after another).
    pub fn max_items(&self) -> usize {
        self.max_items.load(Ordering::Relaxed)
    }

    /// Changes the batch limit while serving (benches compare limits on one loaded model).
    pub fn set_max_items(&self, n: usize) {
        self.max_items.store(n.max(1), Ordering::Relaxed);
    }

    pub fn stats(&self) -> &FlowBatchStats {
        &self.stats
    }

    /// Registers a stream: leaders wait for its jobs (see the module docs) until the ticket
    /// is dropped.
    pub fn stream_ticket(&self) -> StreamTicket<'_> {
        self.lock().streams += 1;
        StreamTicket { batcher: self }
    }

    /// The target mel `[1, 80, frames]` of `tokens` in `reference`'s voice, the CFM solve
    /// starting from `noise`'s draws for frames `0..`: [`S3Gen::mel`]'s result, run alone or
    /// batched with the jobs of other threads. Every job given to one batcher must be for the
    /// same `model`.
    pub fn mel(
        &self,
        model: &S3Gen,
        tokens: &[u32],
        reference: &SpeakerReference,
        noise: &UtteranceNoise,
    ) -> Result<Tensor> {
        let id = {
            let mut q = self.lock();
            let id = q.next_id;
            q.next_id += 1;
            q.pending.push_back(Job {
                id,
                tokens: tokens.to_vec(),
                reference: reference.clone(),
                noise: noise.clone(),
            });
            self.changed.notify_all();
            id
        };
        loop {
            let mut q = self.lock();
            loop {
                if let Some(result) = q.done.remove(&id) {
                    return result;
                }
                if !q.leading {
                    break;
                }
                // Waiting on the leader, whose run may need to capture a graph.
                q = blocked(|| self.changed.wait(q).unwrap_or_else(|e| e.into_inner()));
            }
            q.leading = true;
            let jobs = self.gather(q);
            let began = Instant::now();
            let results = self.run_guarded(model, &jobs);
            let mut q = self.lock();
            q.last_run = Some(began.elapsed());
            for (job, result) in jobs.iter().zip(results) {
                q.done.insert(job.id, result);
            }
            q.leading = false;
            self.changed.notify_all();
        }
    }

    /// Takes the batch to run: the waiting jobs in arrival order, up to the limit, after
    /// waiting (see the module docs) for registered streams that have no job yet.
    fn gather(&self, mut q: MutexGuard<'_, Queue>) -> Vec<Job> {
        let max = self.max_items();
        let wait = q.last_run.map_or(self.config.gather, |last| {
            last.mul_f64(self.config.gather_share)
                .min(self.config.gather)
        });
        let deadline = Instant::now() + wait;
        while q.pending.len() < max.min(q.streams) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = blocked(|| {
                self.changed
                    .wait_timeout(q, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            });
        }
        let n = q.pending.len().min(max);
        q.pending.drain(..n).collect()
    }

    /// [`Self::run`], a panic inside it becoming every job's error instead of leaving the
    /// waiting threads without a leader.
    fn run_guarded(&self, model: &S3Gen, jobs: &[Job]) -> Vec<Result<Tensor>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(model, jobs)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                jobs.iter()
                    .map(|_| {
                        Err(Error::Candle(candle_core::Error::Msg(format!(
                            "S3Gen's flow panicked: {what}"
                        ))))
                    })
                    .collect()
            })
    }

    fn run(&self, model: &S3Gen, jobs: &[Job]) -> Vec<Result<Tensor>> {
        let s = &self.stats;
        s.runs.fetch_add(1, Ordering::Relaxed);
        s.items.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        s.largest.fetch_max(jobs.len(), Ordering::Relaxed);
        if let [job] = jobs {
            return vec![alone(model, job)];
        }
        s.batched_runs.fetch_add(1, Ordering::Relaxed);
        let items: Vec<(&[u32], &SpeakerReference)> = jobs
            .iter()
            .map(|j| (j.tokens.as_slice(), &j.reference))
            .collect();
        let noises: Vec<UtteranceNoise> = jobs.iter().map(|j| j.noise.clone()).collect();
        match model.mel_batch(&items, &noises) {
            Ok(mels) => mels.into_iter().map(Ok).collect(),
            // One job's bad input or a batch too large for the device must not fail the
            // others: each runs alone and gets its own result.
            Err(e) => {
                tracing::warn!(items = jobs.len(), error = %e, "S3Gen flow batch failed; running its jobs one by one");
                s.split_retries.fetch_add(1, Ordering::Relaxed);
                jobs.iter().map(|job| alone(model, job)).collect()
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One job through [`S3Gen::mel_drawn`], as a stream without a batcher runs it.
fn alone(model: &S3Gen, job: &Job) -> Result<Tensor> {
    model.mel_drawn(&job.tokens, &job.reference, &job.noise)
}
