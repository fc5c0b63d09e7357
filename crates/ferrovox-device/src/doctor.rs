//! `ferrovox doctor`: checks that execute something and verify the result, so a report of
//! "TF32 on" or "8 threads" is a measured fact and not a flag echoed back.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use crate::planner::{BatchPlanner, IsOutOfMemory, ItemCost, PlannerConfig};
use crate::{warm_up, BackendKind, MemoryInfo, Runtime};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Verified.
    Pass,
    /// Verified wrong.
    Fail,
    /// Not applicable here; the detail says why.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was measured, or why it was skipped.
    pub detail: String,
}

/// Runs every check on `runtime`'s device.
pub fn run_all(runtime: &Runtime) -> Vec<Check> {
    type CheckFn = fn(&Runtime) -> candle_core::Result<(Status, String)>;
    let checks: [(&'static str, CheckFn); 8] = [
        ("device", check_device),
        ("tf32", check_tf32),
        ("reduced-precision", check_reduced_precision),
        ("dtype-policy", check_dtype_policy),
        ("threads", check_threads),
        ("memory", check_memory),
        ("warm-up", check_warm_up),
        ("planner", check_planner),
    ];
    checks
        .into_iter()
        .map(|(name, f)| match f(runtime) {
            Ok((status, detail)) => Check {
                name,
                status,
                detail,
            },
            Err(e) => Check {
                name,
                status: Status::Fail,
                detail: format!("error: {e}"),
            },
        })
        .collect()
}

/// Largest absolute difference relative to the largest reference magnitude.
fn rel_error(out: &Tensor, reference: &Tensor) -> candle_core::Result<f64> {
    let out = out.to_dtype(DType::F64)?.to_device(&Device::Cpu)?;
    let reference = reference.to_dtype(DType::F64)?.to_device(&Device::Cpu)?;
    let diff = (out - &reference)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

fn randn(shape: (usize, usize), device: &Device) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?.to_device(device)
}

/// Median wall time of `reps` calls of `f`, synchronizing the device after each.
pub fn time_median(
    device: &Device,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<Duration> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn check_device(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let dev = rt.device();
    let a = randn((96, 80), dev)?;
    let b = randn((80, 64), dev)?;
    let out = a.matmul(&b)?;
    let reference = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .matmul(&b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?)?;
    let err = rel_error(&out, &reference)?;
    let tol = if rt.tuning.tf32 { 5e-3 } else { 1e-5 };
    let status = if err <= tol {
        Status::Pass
    } else {
        Status::Fail
    };
    Ok((
        status,
        format!(
            "{} ran a 96x80x64 matmul; relative error vs f64 CPU {err:.1e} (tolerance {tol:.0e})",
            rt.selection.kind
        ),
    ))
}

fn check_tf32(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    if rt.selection.kind != BackendKind::Cuda {
        return Ok((Status::Skip, "TF32 is a CUDA tensor-core mode".to_string()));
    }
    if crate::tuning::tf32_enabled() != rt.tuning.tf32 {
        return Ok((
            Status::Fail,
            format!(
                "reported tf32={} but Candle's switch reads {}",
                rt.tuning.tf32,
                crate::tuning::tf32_enabled()
            ),
        ));
    }
    let dev = rt.device();
    let n = 4096;
    let a = randn((n, n), dev)?;
    let b = randn((n, n), dev)?;
    let run = |tf32: bool| -> candle_core::Result<(Duration, Tensor)> {
        candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        let t = time_median(dev, 7, || a.matmul(&b).map(|_| ()))?;
        Ok((t, a.matmul(&b)?))
    };
    let (t_off, exact) = run(false)?;
    let (t_on, fast) = run(true)?;
    candle_core::cuda::set_gemm_reduced_precision_f32(rt.tuning.tf32);
    let err = rel_error(&fast, &exact)?;
    let speedup = t_off.as_secs_f64() / t_on.as_secs_f64();
    let ok = err <= 1e-2 && (!rt.tuning.tf32 || speedup > 1.2);
    Ok((
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "switch {}; {n}^3 f32 matmul {:.3} ms off, {:.3} ms on ({speedup:.2}x); TF32 relative error {err:.1e} (tolerance 1e-2)",
            if rt.tuning.tf32 { "on" } else { "off" },
            ms(t_off),
            ms(t_on)
        ),
    ))
}

fn check_reduced_precision(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    if rt.selection.kind != BackendKind::Cuda {
        return Ok((
            Status::Skip,
            "reduced-precision reductions are a cuBLAS mode".to_string(),
        ));
    }
    let on = candle_core::cuda::gemm_reduced_precision_bf16();
    if on != rt.tuning.reduced_precision_reductions {
        return Ok((
            Status::Fail,
            format!(
                "reported {} but Candle reads {on}",
                rt.tuning.reduced_precision_reductions
            ),
        ));
    }
    let dev = rt.device();
    let a = randn((1024, 1024), dev)?;
    let b = randn((1024, 1024), dev)?;
    let reference = a.matmul(&b)?;
    let out = a.to_dtype(DType::BF16)?.matmul(&b.to_dtype(DType::BF16)?)?;
    let err = rel_error(&out, &reference)?;
    let tol = 2e-2;
    Ok((
        if err <= tol {
            Status::Pass
        } else {
            Status::Fail
        },
        format!(
            "switch {}; bf16 1024^3 matmul relative error vs f32 {err:.1e} (tolerance {tol:.0e})",
            if on { "on" } else { "off" }
        ),
    ))
}

fn check_dtype_policy(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let dtype = rt.tuning.dtype.compute;
    let dev = rt.device();
    let a = randn((256, 256), dev)?;
    let b = randn((256, 256), dev)?;
    let reference = a
        .to_device(&Device::Cpu)?
        .matmul(&b.to_device(&Device::Cpu)?)?;
    let out = a.to_dtype(dtype)?.matmul(&b.to_dtype(dtype)?)?;
    let err = rel_error(&out, &reference)?;
    let tol = match dtype {
        DType::BF16 => 2e-2,
        DType::F16 => 5e-3,
        _ if rt.tuning.tf32 => 5e-3,
        _ => 1e-5,
    };
    Ok((
        if err <= tol {
            Status::Pass
        } else {
            Status::Fail
        },
        format!(
            "{} matmul on {} relative error {err:.1e} (tolerance {tol:.0e})",
            dtype.as_str(),
            rt.selection.kind
        ),
    ))
}

/// Times a 1024^3 f32 CPU matmul with one thread and with the tuned pool: `(one, pool)`.
pub fn cpu_matmul_one_vs_pool(reps: usize) -> candle_core::Result<(Duration, Duration)> {
    let n = 1024;
    let a = randn((n, n), &Device::Cpu)?;
    let b = randn((n, n), &Device::Cpu)?;
    let pool = time_median(&Device::Cpu, reps, || a.matmul(&b).map(|_| ()))?;
    // Candle reads RAYON_NUM_THREADS at every matmul; 1 selects its single-threaded GEMM.
    let saved = std::env::var("RAYON_NUM_THREADS").ok();
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let one = time_median(&Device::Cpu, reps, || a.matmul(&b).map(|_| ()));
    match saved {
        Some(v) => std::env::set_var("RAYON_NUM_THREADS", v),
        None => std::env::remove_var("RAYON_NUM_THREADS"),
    }
    Ok((one?, pool))
}

fn check_threads(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let planned = rt.tuning.threads.threads;
    let (pool, candle) = (
        rayon::current_num_threads(),
        candle_core::utils::get_num_threads(),
    );
    if pool != planned || candle != planned {
        return Ok((
            Status::Fail,
            format!(
                "planned {planned} threads; rayon pool has {pool}, Candle's GEMM uses {candle}"
            ),
        ));
    }
    if planned == 1 {
        return Ok((
            Status::Skip,
            "pool of 1 thread: nothing to compare against".to_string(),
        ));
    }
    let (one, many) = cpu_matmul_one_vs_pool(5)?;
    let speedup = one.as_secs_f64() / many.as_secs_f64();
    Ok((
        if speedup > 1.1 { Status::Pass } else { Status::Fail },
        format!(
            "rayon and Candle both use {planned} threads; 1024^3 f32 matmul {:.1} ms at 1 thread, {:.1} ms pooled ({speedup:.2}x)",
            ms(one),
            ms(many)
        ),
    ))
}

fn check_memory(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let m = match rt.memory() {
        Ok(m) => m,
        Err(e) => return Ok((Status::Fail, e.to_string())),
    };
    let ok = m.total > 0 && m.free > 0 && m.free <= m.total;
    Ok((
        if ok { Status::Pass } else { Status::Fail },
        format!("{} MiB free of {} MiB", m.free >> 20, m.total >> 20),
    ))
}

/// A small vocoder-shaped workload: conv1d stack over `[batch, 64, frames]`.
struct ConvStack {
    weights: Vec<Tensor>,
}

impl ConvStack {
    fn new(device: &Device) -> candle_core::Result<Self> {
        let weights = (0..4)
            .map(|_| (Tensor::randn(0f32, 0.1, (64, 64, 7), &Device::Cpu)?).to_device(device))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { weights })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for w in &self.weights {
            h = (h.conv1d(w, 3, 1, 1, 1)?.tanh()? + &h)?;
        }
        h.sum_keepdim(D::Minus1)
    }

    /// Bytes one item needs at `frames`: the input, two live activations and Candle's im2col
    /// buffer of the widest conv.
    fn item_bytes(frames: usize) -> u64 {
        let act = 64 * frames * 4;
        (3 * act + 64 * 7 * frames * 4) as u64
    }
}

