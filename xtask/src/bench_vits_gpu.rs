//! `cargo xtask bench vits-gpu --device cuda`: the MMS-TTS-eng VITS configuration (random
//! weights, seed 0, noise 0) in ferrovox against transformers' `VitsModel` in PyTorch on the same
//! GPU, same weights and token ids, batch 1 and 16. PyTorch is timed plain (fp32 eager) and
//! tuned (TF32, cudnn.benchmark, weight norm removed); ferrovox with the device layer's tuning
//! (TF32 unless `FERROVOX_TF32=0`), then again with the decoder's CUDA graph off. Every call is
//! synchronised before the clock is read.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_vits::{SeededNoise, SynthesisParams, TokenBatch, VitsModel};
use serde_json::{json, Value};

use crate::memory_sampler::MemorySampler;
use crate::util::repo_root;

/// 121 tokens: about 7.7 s of audio at the default initialisation's durations.
const TOKENS: usize = 121;
const BATCHES: [usize; 2] = [1, 16];

/// The token ids the PyTorch script wrote next to the weights, and noise-free parameters.
fn bench_inputs(dir: &std::path::Path) -> anyhow::Result<(Vec<u32>, SynthesisParams)> {
    let ids: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json"))?)?;
    let ids: Vec<u32> = serde_json::from_value(ids["ids"].clone())?;
    let params = SynthesisParams {
        noise_scale: 0.0,
        noise_scale_duration: 0.0,
        length_scale: 1.0,
    };
    Ok((ids, params))
}

