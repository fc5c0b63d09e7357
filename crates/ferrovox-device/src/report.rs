use serde::Serialize;

use crate::{BackendKind, MemoryInfo, Runtime, Skipped, Tuning};

/// Everything `ferrovox device` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// The backend chosen.
    pub backend: BackendKind,
    /// Its ordinal.
    pub ordinal: usize,
    /// GPU model or CPU model string.
    pub name: String,
    /// CUDA compute capability as `major.minor`.
    pub compute_capability: Option<String>,
    /// Backends passed over and why.
    pub skipped: Vec<Skipped>,
    /// Memory figures, or why they could not be read.
    pub memory: Result<MemoryInfo, String>,
    /// The tuning in effect.
    pub tuning: Tuning,
    /// Backends compiled into this build.
    pub compiled_backends: Vec<BackendKind>,
    /// The CPU's features as detected at run time, and which ferrovox's kernels use.
    pub cpu: CpuReport,
}

/// What the CPU can run and what runs on it.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Features this CPU reports at run time.
    pub detected: Vec<&'static str>,
    /// Detected features ferrovox's kernels run on, with what runs on them.
    pub used_by_kernels: Vec<KernelUse>,
    /// Features Candle's own CPU ops were compiled for (its `with_avx`, `with_f16c`, ...): a
    /// compile-time fact, independent of the CPU.
    pub candle_compiled_with: Vec<&'static str>,
}

/// Features one group of ferrovox's kernels runs on.
#[derive(Debug, Clone, Serialize)]
pub struct KernelUse {
    pub features: &'static str,
    pub kernels: &'static str,
}

impl DeviceReport {
    /// Gathers the report for a running device.
    pub fn new(runtime: &Runtime) -> Self {
        let sel = &runtime.selection;
        let candle_compiled_with = [
            (candle_core::utils::with_avx(), "avx"),
            (candle_core::utils::with_neon(), "neon"),
            (candle_core::utils::with_f16c(), "f16c"),
            (candle_core::utils::with_simd128(), "simd128"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        let features = ferrovox_kernels::cpu_features();
        let cpu = CpuReport {
            detected: features.detected,
            used_by_kernels: features
                .used
                .into_iter()
                .map(|(features, kernels)| KernelUse { features, kernels })
                .collect(),
            candle_compiled_with,
        };
        Self {
            backend: sel.kind,
            ordinal: sel.ordinal,
            name: sel.name.clone(),
            compute_capability: sel.compute_capability.map(|(a, b)| format!("{a}.{b}")),
            skipped: sel.skipped.clone(),
            memory: runtime.memory().map_err(|e| e.to_string()),
            tuning: runtime.tuning.clone(),
            compiled_backends: [BackendKind::Cuda, BackendKind::Metal, BackendKind::Cpu]
                .into_iter()
                .filter(|b| b.compiled_in())
                .collect(),
            cpu,
        }
    }
}

impl std::fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        writeln!(
            f,
            "device          {}:{} ({})",
            self.backend, self.ordinal, self.name
        )?;
        if let Some(cc) = &self.compute_capability {
            writeln!(f, "compute cap     {cc}")?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped         {}: {}", s.backend, s.reason)?;
        }
        match &self.memory {
            Ok(m) => writeln!(
                f,
                "memory          {:.2} GiB free of {:.2} GiB",
                gib(m.free),
                gib(m.total)
            )?,
            Err(e) => writeln!(f, "memory          unavailable: {e}")?,
        }
        let t = &self.tuning;
        writeln!(
            f,
            "dtype policy    {} ({})",
            t.dtype.compute.as_str(),
            t.dtype.reason
        )?;
        writeln!(f, "tf32            {}", on_off(t.tf32))?;
        writeln!(
            f,
            "reduced-prec    {}",
            on_off(t.reduced_precision_reductions)
        )?;
        writeln!(
            f,
            "threads         {} ({}; {} logical, {} physical, cgroup quota {})",
            t.threads.threads,
            t.threads.source,
            t.threads.logical_cpus,
            t.threads.physical_cores,
            t.threads
                .cgroup_cpu_limit
                .map_or("none".to_string(), |q| format!("{q:.2} CPUs"))
        )?;
        writeln!(
            f,
            "element-wise    {} thread(s) (Candle's own pool)",
            t.threads.elementwise_threads
        )?;
        if let Some(n) = t.metal_compute_per_buffer {
            writeln!(f, "metal           {n} compute ops per command buffer")?;
        }
        writeln!(
            f,
            "memory budget   {:.0}% of free",
            t.memory_fraction * 100.0
        )?;
        if let Some(s) = t.kernels_preloaded_s {
            writeln!(f, "kernels         preloaded in {:.0} ms", s * 1e3)?;
        }
        let names: Vec<String> = self
            .compiled_backends
            .iter()
            .map(|b| b.to_string())
            .collect();
        writeln!(f, "compiled        {}", names.join(", "))?;
        writeln!(f, "cpu features    {}", self.cpu.detected.join(", "))?;
        for u in &self.cpu.used_by_kernels {
            writeln!(f, "kernels use     {}: {}", u.features, u.kernels)?;
        }
        write!(
            f,
            "candle built    for {}",
            if self.cpu.candle_compiled_with.is_empty() {
                "no SIMD extension".to_string()
            } else {
                self.cpu.candle_compiled_with.join(", ")
            }
        )
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
