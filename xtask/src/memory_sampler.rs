//! Peak device memory of a bench phase, sampled from the driver (Candle keeps no allocator
//! statistics of its own).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;

/// Samples the device's used memory every 10 ms until `peak_above_mib` (or drop); the peak is
/// reported above the level when sampling started (on CUDA: above the context already held).
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    start: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    pub fn start(device: &Device) -> Option<Self> {
        let used = |d: &Device| {
            ferrovox_device::memory::device_memory(d)
                .ok()
                .map(|m| m.total.saturating_sub(m.free))
        };
        let start = used(device)?;
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(start)),
        );
        let (d, s, p) = (device.clone(), stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(u) = used(&d) {
                    p.fetch_max(u, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Some(Self {
            stop,
            peak,
            start,
            thread: Some(thread),
        })
    }

    /// The peak so far, above the starting level, in bytes; sampling goes on.
    pub fn peak_so_far(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).saturating_sub(self.start)
    }

    pub fn peak_above_mib(mut self) -> f64 {
        self.halt();
        self.peak.load(Ordering::Relaxed).saturating_sub(self.start) as f64 / (1 << 20) as f64
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.halt();
    }
}
