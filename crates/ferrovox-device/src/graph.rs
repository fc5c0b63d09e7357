//! CUDA graphs for the fixed-shape parts of a model, where a PyTorch service would reach for
//! `torch.compile`'s CUDA graphs: one capture per input shape, replayed afterwards with one
//! launch instead of one per op.
//!
//! A shape is captured the second time it is seen (a one-off shape is not worth a capture),
//! after an eager warm-up pass under Candle's parameter-cache guard: without it, ops that
//! upload small index arrays would record copies from host memory that is gone by the replay.
//! The captured function must take all its varying data from the input tensors: everything
//! else (weights, scalars, shapes) is baked into the graph. A capture that fails (an op that
//! synchronises, a cache miss, a driver error) leaves that shape on the eager path with the
//! reason logged; results never come from a graph that did not capture cleanly.
//!
//! Every capture runs on one long-lived thread (`capture_thread`): the uploads a graph copies
//! from at each replay live in the capturing thread's cache, and must outlive the thread
//! that asked for the capture.
//!
//! `FERROVOX_CUDA_GRAPHS=0` turns capture off; `FERROVOX_CUDA_GRAPHS_MAX` (default 4) bounds
//! how many shapes a cache holds, since each graph keeps its intermediate buffers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::{Result, Tensor};

/// A variant tag and the shapes of the inputs: what one graph was captured for.
type GraphKey = (usize, Vec<Vec<usize>>);

/// Graphs of one model part, keyed by the shapes of its inputs and a variant tag (for
/// host-side choices that change the ops recorded, such as whether a batch is padded).
pub struct GraphCache {
    name: &'static str,
    entries: Mutex<HashMap<GraphKey, Entry>>,
    limit: usize,
    enabled: AtomicBool,
}

enum Entry {
    /// Seen once, run eagerly.
    Seen,
    /// Being captured by another call: run eagerly meanwhile.
    Capturing,
    /// Captured: replay.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Graph(Box<Captured>),
    /// Capture failed or the cache is full: eager, for this reason.
    Eager(String),
}

/// A graph and the buffers it reads and writes.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Captured {
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    #[cfg(feature = "cuda")]
    graph: SendGraph,
}

/// A captured graph, or why the capture failed.
type Captures = std::result::Result<Box<Captured>, String>;

/// `CudaGraph` holds raw driver handles; every use of one goes through the cache's mutex.
#[cfg(feature = "cuda")]
struct SendGraph(candle_core::cuda_backend::cudarc::driver::CudaGraph);
#[cfg(feature = "cuda")]
unsafe impl Send for SendGraph {}

/// How a call ran, for benches and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphRun {
    /// Not on CUDA, or capture switched off.
    Eager,
    /// First sight of this shape.
    FirstSeen,
    /// Captured during this call (which ran eagerly as the warm-up).
    Captured,
    /// Replayed a captured graph.
    Replayed,
    /// This shape stays eager, for the reason given.
    Fallback(String),
}

impl std::fmt::Debug for GraphCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCache")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Whether capture is on by default (`FERROVOX_CUDA_GRAPHS`, default on).
fn enabled_by_env() -> bool {
    !matches!(
        std::env::var("FERROVOX_CUDA_GRAPHS").as_deref(),
        Ok("0" | "false" | "off" | "no")
    )
}

impl GraphCache {
    /// An empty cache for the model part `name` (used in log lines).
    pub fn new(name: &'static str) -> Self {
        let limit = std::env::var("FERROVOX_CUDA_GRAPHS_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        Self {
            name,
            entries: Mutex::new(HashMap::new()),
            limit,
            enabled: AtomicBool::new(enabled_by_env()),
        }
    }

    /// An empty cache holding at most `limit` graphs, for a part with more shapes than the
    /// default bound allows (`FERROVOX_CUDA_GRAPHS_MAX` still wins when set).
    pub fn with_limit(name: &'static str, limit: usize) -> Self {
        let mut cache = Self::new(name);
        if std::env::var_os("FERROVOX_CUDA_GRAPHS_MAX").is_none() {
            cache.limit = limit;
        }
        cache
    }

