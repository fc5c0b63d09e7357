//! The ferrovox device layer: which device a model runs on, and the tuning PyTorch services get
//! from flags (TF32, reduced-precision reductions, dtype policy, thread pools), memory figures,
//! a batch planner sized from free memory, warm-up, CUDA graphs and the doctor.
//!
//! The compute kernels live in `ferrovox-kernels`, below this crate: the kernels use nothing of
//! the device layer (they run on whatever rayon pool and device their caller hands them), while
//! the device layer uses them to preload their CUDA modules at start, so that the first request
//! pays no module load. Models reach the kernels through `ferrovox-layers`.
//!
//! ```no_run
//! use ferrovox_device::{DeviceRequest, Runtime};
//! let runtime = Runtime::init(&DeviceRequest::Auto, &Default::default())?;
//! println!("running on {} with {:?}", runtime.selection.kind, runtime.tuning.dtype);
//! # Ok::<(), ferrovox_device::Error>(())
//! ```

#[cfg(feature = "mimalloc")]
pub mod allocator;
mod backend;
mod capture_thread;
pub mod doctor;
mod error;
pub mod graph;
pub mod launch_gate;
pub mod memory;
pub mod planner;
mod report;
mod request;
mod select;
pub mod stages;
pub mod threads;
mod tuning;
pub mod warmup;

pub use backend::BackendKind;
pub use error::{Error, Result};
pub use graph::{GraphCache, GraphRun};
pub use launch_gate::{blocked, device_work, Serial};
pub use memory::{MemoryInfo, MemorySource};
pub use planner::{BatchPlanner, ItemCost, PlannerConfig};
pub use report::{CpuReport, DeviceReport, KernelUse};
pub use request::DeviceRequest;
pub use select::{select, Selection, Skipped};
pub use tuning::{DTypePolicy, Tuning, TuningConfig};
pub use warmup::{preload_kernels, warm_up, WarmupReport};

/// A selected device with the process tuning applied: what a model needs to start.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The device chosen and why the others were skipped.
    pub selection: Selection,
    /// The tuning in effect for this process.
    pub tuning: Tuning,
}

impl Runtime {
    /// Applies the process tuning (once; later calls report the same state) and selects a device.
    pub fn init(request: &DeviceRequest, config: &TuningConfig) -> Result<Self> {
        let threads = tuning::apply_process_tuning(config)?;
        let selection = select(request)?;
        let mut tuning = tuning::device_tuning(&selection, config, threads);
        tuning.kernels_preloaded_s =
            warmup::preload_kernels(&selection.device)?.map(|d| d.as_secs_f64());
        Ok(Self { selection, tuning })
    }

    /// The Candle device to build models on.
    pub fn device(&self) -> &candle_core::Device {
        &self.selection.device
    }

    /// The current memory figures for the selected device.
    pub fn memory(&self) -> Result<MemoryInfo> {
        memory::device_memory(&self.selection.device)
    }
}
