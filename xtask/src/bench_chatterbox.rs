//! `cargo xtask bench chatterbox [--device cuda]`: Chatterbox at full size with random weights
//! (the same `t3_cfg.safetensors`, `s3gen.safetensors` and inputs on both sides), ferrovox
//! against upstream PyTorch eager on the same device: T3's speech tokens per second with CFG at
//! batch 1, and the time until the first audio of a sentence (upstream generates the sentence
//! whole, then decodes it; ferrovox streams it), with peak memory.
//!
//! The PyTorch side runs under `FERROVOX_BENCH_PYTHON` when set (a Python that already has
//! chatterbox-tts, as on the GPU machine), else the fixtures venv.

use std::time::Instant;

use anyhow::Context;
use candle_core::DType;
use ferrovox_chatterbox::s3gen::{S3Gen, S3GenConfig, SpeakerReference};
use ferrovox_chatterbox::t3::{
    DecodePath, Flow, SamplingOptions, SeededNoise, T3Cond, T3Config, T3,
};
use ferrovox_chatterbox::tokenizer::EnTokenizer;
use ferrovox_chatterbox::{ChatterboxTts, Conditionals, GenerateOptions};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use serde_json::json;

use crate::memory_sampler::MemorySampler;
use crate::util::{median, repo_root};

