//! Process and device tuning: the knobs PyTorch services set with flags, applied once,
//! each one reported and overridable from the environment.

use std::sync::OnceLock;

use candle_core::DType;
use serde::Serialize;

use crate::threads::{self, ThreadPlan};
use crate::{BackendKind, Error, Result, Selection};

/// Tuning requested by the caller; `None` fields take the environment, then the default.
#[derive(Debug, Clone, Default)]
pub struct TuningConfig {
    /// TF32 for f32 GEMMs on CUDA (`FERROVOX_TF32`); default on for compute capability 8.0+.
    pub tf32: Option<bool>,
    /// Reduced-precision reductions for bf16/f16 GEMMs (`FERROVOX_REDUCED_PRECISION_REDUCTIONS`);
    /// default on, as in PyTorch.
    pub reduced_precision_reductions: Option<bool>,
    /// Forces the compute dtype (`FERROVOX_DTYPE` = f32 | f16 | bf16).
    pub dtype: Option<DType>,
    /// CPU pool size (`FERROVOX_NUM_THREADS`, then `RAYON_NUM_THREADS` take precedence).
    pub num_threads: Option<usize>,
    /// Metal command-buffer batching (`FERROVOX_METAL_COMPUTE_PER_BUFFER`).
    pub metal_compute_per_buffer: Option<usize>,
    /// Share of GPU memory the planner may use (`FERROVOX_MEMORY_FRACTION`), like PyTorch's
    /// `PYTORCH_MPS_HIGH_WATERMARK_RATIO` / `set_per_process_memory_fraction`.
    pub memory_fraction: Option<f64>,
}

impl TuningConfig {
    /// Reads every knob from its environment variable; unset ones stay `None`.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            tf32: env_bool("FERROVOX_TF32")?,
            reduced_precision_reductions: env_bool("FERROVOX_REDUCED_PRECISION_REDUCTIONS")?,
            dtype: env_parse("FERROVOX_DTYPE", parse_dtype)?,
            num_threads: None,
            metal_compute_per_buffer: env_parse("FERROVOX_METAL_COMPUTE_PER_BUFFER", |s| {
                s.parse::<usize>().ok().filter(|n| *n > 0)
            })?,
            memory_fraction: env_parse("FERROVOX_MEMORY_FRACTION", |s| {
                s.parse::<f64>().ok().filter(|f| *f > 0.0 && *f <= 1.0)
            })?,
        })
    }

    /// `self` with unset fields filled from `other`.
    pub fn or(self, other: Self) -> Self {
        Self {
            tf32: self.tf32.or(other.tf32),
            reduced_precision_reductions: self
                .reduced_precision_reductions
                .or(other.reduced_precision_reductions),
            dtype: self.dtype.or(other.dtype),
            num_threads: self.num_threads.or(other.num_threads),
            metal_compute_per_buffer: self
                .metal_compute_per_buffer
                .or(other.metal_compute_per_buffer),
            memory_fraction: self.memory_fraction.or(other.memory_fraction),
        }
    }
}

fn parse_dtype(s: &str) -> Option<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Some(DType::F32),
        "f16" | "float16" | "half" => Some(DType::F16),
        "bf16" | "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

fn env_bool(name: &'static str) -> Result<Option<bool>> {
    env_parse(name, |s| match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    })
}

fn env_parse<T>(name: &'static str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            parse(v.trim())
                .map(Some)
                .ok_or_else(|| Error::InvalidSetting {
                    name,
                    value: v.clone(),
                    reason: "unrecognised value".to_string(),
                })
        }
        _ => Ok(None),
    }
}

/// The dtype models compute in on this device, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DTypePolicy {
    /// The dtype for inference math.
    #[serde(serialize_with = "ser_dtype")]
    pub compute: DType,
    /// Why this dtype was chosen.
    pub reason: String,
}

impl DTypePolicy {
    /// bf16 on CUDA sm80+, f16 on older CUDA and Metal, f32 on CPU; `forced` overrides.
    pub fn for_device(
        kind: BackendKind,
        compute_capability: Option<(i32, i32)>,
        forced: Option<DType>,
    ) -> Self {
        if let Some(dtype) = forced {
            return Self {
                compute: dtype,
                reason: "set by FERROVOX_DTYPE / config".to_string(),
            };
        }
        match (kind, compute_capability) {
            (BackendKind::Cuda, Some((major, minor))) if major >= 8 => Self {
                compute: DType::BF16,
                reason: format!("compute capability {major}.{minor} has native bf16"),
            },
            (BackendKind::Cuda, cc) => Self {
                compute: DType::F16,
                reason: format!("compute capability {cc:?} lacks fast bf16"),
            },
            (BackendKind::Metal, _) => Self {
                compute: DType::F16,
                reason: "Metal GPUs run f16 natively (unverified in CI)".to_string(),
            },
            (BackendKind::Cpu, _) => Self {
                compute: DType::F32,
                reason: "CPU kernels are fastest and exact in f32".to_string(),
            },
        }
    }
}

fn ser_dtype<S: serde::Serializer>(dtype: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(dtype.as_str())
}

