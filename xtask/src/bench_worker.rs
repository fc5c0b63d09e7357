//! `xtask bench-worker SPEC`: one engine configuration measured in a process of its own, so
//! the thread pool, the allocator state and the peak RSS belong to that configuration alone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::PiperVoice;
use ferrovox_vits::{SeededNoise, StageTimings, SynthesisParams, TokenBatch, VitsModel};
use serde_json::{json, Value};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let path = args
        .first()
        .context("usage: xtask bench-worker SPEC_JSON")?;
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    if !spec["kernels"].as_bool().unwrap_or(true) {
        std::env::set_var("FERROVOX_CPU_KERNELS", "0");
    }
    let threads = spec["threads"].as_u64().context("threads")? as usize;
    let tuning = TuningConfig {
        num_threads: Some(threads),
        ..Default::default()
    };
    let runtime = Runtime::init(&DeviceRequest::Cpu, &tuning)?;
    let reps = spec["reps"].as_u64().unwrap_or(5) as usize;
    let cases: Vec<(String, String)> = spec["cases"]
        .as_object()
        .context("cases")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let result = match spec["model"].as_str() {
        Some("piper") => piper_cases(&spec, &runtime, &cases, reps)?,
        Some("mms") => mms_cases(&spec, &cases, reps)?,
        other => anyhow::bail!("unknown model {other:?}"),
    };
    println!("{result}");
    Ok(())
}

pub fn stages_json(t: &StageTimings) -> Value {
    json!({
        "text_encoder_s": t.text_encoder.as_secs_f64(),
        "duration_s": t.duration.as_secs_f64(),
        "flow_s": t.flow.as_secs_f64(),
        "decoder_s": t.decoder.as_secs_f64(),
    })
}

fn add(a: &mut StageTimings, b: &StageTimings) {
    a.text_encoder += b.text_encoder;
    a.duration += b.duration;
    a.flow += b.flow;
    a.decoder += b.decoder;
}

/// Per-call mean of stage times summed over `reps` calls.
fn mean(sum: &StageTimings, reps: usize) -> StageTimings {
    let n = reps.max(1) as u32;
    StageTimings {
        text_encoder: sum.text_encoder / n,
        duration: sum.duration / n,
        flow: sum.flow / n,
        decoder: sum.decoder / n,
    }
}

fn piper_cases(
    spec: &Value,
    runtime: &Runtime,
    cases: &[(String, String)],
    reps: usize,
) -> anyhow::Result<Value> {
    let onnx = PathBuf::from(spec["onnx"].as_str().context("onnx")?);
    let config = PathBuf::from(spec["config"].as_str().context("config")?);
    let start = Instant::now();
    let piper = std::sync::Arc::new(PiperVoice::load("bench", &onnx, &config, runtime.device())?);
    // The engine's one path, as `ferrovox say` takes it.
    let voice = ferrovox_engine::Voice::new(piper.clone(), None);
    let model = piper.model();
    let load_s = start.elapsed().as_secs_f64();
    let params = SynthesisParams::from_config(model.config());
    let rate = model.config().sampling_rate as f64;
    let mut out = serde_json::Map::new();
    for (name, text) in cases {
        let (mut walls, mut firsts) = (Vec::new(), Vec::new());
        let mut audio_s = 0.0;
        let mut stages = StageTimings::default();
        for rep in 0..=reps {
            let mut noise = SeededNoise::new(rep as u64);
            let t0 = Instant::now();
            let mut first = None;
            let mut samples = 0usize;
            let mut rep_stages = StageTimings::default();
            // The engine's own front end, as `ferrovox say` streams: phonemize, then each
            // sentence in turn, timed stage by stage.
            for unit in voice.prepare(text, &Default::default())? {
                let batch = TokenBatch::new(&[unit.ids], 0, runtime.device())?;
                let (o, t) = model.forward_timed(&batch, None, &params, &mut noise)?;
                samples += o.audio(0)?.len();
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                add(&mut rep_stages, &t);
            }
            if rep == 0 {
                continue;
            }
            walls.push(t0.elapsed().as_secs_f64());
            firsts.push(first.unwrap_or_default());
            audio_s = samples as f64 / rate;
            add(&mut stages, &rep_stages);
        }
        // Time to first audio as `ferrovox say` streams it: the engine's stream, whose first
        // unit decodes its opening frames ahead of the rest.
        let mut streamed = Vec::new();
        for rep in 0..=reps {
            let options = ferrovox_engine::SynthesisOptions {
                seed: rep as u64,
                ..Default::default()
            };
            let t0 = Instant::now();
            let mut first = None;
            voice.stream(text, &options, &mut |_| {
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                Ok(())
            })?;
            if rep > 0 {
                streamed.push(first.unwrap_or_default());
            }
        }
        out.insert(
            name.clone(),
            json!({"wall_s": walls, "first_audio_s": streamed, "first_unit_s": firsts,
                   "audio_s": audio_s, "stages": stages_json(&mean(&stages, reps))}),
        );
    }
    Ok(json!({
        "engine": "ferrovox",
        "load_s": load_s,
        "peak_rss": ferrovox_device::memory::peak_rss(),
        "threads": runtime.tuning.threads.threads,
        "cases": out,
    }))
}

fn mms_cases(spec: &Value, cases: &[(String, String)], reps: usize) -> anyhow::Result<Value> {
    let dir = PathBuf::from(spec["dir"].as_str().context("dir")?);
    let start = Instant::now();
    let model = VitsModel::from_transformers_dir(&dir, &Device::Cpu)?.model;
    let load_s = start.elapsed().as_secs_f64();
    let ids: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json"))?)?;
    let params = SynthesisParams {
        noise_scale: 0.0,
        noise_scale_duration: 0.0,
        length_scale: 1.0,
    };
    let mut out = serde_json::Map::new();
    for (name, _) in cases {
        let seq: Vec<u32> = serde_json::from_value(ids[name].clone()).with_context(|| {
            format!(
                "no token ids for case {name:?} in {} (written by mms_torch_bench.py)",
                dir.join("ids.json").display()
            )
        })?;
        let batch = TokenBatch::new(&[seq], 0, &Device::Cpu)?;
        let mut walls = Vec::new();
        let mut audio_s = 0.0;
        let mut stages = StageTimings::default();
        for rep in 0..=reps {
            let t0 = Instant::now();
            let (o, t) = model.forward_timed(&batch, None, &params, &mut SeededNoise::new(0))?;
            if rep > 0 {
                walls.push(t0.elapsed().as_secs_f64());
                add(&mut stages, &t);
            }
            audio_s = o.sample_lengths[0] as f64 / model.config().sampling_rate as f64;
        }
        out.insert(
            name.clone(),
            json!({"wall_s": walls, "audio_s": audio_s, "stages": stages_json(&mean(&stages, reps))}),
        );
    }
    Ok(json!({
        "engine": "ferrovox-mms",
        "load_s": load_s,
        "peak_rss": ferrovox_device::memory::peak_rss(),
        "threads": rayon::current_num_threads(),
        "cases": out,
    }))
}
