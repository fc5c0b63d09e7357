//! `cargo xtask bench chatterbox-streams [--device cuda]`: Chatterbox's continuous batching at
//! full size with random weights (the files `bench chatterbox` writes), through the engine's
//! `ChatterboxVoice` as a server runs it. For 1, 2, 4, … concurrent requests (up to 64 on a
//! GPU, 4 on the CPU):
//! - T3 alone: every request's generation decoded in one batch; aggregate tokens/s, ms per
//!   step, and the speed-up over one request;
//! - streamed: each request's thread runs S3Gen on its tokens as they come, the flow runs of
//!   concurrent requests batched ([`ferrovox_chatterbox::FlowBatcher`]); first audio p50/p95,
//!   aggregate tokens/s and the mean flow batch;
//! - streamed with the flow batch limit at 1 (each request's flow run alone, as before flow
//!   batching), up to `FERROVOX_BENCH_UNBATCHED_UP_TO` requests (16), the same run's baseline.
//!
//! `FERROVOX_BENCH_LEVELS` (e.g. `1,8,32`) picks the levels; levels that would start after
//! `FERROVOX_BENCH_BUDGET_S` seconds (480) are skipped and named.
//!
//! The baseline in the same run is one generation through `T3::generate` alone (what a voice
//! without a decode batch runs). Upstream has no batching: its batch-1 figure is
//! `bench chatterbox`'s, run beside this one.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::Context;
use ferrovox_chatterbox::t3::{Flow, SeededNoise};
use ferrovox_chatterbox::{FlowBatchConfig, GenerateOptions};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{ChatterboxOptions, ChatterboxVoice, SynthesisOptions, TtsModel, Unit};
use serde_json::json;

use crate::bench_chatterbox::FullSize;
use crate::memory_sampler::MemorySampler;
use crate::util::{median, quantile, repo_root};