pub fn run(quick: bool, request: &DeviceRequest) -> anyhow::Result<Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    anyhow::ensure!(!device.is_cpu(), "bench vits-gpu needs --device cuda");
    // `FERROVOX_BENCH_PROFILE_BATCH=N`: one batch size, one timed call, for a kernel profiler
    // (`ncu`) to attribute GPU time without thousands of repeated launches.
    let profile: Option<usize> = match std::env::var("FERROVOX_BENCH_PROFILE_BATCH") {
        Ok(v) => Some(v.parse().context("FERROVOX_BENCH_PROFILE_BATCH")?),
        Err(_) => None,
    };
    let batches: Vec<usize> = profile.map_or(BATCHES.to_vec(), |b| vec![b]);
    let reps = match (profile, quick) {
        (Some(_), _) => 1,
        (None, true) => 5,
        (None, false) => 30,
    };
    let dir = std::env::temp_dir().join("ferrovox-bench-mms-gpu");
    std::fs::create_dir_all(&dir)?;
    let spec = json!({"dir": dir, "tokens": TOKENS, "batches": batches, "reps": reps});
    let spec_path = dir.with_extension("json");
    std::fs::write(&spec_path, spec.to_string())?;
    // `FERROVOX_BENCH_TORCH=0`: ferrovox alone, for comparing its own variants (the weights
    // and ids of an earlier run in the same temp directory are reused).
    let torch = if std::env::var("FERROVOX_BENCH_TORCH").as_deref() == Ok("0") {
        anyhow::ensure!(
            dir.join("ids.json").exists(),
            "FERROVOX_BENCH_TORCH=0 needs the weights of an earlier `bench vits-gpu` in {}",
            dir.display()
        );
        Value::Null
    } else {
        crate::bench_vits::json_output(
            Command::new(crate::bench_s3gen::bench_python()?)
                .arg(repo_root().join("xtask/bench/mms_torch_gpu_bench.py"))
                .arg(&spec_path),
        )
        .context("PyTorch VITS GPU bench")?
    };

    let sampler = MemorySampler::start(&device);
    let load = Instant::now();
    let model = VitsModel::from_transformers_dir(&dir, &device)?.model;
    let load_s = load.elapsed().as_secs_f64();
    let (ids, params) = bench_inputs(&dir)?;
    let rate = model.config().sampling_rate as f64;
    let mut ours = serde_json::Map::new();
    for &batch in &batches {
        let tokens = TokenBatch::new(&vec![ids.clone(); batch], 0, &device)?;
        let call = || -> anyhow::Result<f64> {
            let start = Instant::now();
            let o = model.forward(&tokens, None, &params, &mut SeededNoise::new(0))?;
            device.synchronize()?;
            let wall = start.elapsed().as_secs_f64();
            anyhow::ensure!(o.sample_lengths.len() == batch, "batch lost items");
            Ok(wall)
        };
        let sorted_walls = || -> anyhow::Result<Vec<f64>> {
            let mut walls = (0..reps)
                .map(|_| call())
                .collect::<anyhow::Result<Vec<_>>>()?;
            walls.sort_by(f64::total_cmp);
            Ok(walls)
        };
        let first = call()?;
        let walls = sorted_walls()?;
        // One more call with a synchronise after each stage, for where the time goes.
        let (audio, stages) =
            model.forward_timed(&tokens, None, &params, &mut SeededNoise::new(0))?;
        // The same calls with every stage's CUDA graph off: what the graphs remove.
        model.graphs().set_enabled(false);
        let eager = sorted_walls()?;
        let (_, eager_stages) =
            model.forward_timed(&tokens, None, &params, &mut SeededNoise::new(0))?;
        model.graphs().set_enabled(true);
        let (median, eager_median) = (walls[walls.len() / 2], eager[eager.len() / 2]);
        println!(
            "batch {batch} stages with CUDA graphs (eager): text encoder {:.1} ({:.1}) ms, duration {:.1} ({:.1}) ms, flow {:.1} ({:.1}) ms, decoder {:.1} ({:.1}) ms; whole call {:.1} ms with the graphs, {:.1} ms without ({:.2}×)",
            stages.text_encoder.as_secs_f64() * 1e3,
            eager_stages.text_encoder.as_secs_f64() * 1e3,
            stages.duration.as_secs_f64() * 1e3,
            eager_stages.duration.as_secs_f64() * 1e3,
            stages.flow.as_secs_f64() * 1e3,
            eager_stages.flow.as_secs_f64() * 1e3,
            stages.decoder.as_secs_f64() * 1e3,
            eager_stages.decoder.as_secs_f64() * 1e3,
            median * 1e3,
            eager_median * 1e3,
            eager_median / median,
        );
        ours.insert(
            batch.to_string(),
            json!({"first_call_s": first, "median_s": median, "walls": walls,
                   "graphs_off_median_s": eager_median, "graphs_off_walls": eager,
                   "audio_s_per_item": audio.sample_lengths[0] as f64 / rate,
                   "stages": crate::bench_worker::stages_json(&stages),
                   "graphs_off_stages": crate::bench_worker::stages_json(&eager_stages)}),
        );
    }
    let peak = sampler.map(MemorySampler::peak_above_mib);

    println!(
        "VITS, MMS-TTS-eng configuration, {TOKENS} tokens, on {} (ferrovox TF32 {}):",
        runtime.selection.name,
        if runtime.tuning.tf32 { "on" } else { "off" }
    );
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1e3;
    if torch.is_null() {
        for &batch in &batches {
            let f = &ours[&batch.to_string()];
            println!(
                "batch {batch}: ferrovox {:.1} ms per call, first call {:.0} ms (PyTorch not run)",
                ms(&f["median_s"]),
                ms(&f["first_call_s"])
            );
        }
    } else {
        print_table(&batches, &ours, &torch);
    }
    println!(
        "CUDA graphs held (text encoder, durations, flow, decoder): {:?}; GPU kernels preloaded at start-up in {:.0} ms",
        model.graphs().held(),
        runtime.tuning.kernels_preloaded_s.unwrap_or(0.0) * 1e3
    );
    for reason in model.graphs().fallbacks() {
        println!("stays eager: {reason}");
    }
    println!(
        "GPU memory at batch {}: ferrovox peak above its CUDA context {:.0} MiB; PyTorch tuned max reserved {:.0} MiB (model load {load_s:.2} s; medians of {reps})",
        batches[batches.len() - 1],
        peak.unwrap_or(f64::NAN),
        torch["results"]["tuned"][batches[batches.len() - 1].to_string()]["max_reserved_mib"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    Ok(
        json!({"device": runtime.selection.name, "tf32": runtime.tuning.tf32, "tokens": TOKENS,
              "reps": reps, "load_s": load_s, "ferrovox": ours, "ferrovox_gpu_peak_mib": peak,
              "kernels_preloaded_s": runtime.tuning.kernels_preloaded_s,
              "graphs_held": model.graphs().held(), "graph_fallbacks": model.graphs().fallbacks(),
              "torch": torch}),
    )
}

/// The table of ferrovox against both PyTorch runs, per batch.
fn print_table(batches: &[usize], ours: &serde_json::Map<String, Value>, torch: &Value) {
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1e3;
    println!("| batch | audio per item | ferrovox | PyTorch fp32 eager | PyTorch tuned | vs eager | vs tuned | ferrovox first call | PyTorch tuned first call |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &batch in batches {
        let b = batch.to_string();
        let f = &ours[&b];
        let (e, t) = (
            &torch["results"]["fp32_eager"][&b],
            &torch["results"]["tuned"][&b],
        );
        println!(
            "| {batch} | {:.2} s | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}× | {:.2}× | {:.0} ms | {:.0} ms |",
            f["audio_s_per_item"].as_f64().unwrap_or(f64::NAN),
            ms(&f["median_s"]),
            ms(&e["median_s"]),
            ms(&t["median_s"]),
            ms(&e["median_s"]) / ms(&f["median_s"]),
            ms(&t["median_s"]) / ms(&f["median_s"]),
            ms(&f["first_call_s"]),
            ms(&t["first_call_s"]),
        );
    }
}

/// `cargo xtask bench vits-gpu-planner --device cuda` (after `bench vits-gpu`, whose weights it
/// reuses): throughput at batch 1 to 64, against the batch the planner picks from two probe
/// runs' peak memory and the free memory.
pub fn planner(request: &DeviceRequest) -> anyhow::Result<Value> {
    use ferrovox_device::planner::{BatchPlanner, ItemCost, PlannerConfig};
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    anyhow::ensure!(
        !device.is_cpu(),
        "bench vits-gpu-planner needs --device cuda"
    );
    let dir = std::env::temp_dir().join("ferrovox-bench-mms-gpu");
    anyhow::ensure!(
        dir.join("ids.json").exists(),
        "no weights in {}: run `bench vits-gpu` first",
        dir.display()
    );
    let model = VitsModel::from_transformers_dir(&dir, &device)?.model;
    let (ids, params) = bench_inputs(&dir)?;
    let rate = model.config().sampling_rate as f64;
    let free = ferrovox_device::memory::device_memory(&device)?.free;
    // Memory grows with batch and the pool keeps what it once held, so one sampler over rising
    // batches reads each batch's peak.
    let sampler = MemorySampler::start(&device).context("no memory readings on this device")?;
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    println!("| batch | ms per call | audio s per wall s | peak MiB above context |");
    println!("|---|---|---|---|");
    for batch in [1usize, 2, 4, 8, 16, 32, 64] {
        let tokens = TokenBatch::new(&vec![ids.clone(); batch], 0, &device)?;
        let call = || -> anyhow::Result<(f64, f64)> {
            let start = Instant::now();
            let o = model.forward(&tokens, None, &params, &mut SeededNoise::new(0))?;
            device.synchronize()?;
            Ok((
                start.elapsed().as_secs_f64(),
                o.sample_lengths[0] as f64 / rate,
            ))
        };
        call()?;
        let mut walls = Vec::new();
        let mut audio = 0.0;
        for _ in 0..5 {
            let (w, a) = call()?;
            walls.push(w);
            audio = a;
        }
        walls.sort_by(f64::total_cmp);
        let wall = walls[walls.len() / 2];
        let peak = sampler.peak_so_far();
        let throughput = batch as f64 * audio / wall;
        println!(
            "| {batch} | {:.1} | {throughput:.0} | {:.0} |",
            wall * 1e3,
            peak as f64 / (1 << 20) as f64
        );
        peaks.push((batch, peak));
        rows.push(
            json!({"batch": batch, "wall_s": wall, "throughput": throughput, "peak_bytes": peak}),
        );
    }
    drop(sampler);
    let cost = ItemCost::from_probe(peaks[0], peaks[2]).context("probe")?;
    let planner = BatchPlanner::new(
        PlannerConfig {
            margin: runtime.tuning.memory_fraction,
            ..PlannerConfig::default()
        },
        cost,
    );
    let choice = planner.plan_for_free(free);
    let best = rows
        .iter()
        .max_by(|a, b| {
            a["throughput"]
                .as_f64()
                .partial_cmp(&b["throughput"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .cloned()
        .unwrap_or_default();
    let chosen = rows
        .iter()
        .rev()
        .find(|r| r["batch"].as_u64().unwrap_or(0) as usize <= choice)
        .cloned()
        .unwrap_or_default();
    let ratio =
        chosen["throughput"].as_f64().unwrap_or(0.0) / best["throughput"].as_f64().unwrap_or(1.0);
    println!(
        "planner: cost {} MiB + {} MiB per item (probes at batch 1 and 4), {} MiB free -> batch {choice} (cap {}); measured best batch {}; throughput at the planned batch {ratio:.2}x the best",
        cost.fixed >> 20,
        cost.per_item >> 20,
        free >> 20,
        PlannerConfig::default().max_batch,
        best["batch"]
    );
    Ok(
        json!({"rows": rows, "cost": cost, "free_bytes": free, "choice": choice,
              "best_batch": best["batch"], "planned_vs_best": ratio}),
    )
}