    /// Drops every graph and what was seen: for when buffers the graphs baked in (a cache
    /// they write) are reallocated.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Turns capture and replay on or off (off: every call runs eagerly; graphs already
    /// captured are kept for when it is turned back on).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// `f(inputs)`, through a graph when `inputs` are on CUDA and this shape was captured.
    pub fn run(
        &self,
        inputs: &[&Tensor],
        f: impl Fn(&[Tensor]) -> Result<Tensor> + Sync,
    ) -> Result<(Tensor, GraphRun)> {
        let (mut ys, run) = self.run_many(0, inputs, |i| Ok(vec![f(i)?]))?;
        Ok((ys.remove(0), run))
    }

    /// `f(inputs)` with several outputs, through a graph when `inputs` are on CUDA and this
    /// shape was captured under `variant`: calls whose ops differ for the same shapes (a
    /// host-side flag) must pass different variants.
    pub fn run_many(
        &self,
        variant: usize,
        inputs: &[&Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + Sync,
    ) -> Result<(Vec<Tensor>, GraphRun)> {
        let owned = || inputs.iter().map(|t| (*t).clone()).collect::<Vec<_>>();
        let on_cuda = inputs.first().is_some_and(|t| t.device().is_cuda());
        if !on_cuda || !self.enabled.load(Ordering::Relaxed) {
            return Ok((f(&owned())?, GraphRun::Eager));
        }
        let key = (
            variant,
            inputs.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>(),
        );
        // Every launch of this call is inside a section, so no other thread's capture
        // records it ([`crate::launch_gate`]).
        let _section = crate::launch_gate::enter();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let captured = entries
            .values()
            .filter(|e| matches!(e, Entry::Graph(_)))
            .count();
        match entries.get(&key) {
            // Eager runs release the lock first: other threads' calls need not queue behind them.
            None => {
                entries.insert(key, Entry::Seen);
                drop(entries);
                Ok((f(&owned())?, GraphRun::FirstSeen))
            }
            Some(Entry::Capturing) => {
                drop(entries);
                Ok((f(&owned())?, GraphRun::FirstSeen))
            }
            Some(Entry::Eager(reason)) => {
                let reason = reason.clone();
                drop(entries);
                Ok((f(&owned())?, GraphRun::Fallback(reason)))
            }
            Some(Entry::Graph(c)) => Ok((replay(c, inputs)?, GraphRun::Replayed)),
            Some(Entry::Seen) if captured >= self.limit => {
                let reason = format!(
                    "{} graphs held already (FERROVOX_CUDA_GRAPHS_MAX)",
                    self.limit
                );
                tracing::info!("{}: shape {key:?} stays eager: {reason}", self.name);
                entries.insert(key, Entry::Eager(reason.clone()));
                drop(entries);
                Ok((f(&owned())?, GraphRun::Fallback(reason)))
            }
            Some(Entry::Seen) => {
                // The lock is not held while the capture waits for other threads' launches
                // to end: they may need it.
                entries.insert(key.clone(), Entry::Capturing);
                drop(entries);
                // Captured on the capture thread, whose uploads outlive this caller's thread.
                let result = crate::launch_gate::blocked(|| {
                    crate::capture_thread::run(|| {
                        crate::launch_gate::exclusive(|| capture(inputs, &f))
                    })
                });
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                let (y, captured) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        entries.remove(&key);
                        return Err(e);
                    }
                };
                let (entry, run) = match captured {
                    Ok(graph) => {
                        tracing::debug!("{}: captured shape {key:?}", self.name);
                        (Entry::Graph(graph), GraphRun::Captured)
                    }
                    Err(reason) => {
                        tracing::warn!("{}: shape {key:?} stays eager: {reason}", self.name);
                        (Entry::Eager(reason.clone()), GraphRun::Fallback(reason))
                    }
                };
                entries.insert(key, entry);
                Ok((y, run))
            }
        }
    }

    /// Why shapes stay eager, one line per shape.
    pub fn fallbacks(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(key, e)| match e {
                Entry::Eager(reason) => Some(format!("{}: {key:?}: {reason}", self.name)),
                _ => None,
            })
            .collect()
    }

    /// How many shapes are held as graphs.
    pub fn graphs(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| matches!(e, Entry::Graph(_)))
            .count()
    }
}