pub fn run(quick: bool, request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let on_gpu = !device.is_cpu();
    let threads = runtime.tuning.threads.threads;
    let dir = std::env::temp_dir().join("ferrovox-bench-chatterbox");
    // A 3 s sentence is 75 speech tokens; the tokens/s figure runs longer generations.
    let (reps, new_tokens) = match (quick, on_gpu) {
        (true, _) => (1, 30),
        (false, true) => (5, 300),
        (false, false) => (2, 60),
    };
    let spec = json!({
        "dir": dir, "threads": threads, "device": if on_gpu { "cuda" } else { "cpu" },
        "tf32": runtime.tuning.tf32, "reps": reps, "new_tokens": new_tokens,
        "sentence_tokens": 75, "prompt_tokens": 150, "text_tokens": 40,
    });
    let spec_path = dir.with_extension("json");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&spec_path, spec.to_string())?;
    let torch = crate::util::torch_side(
        "t3_torch_bench.py",
        &spec_path,
        &dir.join("t3_inputs.safetensors"),
        "chatterbox",
    )?;

    let sampler = MemorySampler::start(&device);
    let FullSize {
        tts,
        voice,
        text,
        load_s,
    } = FullSize::load(&dir, &device)?;
    let options = |n| GenerateOptions {
        exaggeration: 0.5,
        sampling: SamplingOptions {
            max_new_tokens: n,
            ..SamplingOptions::default()
        },
    };
    // Tokens/s on each decode path: the default (fixed shapes, CUDA graphs on CUDA) and the
    // dynamic one it replaces there.
    let fixed = token_rates(
        tts.t3(),
        &voice.t3,
        &text,
        &options(new_tokens).sampling,
        reps,
    )?;
    let dynamic = if on_gpu {
        let t3 = tts.t3().clone().with_decode_path(DecodePath::Dynamic);
        Some(token_rates(
            &t3,
            &voice.t3,
            &text,
            &options(new_tokens).sampling,
            reps,
        )?)
    } else {
        None
    };
    let (rates, counts) = (fixed.rates.clone(), fixed.counts.clone());
    // On the CPU, the decode step's weight formats side by side, and their error.
    // Reduced precision beside f32: on the CPU the decode step's weight formats, on a GPU the
    // model in bf16 (loaded again from the same file).
    let variants = if on_gpu {
        let bf16 = T3::load(
            &dir.join("t3_cfg.safetensors"),
            &T3Config::default(),
            DType::BF16,
            &device,
        )?;
        vec![
            crate::bench_precision::Variant {
                name: "f32 (TF32 as tuned)".into(),
                bytes_per_weight: 4.0,
                t3: tts.t3().clone(),
            },
            crate::bench_precision::Variant {
                name: "bf16 weights and activations".into(),
                bytes_per_weight: 2.0,
                t3: bf16,
            },
        ]
    } else {
        crate::bench_precision::cpu_variants(tts.t3())?
    };
    let precision = crate::bench_precision::table(
        &variants,
        &voice.t3,
        &text,
        &options(new_tokens).sampling,
        reps,
    )?;
    drop(variants);
    // One untimed stream first, as a server's warm-up request runs one: the first chunk's
    // shapes (this voice's prompt and 25 tokens) are then captured, as they are when serving.
    // The PyTorch side decodes one sentence untimed too.
    tts.stream(
        &text,
        &voice,
        &options(75),
        99,
        &mut SeededNoise::new(199),
        &mut |_| Ok(Flow::Continue),
    )?;
    let mut firsts = Vec::new();
    let mut wholes = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        let mut first = None;
        tts.stream(
            &text,
            &voice,
            &options(75),
            rep as u64,
            &mut SeededNoise::new(200 + rep as u64),
            &mut |piece| {
                if !piece.is_empty() {
                    first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                }
                Ok(Flow::Continue)
            },
        )?;
        firsts.push(first.unwrap_or(f64::NAN));
        wholes.push(start.elapsed().as_secs_f64());
    }
    // Where the first audio's time goes: T3's prefill and first chunk of tokens, then S3Gen's
    // first push (the same number of tokens, so the same captured shapes).
    let chunk = ferrovox_chatterbox::STREAM_CHUNKS[0];
    let (mut t3_firsts, mut s3gen_firsts) = (Vec::new(), Vec::new());
    let codes: Vec<u32> = (0..chunk as u32).map(|i| (i * 97 + 13) % 6561).collect();
    for rep in 0..reps {
        let start = Instant::now();
        tts.generate_tokens(
            &text,
            &voice,
            &options(chunk),
            &mut SeededNoise::new(300 + rep as u64),
        )?;
        device.synchronize()?;
        t3_firsts.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let mut stream = tts.s3gen().stream(&voice.gen, rep as u64)?;
        stream.push(&codes)?;
        s3gen_firsts.push(start.elapsed().as_secs_f64());
    }
    println!(
        "first audio, by stage (median of {reps}): T3 prefill + {chunk} tokens {:.0} ms, S3Gen's first push of {chunk} tokens {:.0} ms",
        median(t3_firsts.clone()) * 1e3,
        median(s3gen_firsts.clone()) * 1e3
    );
    let (_, first_push_stages, line) = crate::util::stage_split(|| {
        let mut stream = tts.s3gen().stream(&voice.gen, 0)?;
        Ok(stream.push(&codes)?)
    })?;
    println!("S3Gen's first push, by stage (synchronized): {line}");
    println!("{}", crate::bench_s3gen::graphs_line(tts.s3gen()));
    let ours = median(rates.clone());
    let theirs = torch["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    let first = median(firsts.clone());
    let their_first = torch["first_audio_s"].as_f64().unwrap_or(f64::NAN);
    let gpu_peak = sampler.map(MemorySampler::peak_above_mib);
    println!(
        "| | ferrovox | PyTorch {} | ferrovox / PyTorch |\n|---|---|---|---|",
        torch["torch"].as_str().unwrap_or("?")
    );
    println!(
        "| T3 tokens/s, CFG, batch 1 ({} tokens) | {ours:.1} ({:.2} ms/token) | {theirs:.1} | {:.2}× |",
        counts.first().copied().unwrap_or(0),
        1e3 / ours,
        ours / theirs
    );
    if let Some(d) = &dynamic {
        println!(
            "| T3 tokens/s, dynamic shapes (no graphs) | {:.1} ({:.2} ms/token) | | fixed path {:.2}× dynamic |",
            d.median(),
            1e3 / d.median(),
            ours / d.median()
        );
    }
    println!(
        "| first audio of a 3 s sentence (75 tokens) | {:.0} ms (streamed; whole {:.2} s) | {:.0} ms (whole sentence, then S3Gen) | {:.1}× sooner |",
        first * 1e3,
        median(wholes.clone()),
        their_first * 1e3,
        their_first / first
    );
    println!(
        "(device {}; threads {threads}; TF32 {}; CPU step weights {}; model load {load_s:.1} s; ferrovox peak RSS {:.0} MiB, PyTorch {:.0} MiB{})",
        if on_gpu { "cuda" } else { "cpu" },
        runtime.tuning.tf32,
        tts.t3().step_format().name(),
        ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
        torch["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        match gpu_peak.filter(|_| on_gpu) {
            Some(p) => format!(
                "; GPU: ferrovox {p:.0} MiB above its CUDA context, PyTorch max allocated {:.0} MiB / reserved {:.0} MiB",
                torch["gpu_max_allocated_mib"].as_f64().unwrap_or(f64::NAN),
                torch["gpu_max_reserved_mib"].as_f64().unwrap_or(f64::NAN)
            ),
            None => String::new(),
        }
    );
    Ok(json!({
        "device": if on_gpu { "cuda" } else { "cpu" }, "tf32": runtime.tuning.tf32, "threads": threads,
        "ferrovox": {"tokens_per_s": ours, "tokens_per_s_all": rates, "tokens": counts,
            "first_audio_s": first, "first_audio_all": firsts, "stream_wall_s": wholes,
            "first_chunk_t3_s": t3_firsts, "first_chunk_s3gen_s": s3gen_firsts,
            "first_push_stages": first_push_stages,
            "gpu_peak_mib": gpu_peak, "load_s": load_s,
            "decode_graphs": tts.t3().decode_graphs().graphs(),
            "decode_graph_fallbacks": tts.t3().decode_graphs().fallbacks(),
            "dynamic_tokens_per_s": dynamic.as_ref().map(TokenRates::median),
            "dynamic_tokens_per_s_all": dynamic.as_ref().map(|d| d.rates.clone()),
            "peak_rss_mib": ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64},
        "cpu_step_weights": tts.t3().step_format().name(),
        "precision": precision,
        "torch": torch,
        "ratio_tokens_per_s": ours / theirs,
        "ratio_first_audio": their_first / first,
    }))
}

