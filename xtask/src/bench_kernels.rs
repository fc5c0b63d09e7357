//! `cargo xtask bench kernels`: ferrovox's CPU kernels against Candle's own ops on the joe
//! voice's layer shapes (paragraph length), in the tuned pool: what each kernel gains.

use std::time::Instant;

use candle_core::{Device, Tensor};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_kernels::{GatedTanh, PackedConv1d, Tanh};
use serde_json::{json, Value};

/// Median seconds of `reps` calls after two warm-ups.
fn time(reps: usize, mut f: impl FnMut() -> candle_core::Result<Tensor>) -> anyhow::Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut walls = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f().map(|_| start.elapsed().as_secs_f64())
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    walls.sort_by(f64::total_cmp);
    Ok(walls[walls.len() / 2])
}

/// (what, input channels, output channels, kernel, dilation, length): the joe voice's HiFi-GAN
/// residual convs at each stage and its flow's WaveNet conv at the lengths of the 17.5 s
/// benchmark paragraph, and its text encoder's FFN convs at one sentence's tokens.
const CONVS: [(&str, usize, usize, usize, usize, usize); 14] = [
    ("MMS decoder resblock, 256 ch, k11", 256, 256, 11, 5, 26_500),
    ("MMS decoder resblock, 256 ch, k3", 256, 256, 3, 1, 26_500),
    (
        "MMS decoder resblock, 128 ch, k11",
        128,
        128,
        11,
        5,
        106_000,
    ),
    ("MMS decoder resblock, 32 ch, k11", 32, 32, 11, 5, 424_000),
    ("MMS decoder resblock, 64 ch, k11", 64, 64, 11, 5, 212_000),
    ("MMS decoder resblock, 64 ch, k7", 64, 64, 7, 3, 212_000),
    ("decoder resblock, 32 ch, k3", 32, 32, 3, 1, 385_792),
    ("decoder resblock, 32 ch, k5", 32, 32, 5, 2, 385_792),
    ("decoder resblock, 32 ch, k7", 32, 32, 7, 3, 385_792),
    ("decoder resblock, 64 ch", 64, 64, 5, 2, 96_448),
    ("decoder resblock, 128 ch", 128, 128, 3, 1, 12_056),
    ("flow WaveNet in_layer", 192, 384, 5, 1, 1_507),
    ("text encoder FFN in", 192, 768, 3, 1, 230),
    ("text encoder FFN out", 768, 192, 3, 1, 230),
];

pub fn run(quick: bool) -> anyhow::Result<Value> {
    let runtime = Runtime::init(&DeviceRequest::Cpu, &TuningConfig::from_env()?)?;
    let threads = runtime.tuning.threads.threads;
    let reps = if quick { 5 } else { 15 };
    let dev = Device::Cpu;
    let mut rows = Vec::new();
    println!("CPU kernels, {threads} thread(s), median of {reps}:");
    println!("| layer | Candle conv1d | per-tap GEMM | direct (AVX-512) | Winograd (AVX-512) | GFLOP/s direct | direct vs Candle | direct vs GEMM | Winograd vs direct |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // For profiling one layer: FERROVOX_BENCH_LAYER=<part of its name>.
    let only = std::env::var("FERROVOX_BENCH_LAYER").unwrap_or_default();
    // `--quick`: the joe voice's layers only.
    let layers = CONVS
        .into_iter()
        .filter(|c| c.0.contains(&only) && !(quick && c.0.starts_with("MMS")));
    for (what, cin, cout, k, d, len) in layers {
        let x = Tensor::randn(0f32, 1., (1, cin, len), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k), &dev)?;
        let pad = (k - 1) * d / 2;
        let candle = time(reps, || x.conv1d(&w, pad, 1, d, 1))?;
        let packed = PackedConv1d::new(&w, None, pad, d)?;
        let gemm_op = packed.clone().without_direct();
        let gemm = time(reps, || x.apply_op1(gemm_op.clone()))?;
        let direct_op = packed.clone().without_winograd();
        let direct = if direct_op.is_direct() {
            Some(time(reps, || x.apply_op1(direct_op.clone()))?)
        } else {
            None
        };
        let winograd = if packed.is_winograd() {
            Some(time(reps, || x.apply_op1(packed.clone()))?)
        } else {
            None
        };
        let flops = 2.0 * (cin * cout * k * len) as f64;
        let ms = |s: f64| format!("{:.2} ms", s * 1e3);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        println!(
            "| {what} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(candle),
            ms(gemm),
            direct.map_or("n/a (no AVX-512)".into(), ms),
            winograd.map_or("n/a".into(), ms),
            direct.map_or("–".into(), |s| format!("{:.0}", flops / s / 1e9)),
            ratio(Some(candle), direct),
            ratio(Some(gemm), direct),
            ratio(direct, winograd),
        );
        rows.push(
            json!({"layer": what, "cin": cin, "cout": cout, "kernel": k, "dilation": d,
                         "len": len, "candle_s": candle, "gemm_s": gemm, "direct_s": direct,
                         "winograd_s": winograd}),
        );
    }
    let states = Tensor::randn(0f32, 1., (1, 384, 1_507), &dev)?;
    let h = 192;
    let candle_gate = time(reps, || {
        states.narrow(1, 0, h)?.tanh()? * candle_nn::ops::sigmoid(&states.narrow(1, h, h)?)?
    })?;
    let gate = time(reps, || states.apply_op1(GatedTanh))?;
    let audio = Tensor::randn(0f32, 1., (1, 1, 385_792), &dev)?;
    let candle_tanh = time(reps, || audio.tanh())?;
    let tanh = time(reps, || audio.apply_op1(Tanh))?;
    println!(
        "| WaveNet gate tanh·sigmoid, 384 × 1507 | {:.3} ms (3 ops) | – | {:.3} ms (one pass) | – | {:.2}× | – |",
        candle_gate * 1e3,
        gate * 1e3,
        candle_gate / gate
    );
    println!(
        "| output tanh, 385,792 samples | {:.3} ms | – | {:.3} ms | – | {:.2}× | – |",
        candle_tanh * 1e3,
        tanh * 1e3,
        candle_tanh / tanh
    );
    Ok(json!({"threads": threads, "reps": reps, "convs": rows,
              "gate": {"candle_s": candle_gate, "ferrovox_s": gate},
              "tanh": {"candle_s": candle_tanh, "ferrovox_s": tanh}}))
}
