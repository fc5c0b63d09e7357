//! `cargo xtask bench s3gen [--device cuda]`: Chatterbox's S3Gen at full size (random weights,
//! the same file and inputs on both sides) in ferrovox against upstream PyTorch eager on the same
//! device (CPU: same threads; CUDA: TF32 on or off in both as the device layer chose).
//! The batch case runs ferrovox's batched CFM solve against upstream's one-utterance
//! `inference` called once per item (upstream has no batched path).
//!
//! The PyTorch side runs under `FERROVOX_BENCH_PYTHON` when set (a Python that already has
//! chatterbox-tts, as on the GPU machine), else the fixtures venv.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use ferrovox_chatterbox::{S3Gen, S3GenConfig, SpeakerReference};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use serde_json::json;

use crate::memory_sampler::MemorySampler;
use crate::util::{stage_line, stage_split};

/// What `s3gen_torch_bench.py` wrote to `inputs.safetensors`: the speaker reference and the
/// tokens of every case, so both engines see the same inputs.
struct BenchInputs {
    tensors: HashMap<String, Tensor>,
    reference: SpeakerReference,
}

impl BenchInputs {
    fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let tensors = candle_core::safetensors::load(dir.join("inputs.safetensors"), device)?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .with_context(|| format!("inputs lack {k}"))
        };
        let reference = SpeakerReference {
            prompt_tokens: ids(&get("prompt_tokens")?)?,
            prompt_feat: get("prompt_feat")?.to_dtype(DType::F32)?,
            xvector: get("xvector")?.to_dtype(DType::F32)?,
        };
        Ok(Self { tensors, reference })
    }

    /// The tokens of case `name`.
    fn tokens(&self, name: &str) -> anyhow::Result<Vec<u32>> {
        ids(self
            .tensors
            .get(&format!("tokens.{name}"))
            .with_context(|| format!("inputs lack tokens.{name}"))?)
    }
}

fn ids(t: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?)
}

pub fn bench_python() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("FERROVOX_BENCH_PYTHON") {
        Some(p) => Ok(p.into()),
        None => crate::fixtures::ensure_chatterbox_venv(),
    }
}

/// How many shapes S3Gen holds as CUDA graphs (estimator, HiFT decode) and why any stayed eager.
pub fn graphs_line(model: &S3Gen) -> String {
    let (estimator, hift) = (model.flow().decoder().graphs(), model.hift().graphs());
    let fallbacks: Vec<String> = [estimator.fallbacks(), hift.fallbacks()].concat();
    format!(
        "S3Gen graphs held: estimator {}, HiFT decode {}; shapes left eager: {}",
        estimator.graphs(),
        hift.graphs(),
        if fallbacks.is_empty() {
            "none".into()
        } else {
            fallbacks.join("; ")
        }
    )
}

