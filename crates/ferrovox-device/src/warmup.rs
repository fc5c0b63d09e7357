//! Warm-up: run representative inputs before the first real request so it does not pay for
//! kernel loading, allocator growth and first-touch page faults; keep cold and warm latency.

use std::time::{Duration, Instant};

use candle_core::Device;
use serde::Serialize;

/// Latency of the first (cold) pass and of the later (warm) passes.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupReport {
    /// The first pass over the inputs.
    pub cold: Duration,
    /// Each later pass.
    pub warm: Vec<Duration>,
}

impl WarmupReport {
    /// Median warm pass, or the cold one when there were no warm passes.
    pub fn warm_median(&self) -> Duration {
        if self.warm.is_empty() {
            return self.cold;
        }
        let mut sorted = self.warm.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }

    /// How many times faster a warm pass is than the cold one.
    pub fn speedup(&self) -> f64 {
        self.cold.as_secs_f64() / self.warm_median().as_secs_f64().max(1e-12)
    }
}

/// Runs `run` over every input `runs` times (at least once), synchronizing the device after
/// each pass so GPU work is inside the timing.
pub fn warm_up<I, E: From<candle_core::Error>>(
    device: &Device,
    inputs: &[I],
    runs: usize,
    mut run: impl FnMut(&I) -> Result<(), E>,
) -> Result<WarmupReport, E> {
    let mut pass = || -> Result<Duration, E> {
        let start = Instant::now();
        for input in inputs {
            run(input)?;
        }
        device.synchronize()?;
        Ok(start.elapsed())
    };
    let cold = pass()?;
    let warm = (1..runs.max(1))
        .map(|_| pass())
        .collect::<Result<Vec<_>, E>>()?;
    Ok(WarmupReport { cold, warm })
}

/// Loads every GPU kernel module the models use, and initialises cuBLAS with one small
/// GEMM, so the first request does not pay for it. Candle loads each of its kernel modules on
/// first use: the driver reads (or JIT-compiles) the module's PTX then, tens of milliseconds
/// inside the first call otherwise. `FERROVOX_PRELOAD_KERNELS=0` leaves it to the first call.
/// Returns the time it took, `None` off CUDA or when switched off.
pub fn preload_kernels(device: &Device) -> candle_core::Result<Option<Duration>> {
    if !device.is_cuda()
        || matches!(
            std::env::var("FERROVOX_PRELOAD_KERNELS").as_deref(),
            Ok("0" | "false" | "off" | "no")
        )
    {
        return Ok(None);
    }
    let start = Instant::now();
    preload_cuda(device)?;
    Ok(Some(start.elapsed()))
}

#[cfg(feature = "cuda")]
fn preload_cuda(device: &Device) -> candle_core::Result<()> {
    use candle_core::cuda_backend::kernels as k;
    let Device::Cuda(dev) = device else {
        return Ok(());
    };
    // One function per module: loading it loads (and caches) the whole module. The quantized
    // and sort modules serve no model here.
    for (name, module) in [
        ("affine_f32", &k::AFFINE),
        ("badd_f32", &k::BINARY),
        ("cast_f32_f16", &k::CAST),
        ("im2col1d_f32", &k::CONV),
        ("fill_f32", &k::FILL),
        ("is_u32_f32", &k::INDEXING),
        ("fast_sum_f32", &k::REDUCE),
        ("where_u8_f32", &k::TERNARY),
        ("uexp_f32", &k::UNARY),
    ] {
        dev.get_or_load_func(name, module)?;
    }
    ferrovox_kernels::preload_cuda(device)?;
    let a = candle_core::Tensor::ones((64, 64), candle_core::DType::F32, device)?;
    a.matmul(&a)?;
    device.synchronize()
}

#[cfg(not(feature = "cuda"))]
fn preload_cuda(_: &Device) -> candle_core::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cold_and_warm_passes() {
        let mut calls = 0;
        let report = warm_up::<u32, candle_core::Error>(&Device::Cpu, &[1, 2], 4, |_| {
            calls += 1;
            if calls <= 2 {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 8);
        assert_eq!(report.warm.len(), 3);
        assert!(report.cold >= Duration::from_millis(40));
        assert!(report.speedup() > 2.0, "{report:?}");
    }

    #[test]
    fn errors_stop_the_warm_up() {
        let r = warm_up::<u32, candle_core::Error>(&Device::Cpu, &[1], 3, |_| {
            Err(candle_core::Error::Msg("boom".into()))
        });
        assert!(r.is_err());
    }
}
