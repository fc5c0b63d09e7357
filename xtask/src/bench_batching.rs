//! `cargo xtask bench batching`: 8 clients at once, each speaking the paragraph sentence by
//! sentence, through the engine's batcher with batching on (up to 8 units per batch) and off
//! (one unit per batch): throughput as audio seconds per wall second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{open_voice, Batcher, BatcherConfig, SynthesisOptions, TtsModel};
use serde_json::json;

fn run_clients(
    voice: &Arc<dyn TtsModel>,
    config: BatcherConfig,
    clients: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let batcher = Arc::new(Batcher::new(voice.clone(), config));
    let units = ferrovox_engine::Voice::new(voice.clone(), None)
        .prepare(crate::bench_texts::PARAGRAPH, &SynthesisOptions::default())?;
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (b, units) = (batcher.clone(), units.clone());
            std::thread::spawn(move || -> Result<usize, ferrovox_engine::EngineError> {
                let options = SynthesisOptions {
                    seed: c as u64,
                    ..Default::default()
                };
                let mut samples = 0;
                for unit in units {
                    samples += b
                        .synthesize_units(vec![unit], options.clone())?
                        .concat()
                        .len();
                }
                Ok(samples)
            })
        })
        .collect();
    let mut samples = 0;
    for h in handles {
        samples += h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    let wall = start.elapsed().as_secs_f64();
    Ok((
        samples as f64 / voice.sample_rate() as f64,
        wall,
        batcher.stats().largest_batch,
    ))
}

pub fn run() -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(&DeviceRequest::Cpu, &TuningConfig::from_env()?)?;
    let voice = open_voice(ferrovox_voices::DEFAULT_VOICE, runtime.device())?;
    let clients = 8;
    let on = BatcherConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(10),
        queue_capacity: 64,
    };
    let off = BatcherConfig {
        max_batch: 1,
        max_wait: Duration::ZERO,
        queue_capacity: 64,
    };
    // Warm-up, then each mode twice, alternating.
    run_clients(&voice, off, 2)?;
    let mut rows = Vec::new();
    for _ in 0..2 {
        for (name, config) in [("off", off), ("on", on)] {
            let (audio, wall, largest) = run_clients(&voice, config, clients)?;
            rows.push((name, audio, wall, largest));
        }
    }
    let best = |mode: &str| {
        rows.iter()
            .filter(|r| r.0 == mode)
            .map(|r| r.1 / r.2)
            .fold(0.0, f64::max)
    };
    println!("| batching | clients | audio s | wall s | audio s per wall s | largest batch |\n|---|---|---|---|---|---|");
    for (name, audio, wall, largest) in &rows {
        println!(
            "| {name} | {clients} | {audio:.1} | {wall:.2} | {:.1} | {largest} |",
            audio / wall
        );
    }
    let ratio = best("on") / best("off");
    println!(
        "\nthroughput with batching on / off: {ratio:.2}× ({} threads)",
        runtime.tuning.threads.threads
    );
    Ok(json!({
        "clients": clients,
        "threads": runtime.tuning.threads.threads,
        "runs": rows.iter().map(|r| json!({"batching": r.0, "audio_s": r.1, "wall_s": r.2, "largest_batch": r.3})).collect::<Vec<_>>(),
        "ratio_on_off": ratio,
    }))
}
