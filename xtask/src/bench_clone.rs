//! `cargo xtask bench clone [--device cuda]`: cloning a voice from a 10 s reference clip with
//! Chatterbox's encoders at full size (random weights, the same `ve.safetensors` and
//! `s3gen.safetensors` on both sides), ferrovox (decode → `Conditionals`) against upstream's
//! `prepare_conditionals` in the same run; then loading a stored voice from a local voice store,
//! through a fresh handle (read and checksum) and through the in-memory cache.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use ferrovox_audio::{ReferenceClip, ReferenceLimits};
use ferrovox_chatterbox::{Conditionals, VoiceCloner};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_voice_store::{BlockingVoiceStore, NewVoice};
use serde_json::json;

use crate::util::{median, repo_root};

const RATE: u32 = 24_000;

/// A 10 s voice-like clip: a gliding harmonic tone, syllable-rate amplitude and a little
/// noise (a fixed LCG), so every encoder sees non-trivial input.
fn clip() -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..10 * RATE as usize)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let f0 = 140.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let voice: f64 = (1..6)
                .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
                .sum();
            let syllables = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 40) as f64 / (1u64 << 24) as f64) - 0.5;
            (0.25 * voice * syllables + 0.01 * noise) as f32
        })
        .collect()
}

pub fn run(quick: bool, request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let on_gpu = !device.is_cpu();
    let reps = if quick { 1 } else { 5 };
    let dir = std::env::temp_dir().join("ferrovox-bench-clone");
    std::fs::create_dir_all(&dir)?;
    let clip_path = dir.join("clip.wav");
    let mut wav = Vec::new();
    ferrovox_audio::write_wav(&mut wav, &clip(), RATE)?;
    std::fs::write(&clip_path, wav)?;
    let spec = json!({
        "dir": dir, "clip": clip_path, "reps": reps,
        "device": if on_gpu { "cuda" } else { "cpu" },
        "tf32": runtime.tuning.tf32, "threads": runtime.tuning.threads.threads,
    });
    let spec_path = dir.with_extension("json");
    std::fs::write(&spec_path, spec.to_string())?;
    let torch = crate::bench_vits::json_output(
        Command::new(crate::bench_s3gen::bench_python()?)
            .arg(repo_root().join("xtask/bench/clone_torch_bench.py"))
            .arg(&spec_path),
    )
    .context("PyTorch cloning bench")?;

    let load = Instant::now();
    let cloner = VoiceCloner::from_dir(&dir, &device)?;
    let load_s = load.elapsed().as_secs_f64();
    let clone = || -> anyhow::Result<Conditionals> {
        let clip = ReferenceClip::from_path(&clip_path, RATE, &ReferenceLimits::chatterbox())?;
        Ok(cloner.from_clip(&clip, 0.5)?)
    };
    let conditionals = clone()?; // warm-up
    let mut walls = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        clone()?;
        device.synchronize()?;
        walls.push(start.elapsed().as_secs_f64());
    }
    let ours = median(walls.clone());
    let theirs = torch["clone_s"].as_f64().unwrap_or(f64::NAN);

    let store_dir = dir.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    std::fs::create_dir_all(&store_dir)?;
    let location = store_dir.to_string_lossy().into_owned();
    let bytes = conditionals.to_safetensors()?;
    let new_voice = || NewVoice {
        name: "bench".into(),
        family: "chatterbox".into(),
        model_id: "bench".into(),
        model_version: "random-weights".into(),
        encoder_params: json!({"rate": RATE}),
        source_hash: "00".repeat(32),
        duration_s: 10.0,
        loudness_lufs: -20.0,
        conditionals: bytes.clone(),
        consent: None,
    };
    let (meta, _) = BlockingVoiceStore::open(Some(&location))?.add(new_voice())?;
    let (cold, cached) = time_loads(&location, &meta.id, &device, reps)?;
    // The same voice from an S3 server on this machine (moto), as replicas sharing a bucket
    // read it: a fresh handle pays the listing-free GET of metadata and payload.
    let s3 = match crate::moto::Moto::start("bench-voices")? {
        Some(moto) => {
            moto.export_env();
            let location = format!("s3://{}/voices", moto.bucket);
            BlockingVoiceStore::open(Some(&location))?.add(new_voice())?;
            Some(time_loads(&location, &meta.id, &device, reps)?)
        }
        None => None,
    };
    println!(
        "| | ferrovox | PyTorch {} | ferrovox / PyTorch |\n|---|---|---|---|",
        torch["torch"].as_str().unwrap_or("?")
    );
    println!(
        "| clone a 10 s clip (decode → conditionals) | {:.0} ms | {:.0} ms | {:.2}× |",
        ours * 1e3,
        theirs * 1e3,
        theirs / ours
    );
    println!(
        "| load a stored voice ({} KB), local store: fresh handle / cached | {:.2} / {:.2} ms | | |",
        bytes.len() / 1024,
        cold * 1e3,
        cached * 1e3
    );
    if let Some((fresh, warm)) = s3 {
        println!(
            "| load a stored voice, S3 (moto on 127.0.0.1): fresh handle / cached | {:.2} / {:.2} ms | | |",
            fresh * 1e3,
            warm * 1e3
        );
    }
    println!(
        "(device {}; threads {}; encoders load {load_s:.1} s; ferrovox peak RSS {:.0} MiB, PyTorch {:.0} MiB)",
        if on_gpu { "cuda" } else { "cpu" },
        runtime.tuning.threads.threads,
        ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
        torch["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(json!({
        "device": if on_gpu { "cuda" } else { "cpu" },
        "threads": runtime.tuning.threads.threads,
        "ferrovox": {"clone_s": ours, "clone_all": walls, "encoders_load_s": load_s,
            "store_load_fresh_s": cold, "store_load_cached_s": cached, "voice_bytes": bytes.len(),
            "s3_load_fresh_s": s3.map(|s| s.0), "s3_load_cached_s": s3.map(|s| s.1),
            "peak_rss_mib": ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64},
        "torch": torch,
        "ratio_clone": theirs / ours,
    }))
}

/// Median seconds to load voice `id` from the store at `location` as a request's
/// conditionals: through a freshly opened store, then again through the same one (its cache).
fn time_loads(
    location: &str,
    id: &str,
    device: &candle_core::Device,
    reps: usize,
) -> anyhow::Result<(f64, f64)> {
    let (mut fresh, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(3) {
        let start = Instant::now();
        let store = BlockingVoiceStore::open(Some(location))?;
        Conditionals::from_safetensors(&store.get(id)?.conditionals, device)?;
        fresh.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        Conditionals::from_safetensors(&store.get(id)?.conditionals, device)?;
        cached.push(start.elapsed().as_secs_f64());
    }
    Ok((median(fresh), median(cached)))
}