/// The tuning in effect, as reported by `ferrovox device`.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    /// TF32 for f32 GEMMs (CUDA only; false elsewhere).
    pub tf32: bool,
    /// Reduced-precision reductions for bf16/f16 GEMMs (CUDA only).
    pub reduced_precision_reductions: bool,
    /// The dtype policy models consult.
    pub dtype: DTypePolicy,
    /// The CPU pool.
    pub threads: ThreadPlan,
    /// Metal command-buffer batching, when on Metal.
    pub metal_compute_per_buffer: Option<usize>,
    /// Share of device memory the planner may use.
    pub memory_fraction: f64,
    /// Seconds spent loading GPU kernel modules at start-up (CUDA; `FERROVOX_PRELOAD_KERNELS`).
    pub kernels_preloaded_s: Option<f64>,
}

static PROCESS: OnceLock<ThreadPlan> = OnceLock::new();

/// Sizes the rayon global pool and makes Candle's GEMM threading agree with it. Runs once per
/// process; later calls return the first plan.
pub(crate) fn apply_process_tuning(config: &TuningConfig) -> Result<ThreadPlan> {
    if let Some(plan) = PROCESS.get() {
        return Ok(plan.clone());
    }
    let plan = threads::plan(config.num_threads)?;
    // Candle's CPU matmul sizes its gemm parallelism from RAYON_NUM_THREADS (else the physical
    // core count), independently of rayon's pool, which defaults to logical CPUs. Pinning the
    // variable before any pool exists keeps the two equal.
    std::env::set_var("RAYON_NUM_THREADS", plan.threads.to_string());
    // Read once, when Candle first runs an element-wise op: see `ThreadPlan::elementwise_threads`.
    std::env::set_var("CANDLE_NUM_THREADS", plan.elementwise_threads.to_string());
    if let Some(n) = config.metal_compute_per_buffer {
        std::env::set_var("CANDLE_METAL_COMPUTE_PER_BUFFER", n.to_string());
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads)
        .thread_name(|i| format!("ferrovox-cpu-{i}"))
        .build_global();
    if built.is_err() && rayon::current_num_threads() != plan.threads {
        return Err(Error::ThreadPool(format!(
            "the rayon global pool already runs {} threads (wanted {}); initialise ferrovox before other rayon users",
            rayon::current_num_threads(),
            plan.threads
        )));
    }
    Ok(PROCESS.get_or_init(|| plan).clone())
}

/// Applies the device switches for `selection` and returns the full report.
pub(crate) fn device_tuning(
    selection: &Selection,
    config: &TuningConfig,
    threads: ThreadPlan,
) -> Tuning {
    let sm80 = matches!(selection.compute_capability, Some((major, _)) if major >= 8);
    let on_cuda = selection.kind == BackendKind::Cuda;
    let tf32 = on_cuda && config.tf32.unwrap_or(sm80);
    let reduced = on_cuda && config.reduced_precision_reductions.unwrap_or(true);
    if on_cuda {
        candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        candle_core::cuda::set_gemm_reduced_precision_bf16(reduced);
        candle_core::cuda::set_gemm_reduced_precision_f16(reduced);
    }
    let metal_compute_per_buffer = (selection.kind == BackendKind::Metal).then(|| {
        std::env::var("CANDLE_METAL_COMPUTE_PER_BUFFER")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50)
    });
    Tuning {
        tf32,
        reduced_precision_reductions: reduced,
        dtype: DTypePolicy::for_device(selection.kind, selection.compute_capability, config.dtype),
        threads,
        metal_compute_per_buffer,
        memory_fraction: config.memory_fraction.unwrap_or(0.9),
        kernels_preloaded_s: None,
    }
}

/// Whether Candle's f32 GEMMs currently use TF32 (reads Candle's own switch).
pub fn tf32_enabled() -> bool {
    candle_core::cuda::gemm_reduced_precision_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_policy_follows_the_hardware() {
        let p = |k, cc| DTypePolicy::for_device(k, cc, None).compute;
        assert_eq!(p(BackendKind::Cuda, Some((9, 0))), DType::BF16);
        assert_eq!(p(BackendKind::Cuda, Some((8, 0))), DType::BF16);
        assert_eq!(p(BackendKind::Cuda, Some((7, 5))), DType::F16);
        assert_eq!(p(BackendKind::Cpu, None), DType::F32);
        let forced = DTypePolicy::for_device(BackendKind::Cuda, Some((9, 0)), Some(DType::F32));
        assert_eq!(forced.compute, DType::F32);
    }

    #[test]
    fn dtype_names() {
        assert_eq!(parse_dtype("BF16"), Some(DType::BF16));
        assert_eq!(parse_dtype("float32"), Some(DType::F32));
        assert_eq!(parse_dtype("int8"), None);
    }

    #[test]
    fn process_tuning_is_idempotent_and_candle_agrees() {
        let a = apply_process_tuning(&TuningConfig::default()).unwrap();
        let b = apply_process_tuning(&TuningConfig::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(rayon::current_num_threads(), a.threads);
        assert_eq!(candle_core::utils::get_num_threads(), a.threads);
    }
}