fn check_warm_up(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let dev = rt.device();
    let model = ConvStack::new(dev)?;
    let inputs = [Tensor::randn(0f32, 1., (1, 64, 8192), &Device::Cpu)?.to_device(dev)?];
    let report = warm_up(dev, &inputs, 6, |x| model.forward(x).map(|_| ()))?;
    let ok = report.warm_median() < report.cold;
    Ok((
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "cold {:.2} ms, warm median {:.2} ms ({:.2}x)",
            ms(report.cold),
            ms(report.warm_median()),
            report.speedup()
        ),
    ))
}

#[derive(Debug)]
struct Oom;
impl IsOutOfMemory for Oom {
    fn is_out_of_memory(&self) -> bool {
        true
    }
}

fn check_planner(rt: &Runtime) -> candle_core::Result<(Status, String)> {
    let dev = rt.device();
    let memory = match rt.memory() {
        Ok(m) => m,
        Err(e) => return Ok((Status::Fail, e.to_string())),
    };
    let frames = 4096;
    let cost = ItemCost {
        fixed: 0,
        per_item: ConvStack::item_bytes(frames),
    };
    let config = PlannerConfig {
        margin: rt.tuning.memory_fraction,
        max_batch: 8,
    };
    let planner = BatchPlanner::new(config, cost);
    let source = move || -> candle_core::Result<MemoryInfo> { Ok(memory) };
    let batch = planner.plan_for_free(source()?.free);
    let budget = memory.free as f64 * config.margin;
    if cost.bytes(batch) as f64 > budget {
        return Ok((
            Status::Fail,
            format!(
                "batch {batch} needs {} B > budget {budget:.0} B",
                cost.bytes(batch)
            ),
        ));
    }
    let model = ConvStack::new(dev)?;
    let x = Tensor::randn(0f32, 1., (batch, 64, frames), &Device::Cpu)?.to_device(dev)?;
    let out = model.forward(&x)?;
    if out.dim(0)? != batch {
        return Ok((Status::Fail, "planned batch did not run".to_string()));
    }
    // An induced out-of-memory: a budget of three items' worth, from a planner told 40x more.
    let tight = BatchPlanner::new(
        PlannerConfig {
            margin: 1.0,
            max_batch: 64,
        },
        cost,
    );
    let roomy = move || {
        Ok(MemoryInfo {
            total: cost.bytes(128),
            free: cost.bytes(40),
        })
    };
    let (recovered, _) = tight
        .run_with_backoff(&roomy, |b| if b > 3 { Err(Oom) } else { Ok(()) })
        .map_err(|_| candle_core::Error::Msg("back-off did not recover".into()))?;
    let ok = recovered == 2 && tight.ceiling() == 2;
    Ok((
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "{} KiB per item at {frames} frames -> batch {batch} (cap {}) within {:.0}% of {} MiB free, ran; induced OOM at 40 backed off to {recovered}",
            cost.per_item >> 10,
            config.max_batch,
            config.margin * 100.0,
            memory.free >> 20
        ),
    ))
}