/// The full-size model with random weights and its inputs, as `t3_torch_bench.py` wrote them
/// into the bench directory.
pub struct FullSize {
    pub tts: ChatterboxTts,
    pub voice: Conditionals,
    pub text: Vec<u32>,
    pub load_s: f64,
}

impl FullSize {
    pub fn load(dir: &std::path::Path, device: &candle_core::Device) -> anyhow::Result<Self> {
        let load = Instant::now();
        let mut t3 = T3::load(
            &dir.join("t3_cfg.safetensors"),
            &T3Config::default(),
            DType::F32,
            device,
        )?;
        // The weights decode steps read and the products, as `ChatterboxTts::from_dir` sets
        // them (bf16 products only on a CPU with AVX-512 BF16).
        t3.pack_steps(ferrovox_chatterbox::cpu_step_weights()?)?;
        let bf16 = ferrovox_chatterbox::cpu_bf16_products()?;
        t3.bf16_products(bf16)?;
        let mut s3gen = S3Gen::load(
            &dir.join("s3gen.safetensors"),
            &S3GenConfig::default(),
            device,
        )?;
        s3gen.bf16_products(bf16)?;
        let load_s = load.elapsed().as_secs_f64();
        let inputs = candle_core::safetensors::load(dir.join("t3_inputs.safetensors"), device)?;
        let get = |k: &str| {
            inputs
                .get(k)
                .cloned()
                .with_context(|| format!("inputs lack {k}"))
        };
        let text: Vec<u32> = get("text_tokens")?
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1()?;
        let voice = Conditionals {
            t3: T3Cond {
                speaker_emb: get("speaker_emb")?,
                cond_prompt_speech_tokens: Some(get("cond_prompt_speech_tokens")?),
                emotion_adv: 0.5,
            },
            gen: SpeakerReference {
                prompt_tokens: get("prompt_token")?
                    .flatten_all()?
                    .to_dtype(DType::U32)?
                    .to_vec1()?,
                prompt_feat: get("prompt_feat")?,
                xvector: get("embedding")?,
            },
        };
        // The released tokenizer.json is not here; the fixtures' stands in (the text's ids are
        // given, the tokenizer only completes the model).
        let tokenizer = EnTokenizer::from_file(
            &repo_root().join("models/chatterbox/tests/fixtures/t3_tokenizer_vocab.json"),
        )?;
        let tts = ChatterboxTts::new(t3, s3gen, tokenizer, voice.clone(), device)?;
        Ok(Self {
            tts,
            voice,
            text,
            load_s,
        })
    }
}

/// Tokens per second of `reps` generations.
struct TokenRates {
    rates: Vec<f64>,
    counts: Vec<usize>,
}

impl TokenRates {
    fn median(&self) -> f64 {
        median(self.rates.clone())
    }
}

/// Times `reps` generations of `options.max_new_tokens` after one untimed generation of the
/// same length (kernel modules, cuBLAS handles, the cache's allocation, every window's graph).
fn token_rates(
    t3: &T3,
    cond: &T3Cond,
    text: &[u32],
    options: &SamplingOptions,
    reps: usize,
) -> anyhow::Result<TokenRates> {
    t3.generate(
        cond,
        text,
        options,
        &mut SeededNoise::new(0),
        8,
        &mut |_| Ok(Flow::Continue),
    )?;
    let mut rates = Vec::new();
    let mut counts = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        let out = t3.generate(
            cond,
            text,
            options,
            &mut SeededNoise::new(100 + rep as u64),
            8,
            &mut |_| Ok(Flow::Continue),
        )?;
        let wall = start.elapsed().as_secs_f64();
        counts.push(out.tokens.len());
        rates.push(out.tokens.len() as f64 / wall);
    }
    Ok(TokenRates { rates, counts })
}