#[cfg(not(feature = "cuda"))]
fn capture(
    inputs: &[&Tensor],
    f: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<(Vec<Tensor>, Captures)> {
    let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    Ok((f(&owned)?, Err("built without the cuda feature".into())))
}

#[cfg(not(feature = "cuda"))]
fn replay(_: &Captured, _: &[&Tensor]) -> Result<Vec<Tensor>> {
    candle_core::bail!("CUDA graphs need the cuda feature")
}

/// Warm-up, then capture into static buffers. Returns the warm-up's result (this call's
/// answer) and the graph, or why there is none.
#[cfg(feature = "cuda")]
fn capture(
    inputs: &[&Tensor],
    f: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<(Vec<Tensor>, Captures)> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let candle_core::Device::Cuda(dev) = inputs[0].device() else {
        candle_core::bail!("CUDA graphs need CUDA inputs");
    };
    let _cache = dev.enable_cuda_graph_htod_cache();
    // Fresh buffers the graph will read: the caller's tensors may be views or freed later.
    let statics: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.contiguous().and_then(|t| t.copy()))
        .collect::<Result<_>>()?;
    // Outputs are made contiguous here as they will be under capture, so the warm-up also
    // caches the parameters of those copies.
    let y = f(&statics)?
        .iter()
        .map(Tensor::contiguous)
        .collect::<Result<Vec<_>>>()?;
    let outputs = y
        .iter()
        .map(Tensor::zeros_like)
        .collect::<Result<Vec<_>>>()?;
    inputs[0].device().synchronize()?;
    let stream = dev.cuda_stream();
    if let Err(e) =
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
    {
        return Ok((y, Err(format!("begin capture: {e}"))));
    }
    // Temporaries of the captured pass are dropped inside the capture (free nodes); the
    // tensors made before it (statics, outputs, y) outlive it.
    let recorded = f(&statics).and_then(|zs| {
        if zs.len() != outputs.len() {
            candle_core::bail!(
                "{} outputs under capture, {} before",
                zs.len(),
                outputs.len()
            );
        }
        outputs
            .iter()
            .zip(&zs)
            .try_for_each(|(out, z)| out.slice_set(&z.contiguous()?, 0, 0))
    });
    let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    let captured = match (recorded, ended) {
        (Err(e), _) => Err(format!("an op failed under capture: {}", first_line(&e))),
        (Ok(()), Err(e)) => Err(format!("capture was invalidated: {e}")),
        (Ok(()), Ok(None)) => Err("the capture recorded nothing".into()),
        (Ok(()), Ok(Some(graph))) => match graph.upload() {
            Ok(()) => Ok(Box::new(Captured {
                inputs: statics,
                outputs,
                graph: SendGraph(graph),
            })),
            Err(e) => Err(format!("graph upload: {e}")),
        },
    };
    Ok((y, captured))
}

/// An error's first line: Candle appends a backtrace to some errors.
#[cfg(feature = "cuda")]
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Copies the inputs into the graph's buffers, launches it and copies the outputs out; the
/// device is synchronised before the lock is released, so no later replay (from any thread's
/// stream) overwrites buffers this one still reads.
#[cfg(feature = "cuda")]
fn replay(c: &Captured, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    for (dst, src) in c.inputs.iter().zip(inputs) {
        dst.slice_set(&src.contiguous()?, 0, 0)?;
    }
    c.graph.0.launch().map_err(candle_core::Error::wrap)?;
    let ys = c
        .outputs
        .iter()
        .map(Tensor::copy)
        .collect::<Result<Vec<_>>>()?;
    if let Some(y) = ys.first() {
        y.device().synchronize()?;
    }
    Ok(ys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_cuda_runs_eagerly() {
        let cache = GraphCache::new("test");
        let x = Tensor::new(&[1f32, 2., 3.], &candle_core::Device::Cpu).unwrap();
        for _ in 0..3 {
            let (y, run) = cache.run(&[&x], |i| &i[0] * 2.0).unwrap();
            assert_eq!(run, GraphRun::Eager);
            assert_eq!(y.to_vec1::<f32>().unwrap(), [2., 4., 6.]);
        }
        assert_eq!(cache.graphs(), 0);
    }
}