pub fn run(quick: bool, request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let on_gpu = !device.is_cpu();
    let dir = std::env::temp_dir().join("ferrovox-bench-chatterbox");
    if !dir.join("t3_inputs.safetensors").is_file() {
        let spec = json!({
            "dir": dir, "threads": 1, "device": "cpu", "tf32": false, "reps": 0,
            "new_tokens": 0, "sentence_tokens": 75, "prompt_tokens": 150, "text_tokens": 40,
            "weights_only": true,
        });
        let spec_path = dir.with_extension("weights.json");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&spec_path, spec.to_string())?;
        crate::bench_vits::json_output(
            std::process::Command::new(crate::bench_s3gen::bench_python()?)
                .arg(repo_root().join("xtask/bench/t3_torch_bench.py"))
                .arg(&spec_path),
        )
        .context("writing the full-size weights")?;
    }
    let env_usize = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    };
    let levels: Vec<usize> = match std::env::var("FERROVOX_BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("FERROVOX_BENCH_LEVELS: a comma-separated list of request counts")?,
        Err(_) => match (quick, on_gpu) {
            (true, _) => vec![1, 2],
            (false, true) => vec![1, 2, 4, 8, 16, 32, 64],
            (false, false) => vec![1, 2, 4],
        },
    };
    let budget = env_usize("FERROVOX_BENCH_BUDGET_S", 480) as f64;
    let unbatched_up_to = env_usize("FERROVOX_BENCH_UNBATCHED_UP_TO", 16);
    let bench_start = Instant::now();
    let new_tokens = if on_gpu { 200 } else { 40 };
    let sampler = MemorySampler::start(&device);
    let full = FullSize::load(&dir, &device)?;
    let text = full.text.clone();
    let slots = *levels.iter().max().context("no levels")?;
    let flow_items = ChatterboxVoice::planned_flow_items(&full.tts);
    let voice = Arc::new(
        ChatterboxVoice::with_slots("bench", full.tts, slots)?
            .with_flow_batch(FlowBatchConfig::new(flow_items)),
    );
    let decoder = voice.decoder().context("a decode batch")?;
    let flow = voice.flow_batcher();
    println!(
        "S3Gen flow batch: {} (planned from free memory)",
        flow.map_or("off".into(), |f| format!(
            "up to {} utterances",
            f.max_items()
        ))
    );
    println!(
        "decode batch: {} slots of {} positions ({:.0} MiB of cache each)",
        decoder.config().max_slots,
        decoder.config().positions,
        decoder
            .config()
            .slot_bytes(voice.tts().t3(), voice.tts().t3().dtype()) as f64
            / (1 << 20) as f64
    );
    let options = |seed: u64| SynthesisOptions {
        seed,
        chatterbox: ChatterboxOptions {
            max_new_tokens: Some(new_tokens),
            ..Default::default()
        },
        ..Default::default()
    };

    // `n` generations at once through the decode batch alone: (wall seconds, tokens, steps).
    let t3_only = |n: usize, base: u64| -> anyhow::Result<(f64, usize, u64)> {
        let steps = decoder
            .stats()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed);
        let g = GenerateOptions {
            sampling: voice.generate_options(&options(0)).sampling,
            ..Default::default()
        };
        let start = Instant::now();
        let generations = (0..n)
            .map(|i| {
                let request = voice.tts().t3_request(
                    &text,
                    voice.tts().builtin_voice(),
                    &g,
                    Box::new(SeededNoise::new(base + i as u64)),
                )?;
                Ok(decoder.submit(request)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tokens = std::thread::scope(|scope| {
            let handles: Vec<_> = generations
                .into_iter()
                .map(|g| scope.spawn(move || g.run(&mut |_| Ok(Flow::Continue))))
                .collect();
            handles
                .into_iter()
                .map(|h| Ok(h.join().expect("generation thread")?.tokens.len()))
                .sum::<anyhow::Result<usize>>()
        })?;
        let wall = start.elapsed().as_secs_f64();
        let steps = decoder
            .stats()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed)
            - steps;
        Ok((wall, tokens, steps))
    };
    // Flow runs and the utterances they carried so far.
    let flow_counts = || {
        flow.map_or((0, 0), |f| {
            let s = f.stats();
            (
                s.runs.load(std::sync::atomic::Ordering::Relaxed),
                s.items.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    };
    // `n` streamed syntheses at once, the flow batch limited to `limit`: (wall seconds, first
    // audio of each, mean utterances per flow run).
    let streamed = |n: usize, base: u64, limit: usize| -> anyhow::Result<(f64, Vec<f64>, f64)> {
        if let Some(f) = flow {
            f.set_max_items(limit);
        }
        let (runs0, items0) = flow_counts();
        let barrier = Arc::new(Barrier::new(n));
        let start = Instant::now();
        let firsts = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (voice, barrier, text) = (voice.clone(), barrier.clone(), text.clone());
                    let options = options(base + i as u64);
                    scope.spawn(move || -> anyhow::Result<f64> {
                        barrier.wait();
                        let begun = Instant::now();
                        let mut first = None;
                        let unit = Unit {
                            ids: text,
                            ends_sentence: true,
                            seed: base + i as u64,
                        };
                        voice.stream_unit(&unit, &options, &mut |piece| {
                            if !piece.is_empty() {
                                first.get_or_insert_with(|| begun.elapsed().as_secs_f64());
                            }
                            Ok(())
                        })?;
                        first.context("no audio")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("stream thread"))
                .collect::<anyhow::Result<Vec<f64>>>()
        })?;
        let wall = start.elapsed().as_secs_f64();
        let (runs1, items1) = flow_counts();
        let mean_batch = (items1 - items0) as f64 / (runs1 - runs0).max(1) as f64;
        Ok((wall, firsts, mean_batch))
    };

    // The baseline: one generation run alone through `T3::generate` (the path a voice without
    // a decode batch takes), after an untimed one, with the same options.
    let alone = {
        let t3 = voice.tts().t3();
        let cond = &voice.tts().builtin_voice().t3;
        let sampling = voice.generate_options(&options(0)).sampling;
        let run = |seed| -> anyhow::Result<(f64, usize)> {
            let start = Instant::now();
            let out = t3.generate(
                cond,
                &text,
                &sampling,
                &mut SeededNoise::new(seed),
                8,
                &mut |_| Ok(Flow::Continue),
            )?;
            Ok((start.elapsed().as_secs_f64(), out.tokens.len()))
        };
        run(7_000)?;
        let (wall, tokens) = run(7_001)?;
        tokens as f64 / wall
    };
    println!("one generation alone (T3::generate, no decode batch): {alone:.1} tokens/s");
    let mut rows = Vec::new();
    let mut single = f64::NAN;
    println!(
        "| requests | T3 tokens/s (all) | ms per step | × one request | streamed tokens/s (all) | first audio p50 / p95 | mean flow batch | flow alone: streamed tokens/s | flow alone: first audio p50 / p95 |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut skipped = Vec::new();
    for &n in &levels {
        if bench_start.elapsed().as_secs_f64() > budget {
            skipped.push(n);
            continue;
        }
        let limit = flow_items.max(1);
        // Untimed first: this batch size's graphs are captured, as a server's traffic would.
        t3_only(n, 9_000)?;
        streamed(n, 8_000, limit)?;
        let (wall, tokens, steps) = t3_only(n, 1_000 * n as u64)?;
        let rate = tokens as f64 / wall;
        if n == 1 {
            single = rate;
        }
        let (s_wall, firsts, mean_batch) = streamed(n, 2_000 * n as u64, limit)?;
        let s_rate = (n * new_tokens) as f64 / s_wall;
        let (p50, p95) = (
            quantile(firsts.clone(), 0.5),
            quantile(firsts.clone(), 0.95),
        );
        // The same requests with every flow run alone: the baseline before flow batching.
        let alone_flow = if flow.is_some() && n > 1 && n <= unbatched_up_to {
            let (a_wall, a_firsts, _) = streamed(n, 2_000 * n as u64, 1)?;
            Some((
                (n * new_tokens) as f64 / a_wall,
                quantile(a_firsts.clone(), 0.5),
                quantile(a_firsts, 0.95),
            ))
        } else {
            None
        };
        println!(
            "| {n} | {rate:.0} | {:.2} | {:.1}× | {s_rate:.0} | {:.0} / {:.0} ms | {mean_batch:.1} | {} | {} |",
            wall * 1e3 / steps.max(1) as f64,
            rate / single,
            p50 * 1e3,
            p95 * 1e3,
            alone_flow.map_or("-".into(), |(r, _, _)| format!("{r:.0}")),
            alone_flow.map_or("-".into(), |(_, a, b)| format!("{:.0} / {:.0} ms", a * 1e3, b * 1e3)),
        );
        rows.push(json!({
            "requests": n, "t3_tokens": tokens, "t3_wall_s": wall, "t3_tokens_per_s": rate,
            "steps": steps, "ms_per_step": wall * 1e3 / steps.max(1) as f64,
            "speedup_over_one": rate / single,
            "streamed_wall_s": s_wall, "streamed_tokens_per_s": s_rate,
            "first_audio_s": firsts, "first_audio_p50_s": p50, "first_audio_p95_s": p95,
            "mean_flow_batch": mean_batch,
            "flow_alone_streamed_tokens_per_s": alone_flow.map(|a| a.0),
            "flow_alone_first_audio_p50_s": alone_flow.map(|a| a.1),
            "flow_alone_first_audio_p95_s": alone_flow.map(|a| a.2),
        }));
    }
    if !skipped.is_empty() {
        println!("skipped past the {budget:.0} s budget: {skipped:?} requests");
    }
    let gpu_peak = sampler.map(MemorySampler::peak_above_mib);
    println!(
        "(device {}; TF32 {}; {new_tokens} tokens per request; median first audio over all levels {:.0} ms; GPU {} MiB above its context; peak RSS {:.0} MiB; {:?})",
        if on_gpu { "cuda" } else { "cpu" },
        runtime.tuning.tf32,
        median(
            rows.iter()
                .map(|r| r["first_audio_p50_s"].as_f64().unwrap_or(f64::NAN))
                .collect()
        ) * 1e3,
        gpu_peak
            .filter(|_| on_gpu)
            .map_or("-".into(), |p| format!("{p:.0}")),
        ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
        voice
            .counters()
            .into_iter()
            .filter(|(k, _)| k.starts_with("chatterbox_t3") || k.starts_with("chatterbox_s3gen"))
            .collect::<Vec<_>>(),
    );
    Ok(json!({
        "device": if on_gpu { "cuda" } else { "cpu" }, "tf32": runtime.tuning.tf32,
        "threads": runtime.tuning.threads.threads, "new_tokens": new_tokens,
        "slots": decoder.config().max_slots, "positions": decoder.config().positions,
        "levels": rows, "skipped_levels": skipped, "flow_batch_limit": flow_items,
        "gpu_peak_mib": gpu_peak, "load_s": full.load_s,
        "alone_tokens_per_s": alone,
    }))
}
