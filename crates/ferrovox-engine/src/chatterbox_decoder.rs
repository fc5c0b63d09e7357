//! Continuous batching of a Chatterbox voice's T3 generations across requests: one thread owns
//! the decode batch ([`T3Batch`]), admits queued generations between steps while it has room,
//! and hands each request its tokens as they come. Requests run S3Gen on their own threads.
//! A full queue refuses at once; a request whose consumer went away leaves the batch at the
//! next step.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Device;
use ferrovox_chatterbox::t3::{BatchConfig, Event, Flow, Generated, Joined, Request, T3Batch, T3};

use crate::EngineError;

/// What the decoder thread tells a generation's owner.
#[derive(Debug)]
enum Reply {
    Event(Event),
    Failed(ferrovox_chatterbox::Error),
}

struct Join {
    request: Request,
    reply: Sender<Reply>,
}

/// Counters of the decoder, exported as metrics.
#[derive(Debug, Default)]
pub struct DecoderStats {
    /// Decode steps run.
    pub steps: AtomicU64,
    /// Tokens generated in those steps (one per running generation per step).
    pub tokens: AtomicU64,
    /// Generations decoding now.
    pub running: AtomicUsize,
    /// Most generations that decoded in one step.
    pub largest_batch: AtomicUsize,
}

/// The decode thread of one T3.
pub struct T3Decoder {
    queue: Option<SyncSender<Join>>,
    worker: Option<JoinHandle<()>>,
    stats: Arc<DecoderStats>,
    config: BatchConfig,
}

impl std::fmt::Debug for T3Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T3Decoder")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish()
    }
}

impl T3Decoder {
    /// Starts the thread for `t3` on `device`; at most `queue` generations wait for a slot.
    pub fn start(
        t3: &T3,
        config: BatchConfig,
        queue: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let batch = T3Batch::new(t3, config, device)?;
        let (sender, receiver) = mpsc::sync_channel::<Join>(queue.max(1));
        let stats = Arc::new(DecoderStats::default());
        let worker = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("ferrovox-t3-decoder".into())
                .spawn(move || decode_loop(batch, receiver, &stats))
                .map_err(|e| EngineError::Unsupported(format!("starting the T3 decoder: {e}")))?
        };
        Ok(Self {
            queue: Some(sender),
            worker: Some(worker),
            stats,
            config,
        })
    }

    /// The batch's shape.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// What it has run.
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// Queues `request`; its tokens come through the returned generation. A full queue is
    /// refused at once with [`EngineError::Overloaded`].
    pub fn submit(&self, request: Request) -> Result<Generation, EngineError> {
        let (reply, replies) = mpsc::channel();
        let queue = self.queue.as_ref().ok_or(EngineError::ShutDown)?;
        match queue.try_send(Join { request, reply }) {
            Ok(()) => Ok(Generation { replies }),
            Err(TrySendError::Full(_)) => Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShutDown),
        }
    }
}

