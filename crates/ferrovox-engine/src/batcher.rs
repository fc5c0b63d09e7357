//! Dynamic batching: requests that arrive within a short window (or until the batch is full)
//! run as one model batch; each caller gets its own units back. A bounded queue refuses work
//! beyond its capacity instead of growing without limit.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{BatchKey, EngineError, SynthesisOptions, TtsModel, Unit};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most units in one model batch (the device layer's planned batch size).
    pub max_batch: usize,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_wait: Duration::from_millis(5),
            queue_capacity: 64,
        }
    }
}

/// Counters of what the batcher ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Model batches run.
    pub batches: usize,
    /// Units synthesized.
    pub units: usize,
    /// Largest batch run.
    pub largest_batch: usize,
    /// Batches that ran out of device memory and were run again in halves.
    pub oom_retries: usize,
    /// The most units a batch holds now: `max_batch`, or less once a batch ran out of memory
    /// (each such batch halves it, as [`ferrovox_device::BatchPlanner::record_oom`] does).
    pub ceiling: usize,
    /// Batches by size: entry `i` counts batches of size in `(2^(i-1), 2^i]` (1, 2, 3–4, 5–8,
    /// …, 33–64), the last also every larger one; the bounds are [`BATCH_SIZE_BOUNDS`].
    pub size_histogram: [u64; BATCH_SIZE_BOUNDS.len()],
}

/// Upper bounds of [`BatcherStats::size_histogram`]'s buckets.
pub const BATCH_SIZE_BOUNDS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

type Reply = mpsc::Sender<Result<Vec<Vec<f32>>, EngineError>>;

struct Job {
    units: Vec<Unit>,
    options: SynthesisOptions,
    reply: Reply,
}

/// A model behind a batching worker thread.
pub struct Batcher {
    sender: Option<SyncSender<Job>>,
    worker: Option<JoinHandle<()>>,
    stats: Arc<Mutex<BatcherStats>>,
    model: Arc<dyn TtsModel>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.model.id())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Batcher {
    /// Starts the worker for `model`.
    pub fn new(model: Arc<dyn TtsModel>, config: BatcherConfig) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Job>(config.queue_capacity.max(1));
        let stats = Arc::new(Mutex::new(BatcherStats {
            ceiling: config.max_batch.max(1),
            ..Default::default()
        }));
        let worker = {
            let (model, stats) = (model.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ferrovox-batcher".into())
                .spawn(move || {
                    while let Ok(first) = receiver.recv() {
                        let mut jobs = vec![first];
                        let mut units = jobs[0].units.len();
                        let deadline = Instant::now() + config.max_wait;
                        while units < config.max_batch {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match receiver.recv_timeout(left) {
                                Ok(job) => {
                                    units += job.units.len();
                                    jobs.push(job);
                                }
                                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                    break
                                }
                            }
                        }
                        run_jobs(model.as_ref(), jobs, &stats);
                    }
                })
                .expect("spawning the batcher thread")
        };
        Self {
            sender: Some(sender),
            worker: Some(worker),
            stats,
            model,
        }
    }

    /// The model served.
    pub fn model(&self) -> &Arc<dyn TtsModel> {
        &self.model
    }

    /// Synthesizes `units` in whatever batch they join; blocks until they are done. Options
    /// are checked before anything is queued; a full queue is refused at once with
    /// [`EngineError::Overloaded`].
    pub fn synthesize_units(
        &self,
        units: Vec<Unit>,
        options: SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        options.validate_common()?;
        self.model.validate(&options)?;
        let (reply, answer) = mpsc::channel();
        let sender = self.sender.as_ref().ok_or(EngineError::ShutDown)?;
        match sender.try_send(Job {
            units,
            options,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::ShutDown),
        }
        answer.recv().map_err(|_| EngineError::ShutDown)?
    }

    /// What has run so far.
    pub fn stats(&self) -> BatcherStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the queue lets the worker finish what it holds and exit.
        self.sender.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Runs the queued jobs: those whose options the model says agree ([`TtsModel::batch_key`])
/// share batches, each unit with its own seed. A batch that fails or panics is run again job
/// by job, so each caller gets its own error with its own kind (a bad request does not fail
/// its neighbours, an input error stays an input error, and the worker lives on).
fn run_jobs(model: &dyn TtsModel, jobs: Vec<Job>, stats: &Mutex<BatcherStats>) {
    let mut groups: Vec<(BatchKey, Vec<Job>)> = Vec::new();
    for job in jobs {
        let key = model.batch_key(&job.options);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    for (_, group) in groups {
        let units: Vec<Unit> = group.iter().flat_map(|j| j.units.iter().cloned()).collect();
        match run_units(model, &units, &group[0].options, stats) {
            Ok(audio) => {
                let mut rest = audio.into_iter();
                for job in group {
                    // A caller that gave up no longer listens; nothing to do then.
                    let _ = job
                        .reply
                        .send(Ok(rest.by_ref().take(job.units.len()).collect()));
                }
            }
            Err(e) if group.len() == 1 => {
                let _ = group[0].reply.send(Err(e));
            }
            Err(_) => {
                for job in group {
                    let answer = run_units(model, &job.units, &job.options, stats);
                    let _ = job.reply.send(answer);
                }
            }
        }
    }
}

/// `units` in batches of at most the current ceiling, counted in `stats`. A batch that runs
/// out of device memory is run again in halves, and the ceiling stays halved for later
/// batches; a single unit that does not fit fails with the device's error.
fn run_units(
    model: &dyn TtsModel,
    units: &[Unit],
    options: &SynthesisOptions,
    stats: &Mutex<BatcherStats>,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let lock = || stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut audio = Vec::with_capacity(units.len());
    let mut at = 0;
    while at < units.len() {
        let size = lock().ceiling.max(1).min(units.len() - at);
        let chunk = &units[at..at + size];
        let out = match crate::panic::guarded(model.id(), || model.synthesize_units(chunk, options))
        {
            Ok(out) => out,
            Err(e) if size > 1 && is_out_of_memory(&e) => {
                let mut s = lock();
                s.oom_retries += 1;
                s.ceiling = s.ceiling.min(size / 2).max(1);
                tracing::warn!(
                    model = model.id(),
                    batch = size,
                    ceiling = s.ceiling,
                    error = %e,
                    "out of memory; running the batch again in smaller ones"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut s = lock();
        s.batches += 1;
        s.units += size;
        s.largest_batch = s.largest_batch.max(size);
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| size <= b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len() - 1);
        s.size_histogram[bucket] += 1;
        drop(s);
        audio.extend(out);
        at += size;
    }
    Ok(audio)
}

/// An error the device returned for want of memory (not the caller's input, not a panic).
fn is_out_of_memory(e: &EngineError) -> bool {
    !e.is_input_error()
        && !matches!(e, EngineError::Panicked { .. })
        && ferrovox_device::planner::is_oom_message(&e.to_string())
}