pub fn run(quick: bool, request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let on_gpu = !device.is_cpu();
    let threads = runtime.tuning.threads.threads;
    let dir = std::env::temp_dir().join("ferrovox-bench-s3gen");
    let cases: Vec<(&str, usize)> = if quick {
        vec![("3s", 75)]
    } else {
        vec![("3s", 75), ("10s", 250)]
    };
    // A GPU call takes a fraction of a second and its time varies with launch jitter, so it
    // gets more repeats than the CPU's multi-second calls.
    let (reps, batch) = match (quick, on_gpu) {
        (true, _) => (1, 2),
        (false, true) => (10, 8),
        (false, false) => (2, 8),
    };
    let spec = json!({
        "dir": dir, "threads": threads, "device": if on_gpu { "cuda" } else { "cpu" },
        "tf32": runtime.tuning.tf32, "reps": reps, "prompt_tokens": 50, "batch": batch,
        "batch_case": cases[0].0,
        "cases": cases.iter().map(|(n, t)| (n.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
    });
    let spec_path = dir.with_extension("json");
    std::fs::write(&spec_path, spec.to_string())?;
    let torch = crate::util::torch_side(
        "s3gen_torch_bench.py",
        &spec_path,
        &dir.join("s3gen.safetensors"),
        "s3gen",
    )?;

    let sampler = MemorySampler::start(&device);
    let load = Instant::now();
    let mut model = S3Gen::load(
        &dir.join("s3gen.safetensors"),
        &S3GenConfig::default(),
        &device,
    )?;
    // The products the TTS models choose here: bf16 inputs on a CPU with AVX-512 BF16.
    let bf16 = !on_gpu
        && ferrovox_chatterbox::cpu_bf16_products()?
        && ferrovox_kernels::bf16_products_available();
    model.bf16_products(bf16)?;
    let load_s = load.elapsed().as_secs_f64();
    let inputs = BenchInputs::load(&dir, &device)?;
    let reference = &inputs.reference;
    let mut rows = Vec::new();
    let mut results = serde_json::Map::new();
    let mut splits = Vec::new();
    for (name, _) in &cases {
        let tokens = inputs.tokens(name)?;
        let mut walls = Vec::new();
        let mut audio_s = 0.0;
        for rep in 0..=reps {
            let start = Instant::now();
            // The audio comes back as host samples, so the GPU work is finished here.
            let audio = model.synthesize(&tokens, reference, rep as u64)?;
            if rep > 0 {
                walls.push(start.elapsed().as_secs_f64());
            }
            audio_s = audio.len() as f64 / 24_000.0;
        }
        walls.sort_by(f64::total_cmp);
        let ours = walls[walls.len() / 2];
        let theirs = torch["cases"][name]["wall_s"].as_f64().unwrap_or(f64::NAN);
        rows.push((name.to_string(), audio_s, ours, theirs));
        let (_, stages, line) = stage_split(|| Ok(model.synthesize(&tokens, reference, 0)?))?;
        let torch_stages = &torch["cases"][name]["stages"];
        splits.push(format!(
            "stages, {name}: ferrovox {line}; PyTorch {}",
            stage_line(torch_stages)
        ));
        results.insert(
            name.to_string(),
            json!({"audio_s": audio_s, "ferrovox_wall_s": ours, "ferrovox_walls": walls, "torch_wall_s": theirs,
                   "ferrovox_stages": stages, "torch_stages": torch_stages}),
        );
    }
    let tokens = inputs.tokens(cases[0].0)?;
    let items: Vec<(&[u32], &SpeakerReference)> =
        (0..batch).map(|_| (tokens.as_slice(), reference)).collect();
    let start = Instant::now();
    let audio_s: f64 = model
        .synthesize_batch(&items, 0)?
        .iter()
        .map(|a| a.len() as f64 / 24_000.0)
        .sum();
    let ours = start.elapsed().as_secs_f64();
    let theirs = torch["cases"]["batch"]["wall_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    rows.push((format!("{batch} × {}", cases[0].0), audio_s, ours, theirs));
    results.insert(
        "batch".into(),
        json!({"items": batch, "case": cases[0].0, "audio_s": audio_s, "ferrovox_wall_s": ours, "torch_wall_s": theirs}),
    );
    let products = if bf16 {
        Some(bf16_against_f32(
            &dir, &device, &model, &inputs, cases[0].0,
        )?)
    } else {
        None
    };
    println!("| case | audio s | ferrovox RTF | PyTorch RTF | ferrovox / PyTorch |\n|---|---|---|---|---|");
    for (name, audio, ours, theirs) in &rows {
        println!(
            "| {name} | {audio:.1} | {:.2}× | {:.2}× | {:.2}× |",
            audio / ours,
            audio / theirs,
            theirs / ours
        );
    }
    for line in &splits {
        println!("{line}");
    }
    println!("{}", graphs_line(&model));
    match &products {
        Some(p) => println!(
            "(products on bf16 inputs: {} against {} ms with f32 products ({:.2}×); audio against f32's, RMS relative {:.2e}, max |diff| {:.2e})",
            fmt_ms(&p["bf16_wall_s"]),
            fmt_ms(&p["f32_wall_s"]),
            p["f32_wall_s"].as_f64().unwrap_or(f64::NAN) / p["bf16_wall_s"].as_f64().unwrap_or(f64::NAN),
            p["audio_rms_rel"].as_f64().unwrap_or(f64::NAN),
            p["audio_max_abs"].as_f64().unwrap_or(f64::NAN),
        ),
        None => println!("(f32 products)"),
    }
    let gpu_peak = sampler.map(MemorySampler::peak_above_mib);
    println!(
        "({}; PyTorch {} peak RSS {:.0} MiB, ferrovox peak RSS {:.0} MiB; model load {load_s:.1} s)",
        if on_gpu {
            format!("{}, TF32 {}", runtime.selection.name, if runtime.tuning.tf32 { "on" } else { "off" })
        } else {
            format!("{threads} threads")
        },
        torch["torch"],
        torch["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64
    );
    if on_gpu {
        println!(
            "GPU memory: PyTorch max reserved {:.0} MiB; ferrovox peak above its CUDA context {:.0} MiB",
            torch["gpu_max_reserved_mib"].as_f64().unwrap_or(f64::NAN),
            gpu_peak.unwrap_or(f64::NAN)
        );
    }
    Ok(
        json!({"device": if on_gpu { "cuda" } else { "cpu" }, "tf32": runtime.tuning.tf32,
        "threads": threads, "torch": torch, "ferrovox": results, "load_s": load_s,
        "bf16_products": products,
        "ferrovox_gpu_peak_mib": gpu_peak}),
    )
}

fn fmt_ms(v: &serde_json::Value) -> String {
    format!("{:.0}", v.as_f64().unwrap_or(f64::NAN) * 1e3)
}

/// The `case` synthesized with f32 products (a second copy of the weights) against `model`'s
/// bf16 ones, same draws: wall times and the audio's error.
fn bf16_against_f32(
    dir: &Path,
    device: &Device,
    model: &S3Gen,
    inputs: &BenchInputs,
    case: &str,
) -> anyhow::Result<serde_json::Value> {
    let exact = S3Gen::load(
        &dir.join("s3gen.safetensors"),
        &S3GenConfig::default(),
        device,
    )?;
    let tokens = inputs.tokens(case)?;
    let time = |m: &S3Gen| -> anyhow::Result<(f64, Vec<f32>)> {
        m.synthesize(&tokens, &inputs.reference, 0)?;
        let start = Instant::now();
        let audio = m.synthesize(&tokens, &inputs.reference, 0)?;
        Ok((start.elapsed().as_secs_f64(), audio))
    };
    let (f32_s, want) = time(&exact)?;
    let (bf16_s, got) = time(model)?;
    let errors = |got: &[f32], want: &[f32]| {
        let (mut sq, mut ref_sq, mut max, mut ref_max) = (0f64, 0f64, 0f32, 0f32);
        for (a, b) in got.iter().zip(want) {
            sq += f64::from(a - b).powi(2);
            ref_sq += f64::from(*b).powi(2);
            max = max.max((a - b).abs());
            ref_max = ref_max.max(b.abs());
        }
        (
            (sq / ref_sq.max(f64::MIN_POSITIVE)).sqrt(),
            max,
            max / ref_max,
        )
    };
    let (audio_rms, audio_max, _) = errors(&got, &want);
    // The flow's mel alone, same noise: what the products change before HiFT.
    let frames = exact.noise_frames(&inputs.reference, tokens.len());
    let noise = Tensor::randn(0f32, 1.0, (1, 80, frames), device)?;
    let mel = |m: &S3Gen| -> anyhow::Result<Vec<f32>> {
        Ok(m.mel(&tokens, &inputs.reference, &noise)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let (mel_rms, _, mel_max_rel) = errors(&mel(model)?, &mel(&exact)?);
    println!(
        "(products on bf16 inputs: mel against f32's, RMS relative {mel_rms:.2e}, max |diff| / max |mel| {mel_max_rel:.2e})"
    );
    Ok(
        json!({"case": case, "f32_wall_s": f32_s, "bf16_wall_s": bf16_s,
        "audio_rms_rel": audio_rms, "audio_max_abs": audio_max,
        "mel_rms_rel": mel_rms, "mel_max_abs_over_max": mel_max_rel}),
    )
}

/// `cargo xtask bench s3gen-stream`: time to first audio of a chunked S3Gen synthesis at full
/// size (the weights and inputs `bench s3gen` wrote), against the one-shot time of the same
/// tokens. Chunks of 25 tokens (1 s of speech) arrive as a token model would emit them.
pub fn stream(request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let dir = std::env::temp_dir().join("ferrovox-bench-s3gen");
    let weights = dir.join("s3gen.safetensors");
    anyhow::ensure!(
        weights.is_file(),
        "{} is missing: run `cargo xtask bench s3gen` first",
        weights.display()
    );
    let model = S3Gen::load(&weights, &S3GenConfig::default(), &device)?;
    let inputs = BenchInputs::load(&dir, &device)?;
    let reference = &inputs.reference;
    let tokens = inputs.tokens("3s")?;
    model.synthesize(&tokens[..10], reference, 0)?;
    let start = Instant::now();
    let whole = model.synthesize(&tokens, reference, 0)?;
    let one_shot = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut stream = model.stream(reference, 0)?;
    let (mut first, mut pushed, mut emitted) = (None, 0, 0usize);
    for chunk in tokens.chunks(25) {
        let audio = stream.push(chunk)?;
        pushed += chunk.len();
        emitted += audio.len();
        if !audio.is_empty() && first.is_none() {
            first = Some((start.elapsed().as_secs_f64(), pushed, audio.len()));
        }
    }
    emitted += stream.finish()?.len();
    let streamed = start.elapsed().as_secs_f64();
    let (ttfa, tokens_in, first_samples) = first.unwrap_or((streamed, pushed, emitted));
    println!(
        "S3Gen, {} tokens ({:.1} s of audio) in chunks of 25: first audio after {ttfa:.2} s \
         ({tokens_in} tokens in, {:.2} s of audio out); whole stream {streamed:.2} s; one-shot \
         {one_shot:.2} s (on {})",
        tokens.len(),
        whole.len() as f64 / 24_000.0,
        first_samples as f64 / 24_000.0,
        if device.is_cpu() {
            format!("{} threads", runtime.tuning.threads.threads)
        } else {
            runtime.selection.name.clone()
        }
    );
    anyhow::ensure!(
        emitted == whole.len(),
        "streamed {emitted} samples, one-shot {}",
        whole.len()
    );
    Ok(json!({
        "tokens": tokens.len(), "chunk_tokens": 25, "ttfa_s": ttfa, "first_chunk_tokens": tokens_in,
        "first_chunk_audio_s": first_samples as f64 / 24_000.0, "stream_total_s": streamed,
        "one_shot_s": one_shot, "threads": runtime.tuning.threads.threads,
        "device": if device.is_cpu() { "cpu" } else { "cuda" },
    }))
}