impl Drop for T3Decoder {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish the generations it holds and exit.
        self.queue.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A queued or running generation; dropping it makes the generation leave the batch.
#[derive(Debug)]
pub struct Generation {
    replies: Receiver<Reply>,
}

impl Generation {
    /// Hands the tokens to `on_tokens` as they come (as many as have arrived at once) until
    /// the generation ends or `on_tokens` cancels; the whole generation.
    pub fn run(
        self,
        on_tokens: &mut dyn FnMut(&[u32]) -> ferrovox_chatterbox::Result<Flow>,
    ) -> ferrovox_chatterbox::Result<Generated> {
        let mut tokens = Vec::new();
        let mut fresh = Vec::new();
        loop {
            let first = self.replies.recv().map_err(|_| stopped())?;
            let mut end = None;
            for reply in
                std::iter::once(first).chain(std::iter::from_fn(|| self.replies.try_recv().ok()))
            {
                match reply {
                    Reply::Event(Event::Token(t)) => fresh.push(t),
                    Reply::Event(e) => {
                        end = Some(e);
                        break;
                    }
                    Reply::Failed(e) => return Err(e),
                }
            }
            if !fresh.is_empty() {
                tokens.extend_from_slice(&fresh);
                let flow = on_tokens(&fresh)?;
                fresh.clear();
                if flow == Flow::Cancel {
                    return Ok(Generated {
                        tokens,
                        stopped: false,
                    });
                }
            }
            if let Some(e) = end {
                return Ok(Generated {
                    tokens,
                    stopped: e == Event::Stopped,
                });
            }
        }
    }
}

/// `f`, a panic inside it turned into an error: the thread goes on serving the other
/// requests.
fn guarded<T>(
    f: impl FnOnce() -> ferrovox_chatterbox::Result<T>,
) -> ferrovox_chatterbox::Result<T> {
    crate::panic::caught(f).unwrap_or_else(|what| {
        Err(ferrovox_chatterbox::Error::Candle(candle_core::Error::Msg(
            format!("T3 decoding panicked: {what}"),
        )))
    })
}

fn stopped() -> ferrovox_chatterbox::Error {
    ferrovox_chatterbox::Error::Candle(candle_core::Error::Msg(
        "the T3 decoder stopped before the generation ended".into(),
    ))
}

/// The decoder thread: admit, step, hand out, until the queue closes and the last generation
/// ends.
fn decode_loop(mut batch: T3Batch, queue: Receiver<Join>, stats: &DecoderStats) {
    let mut owners: HashMap<usize, Sender<Reply>> = HashMap::new();
    // A generation that found every slot taken, first in line for the next free one.
    let mut held: VecDeque<Join> = VecDeque::new();
    let mut open = true;
    loop {
        if batch.running() == 0 && held.is_empty() {
            if !open {
                return;
            }
            match queue.recv() {
                Ok(join) => held.push_back(join),
                Err(_) => return,
            }
        }
        // Admit while there is room; what waits past that stays in the bounded queue.
        loop {
            let join = match held.pop_front() {
                Some(j) => j,
                None if open => match queue.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
                None => break,
            };
            match guarded(|| batch.join(join.request)) {
                Ok(Joined::Admitted { slot, events }) => {
                    let heard = events
                        .into_iter()
                        .all(|e| join.reply.send(Reply::Event(e)).is_ok());
                    if let Some(slot) = slot {
                        if heard {
                            owners.insert(slot, join.reply);
                        } else {
                            batch.leave(slot);
                        }
                    }
                }
                Ok(Joined::NoRoom(request)) => {
                    held.push_front(Join {
                        request,
                        reply: join.reply,
                    });
                    break;
                }
                Err(e) => {
                    let _ = join.reply.send(Reply::Failed(e));
                }
            }
        }
        let running = batch.running();
        stats.running.store(running, Ordering::Relaxed);
        if running == 0 {
            continue;
        }
        match guarded(|| batch.step()) {
            Ok(events) => {
                stats.steps.fetch_add(1, Ordering::Relaxed);
                stats.tokens.fetch_add(running as u64, Ordering::Relaxed);
                stats.largest_batch.fetch_max(running, Ordering::Relaxed);
                for (slot, event) in events {
                    let Some(owner) = owners.get(&slot) else {
                        continue;
                    };
                    let gone = owner.send(Reply::Event(event)).is_err();
                    if event.ends() {
                        owners.remove(&slot);
                    } else if gone {
                        // The consumer went away: no more work for it.
                        batch.leave(slot);
                        owners.remove(&slot);
                    }
                }
                stats.running.store(batch.running(), Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, running, "T3 decode step failed; its generations end with the error");
                for (_, owner) in owners.drain() {
                    let _ = owner.send(Reply::Failed(ferrovox_chatterbox::Error::Candle(
                        candle_core::Error::Msg(format!("T3 decode step failed: {e}")),
                    )));
                }
                batch.clear();
                stats.running.store(0, Ordering::Relaxed);
            }
        }
    }
}
