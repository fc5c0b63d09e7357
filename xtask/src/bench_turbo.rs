//! `cargo xtask bench chatterbox-turbo | chatterbox-nano [--device cuda]`: Chatterbox Turbo
//! (or Nano) at full size with random weights (the same `t3_turbo_v1.safetensors` or
//! `t3_nano_v1.safetensors`, `s3gen_meanflow.safetensors` and inputs on both sides), ferrovox
//! against upstream PyTorch eager on the same device: T3's tokens per second (GPT-2 medium or
//! small, no guidance row), S3Gen's meanflow decoder on a 3 s sentence in 2 steps and in 1, the
//! real-time factor of the sentence, peak memory.

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use ferrovox_chatterbox::s3gen::{S3Gen, S3GenConfig, SpeakerReference};
use ferrovox_chatterbox::t3::{Flow, SeededNoise, T3Cond, T3Config, T3Turbo, TurboOptions};
use ferrovox_chatterbox::{RowFormat, TurboSize};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use serde_json::json;

use crate::util::median;

/// Speech tokens of the timed sentence (3 s at 25 a second), before the 3 silence tokens.
const SENTENCE: usize = 75;
/// Speech tokens of the timed paragraph (10 s): the sentence's repeated.
const PARAGRAPH: usize = 250;

pub fn run(
    quick: bool,
    request: &DeviceRequest,
    size: TurboSize,
) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    let on_gpu = !device.is_cpu();
    // The products the TTS loads on this machine: bf16 inputs on a CPU with AVX-512 BF16.
    let bf16 = !on_gpu
        && ferrovox_chatterbox::cpu_bf16_products()?
        && ferrovox_kernels::bf16_products_available();
    let threads = runtime.tuning.threads.threads;
    let nano = size == TurboSize::Nano;
    let dir = std::env::temp_dir().join(if nano {
        "ferrovox-bench-nano"
    } else {
        "ferrovox-bench-turbo"
    });
    let (reps, new_tokens) = match (quick, on_gpu) {
        (true, _) => (1, 20),
        (false, true) => (5, 300),
        (false, false) => (2, 60),
    };
    let spec = json!({
        "dir": dir, "threads": threads, "device": if on_gpu { "cuda" } else { "cpu" },
        "tf32": runtime.tuning.tf32, "reps": reps, "new_tokens": new_tokens,
        "sentence_tokens": SENTENCE, "paragraph_tokens": PARAGRAPH, "prompt_tokens": 375, "text_tokens": 40, "nano": nano,
    });
    let spec_path = dir.with_extension("json");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&spec_path, spec.to_string())?;
    let torch = crate::util::torch_side(
        "turbo_torch_bench.py",
        &spec_path,
        &dir.join("turbo_inputs.safetensors"),
        if nano {
            "chatterbox-nano"
        } else {
            "chatterbox-turbo"
        },
    )?;

    let load = Instant::now();
    let t3 = T3Turbo::load(
        &dir.join(size.t3_file()),
        &T3Config::turbo(),
        &size.gpt2(),
        DType::F32,
        &device,
    )?;
    let s3gen_of = |steps: usize| -> anyhow::Result<S3Gen> {
        let mut cfg = S3GenConfig::turbo();
        cfg.flow.cfm.n_timesteps = steps;
        let mut s3gen = S3Gen::load(&dir.join("s3gen_meanflow.safetensors"), &cfg, &device)?;
        s3gen.bf16_products(bf16)?;
        Ok(s3gen)
    };
    let (two, one) = (s3gen_of(2)?, s3gen_of(1)?);
    let load_s = load.elapsed().as_secs_f64();
    let inputs = candle_core::safetensors::load(dir.join("turbo_inputs.safetensors"), &device)?;
    let get = |k: &str| {
        inputs
            .get(k)
            .cloned()
            .with_context(|| format!("inputs lack {k}"))
    };
    let ids = |t: Tensor| -> anyhow::Result<Vec<u32>> {
        Ok(t.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?)
    };
    let cond = T3Cond {
        speaker_emb: get("speaker_emb")?,
        cond_prompt_speech_tokens: Some(get("cond_prompt_speech_tokens")?),
        emotion_adv: 0.0,
    };
    let text = ids(get("text_tokens")?)?;
    let reference = SpeakerReference {
        prompt_tokens: ids(get("prompt_token")?)?,
        prompt_feat: get("prompt_feat")?,
        xvector: get("embedding")?,
    };
    let mut sentence = ids(get("sentence")?)?;
    sentence.extend([ferrovox_chatterbox::S3GEN_SILENCE; 3]);

    // The decode steps' weight formats (on the CPU), each with its logits' error against f32
    // over the same steps; the default first.
    let formats: Vec<RowFormat> = if on_gpu {
        vec![RowFormat::F32]
    } else {
        vec![
            ferrovox_chatterbox::cpu_step_weights()?,
            RowFormat::F32,
            RowFormat::Bf16,
        ]
    };
    let steps = step_tokens(&t3, &cond, &text)?;
    let reference_logits = step_logits(&t3, &cond, &text, &steps)?;
    let mut by_format = Vec::new();
    for (i, format) in formats.iter().enumerate() {
        let mut packed = t3.clone();
        packed.pack_steps(*format)?;
        // The default (first) variant as `TurboTts` loads it: its prefill's products on bf16
        // inputs where the CPU has AVX-512 BF16.
        packed.bf16_products(i == 0 && bf16)?;
        let generate = |n: usize, seed: u64| -> anyhow::Result<usize> {
            let options = TurboOptions {
                max_new_tokens: n,
                ..TurboOptions::default()
            };
            let mut noise = SeededNoise::new(seed);
            let out = packed.generate(&cond, &text, &options, &mut noise, &mut |_| {
                Ok(Flow::Continue)
            })?;
            Ok(out.tokens.len() + usize::from(out.stopped))
        };
        generate(8, 0)?;
        let (mut rates, mut counts) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let start = Instant::now();
            let n = generate(new_tokens, 100 + rep as u64)?;
            rates.push(n as f64 / start.elapsed().as_secs_f64());
            counts.push(n);
        }
        let mut firsts = Vec::new();
        for rep in 0..reps {
            let start = Instant::now();
            generate(1, 200 + rep as u64)?;
            firsts.push(start.elapsed().as_secs_f64());
        }
        let logits = step_logits(&packed, &cond, &text, &steps)?;
        let (max_rel, rms_rel) = relative_error(&logits, &reference_logits);
        by_format.push(json!({
            "format": format.name(), "tokens_per_s": median(rates.clone()),
            "first_token_s": median(firsts),
            "tokens_per_s_all": rates, "tokens": counts,
            "logits_max_abs_over_max": max_rel, "logits_rms_rel": rms_rel,
        }));
    }
    let rates: Vec<f64> = serde_json::from_value(by_format[0]["tokens_per_s_all"].clone())?;
    let counts: Vec<usize> = serde_json::from_value(by_format[0]["tokens"].clone())?;
    let mut decode = serde_json::Map::new();
    for (steps, s3gen) in [(2usize, &two), (1, &one)] {
        s3gen.synthesize(&sentence, &reference, 0)?;
        let mut walls = Vec::new();
        for rep in 0..reps {
            let start = Instant::now();
            s3gen.synthesize(&sentence, &reference, rep as u64)?;
            device.synchronize()?;
            walls.push(start.elapsed().as_secs_f64());
        }
        decode.insert(format!("{steps}_step"), json!(median(walls)));
    }
    let paragraph: Vec<u32> = sentence[..SENTENCE]
        .iter()
        .cycle()
        .take(PARAGRAPH)
        .copied()
        .chain([ferrovox_chatterbox::S3GEN_SILENCE; 3])
        .collect();
    two.synthesize(&paragraph, &reference, 0)?;
    let mut walls = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        two.synthesize(&paragraph, &reference, rep as u64)?;
        device.synchronize()?;
        walls.push(start.elapsed().as_secs_f64());
    }
    decode.insert("paragraph_2_step".into(), json!(median(walls)));
    let (_, stages, stage_line) =
        crate::util::stage_split(|| Ok(two.synthesize(&sentence, &reference, 0)?))?;
    decode.insert("2_step_stages".into(), stages);
    let ours = median(rates.clone());
    let theirs = torch["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    let audio_s = (SENTENCE + 3) as f64 * 0.04;
    let rtf = |tps: f64, s3gen_s: f64| (SENTENCE as f64 / tps + s3gen_s) / audio_s;
    let ours_2 = decode["2_step"].as_f64().unwrap_or(f64::NAN);
    let ours_1 = decode["1_step"].as_f64().unwrap_or(f64::NAN);
    let theirs_2 = torch["s3gen_s"]["2_step"].as_f64().unwrap_or(f64::NAN);
    let theirs_1 = torch["s3gen_s"]["1_step"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| {}, {} | ferrovox | PyTorch {} | ferrovox / PyTorch |\n|---|---|---|---|",
        size.name(),
        if on_gpu { "cuda" } else { "cpu" },
        torch["torch"].as_str().unwrap_or("?")
    );
    println!(
        "| T3 tokens/s ({} tokens, {} step weights) | {ours:.1} ({:.1} ms/token) | {theirs:.1} | {:.2}× |",
        counts.first().copied().unwrap_or(0),
        by_format[0]["format"].as_str().unwrap_or("?"),
        1e3 / ours,
        ours / theirs
    );
    for f in &by_format[1..] {
        println!(
            "| T3 tokens/s, {} step weights | {:.1} | | |",
            f["format"].as_str().unwrap_or("?"),
            f["tokens_per_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    for f in &by_format {
        println!(
            "(step weights {}: logits against f32 over {} steps, max |diff| / max |logit| {:.2e}, RMS relative {:.2e})",
            f["format"].as_str().unwrap_or("?"),
            steps.len(),
            f["logits_max_abs_over_max"].as_f64().unwrap_or(f64::NAN),
            f["logits_rms_rel"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "| S3Gen meanflow, {SENTENCE} + 3 tokens, 2 steps | {:.0} ms | {:.0} ms | {:.2}× |",
        ours_2 * 1e3,
        theirs_2 * 1e3,
        theirs_2 / ours_2
    );
    println!(
        "| S3Gen meanflow, 1 step | {:.0} ms | {:.0} ms | {:.2}× |",
        ours_1 * 1e3,
        theirs_1 * 1e3,
        theirs_1 / ours_1
    );
    println!("(S3Gen's 2 steps by stage, synchronized: {stage_line})");
    println!(
        "| real-time factor of the 3.1 s sentence (T3 + 2-step S3Gen) | {:.2} | {:.2} | |",
        rtf(ours, ours_2),
        rtf(theirs, theirs_2)
    );
    // A paragraph: the prefill, then its tokens at the decode rate (the generation's tokens
    // after the first over its time after the first token), then S3Gen over all of them.
    let decode_rate = |tps: f64, first: f64, n: f64| (n - 1.0) / (n / tps - first);
    let n_gen = counts.first().copied().unwrap_or(new_tokens) as f64;
    let ours_first = by_format[0]["first_token_s"].as_f64().unwrap_or(f64::NAN);
    let theirs_first = torch["first_token_s"].as_f64().unwrap_or(f64::NAN);
    let n_gen_torch = torch["tokens"][0].as_f64().unwrap_or(n_gen);
    let (ours_rate, theirs_rate) = (
        decode_rate(ours, ours_first, n_gen),
        decode_rate(theirs, theirs_first, n_gen_torch),
    );
    let ours_par = decode["paragraph_2_step"].as_f64().unwrap_or(f64::NAN);
    let theirs_par = torch["s3gen_s"]["paragraph_2_step"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let par_audio = (PARAGRAPH + 3) as f64 * 0.04;
    let par_rtf = |first: f64, rate: f64, s3gen_s: f64| {
        (first + (PARAGRAPH - 1) as f64 / rate + s3gen_s) / par_audio
    };
    println!(
        "| T3 time to the first token (prefill of {} positions) | {:.0} ms | {:.0} ms | {:.2}× |",
        1 + 375 + 40 + 1,
        ours_first * 1e3,
        theirs_first * 1e3,
        theirs_first / ours_first
    );
    println!(
        "| T3 decode tokens/s after the first | {ours_rate:.1} | {theirs_rate:.1} | {:.2}× |",
        ours_rate / theirs_rate
    );
    println!(
        "| S3Gen meanflow, paragraph of {PARAGRAPH} + 3 tokens, 2 steps | {:.0} ms | {:.0} ms | {:.2}× |",
        ours_par * 1e3,
        theirs_par * 1e3,
        theirs_par / ours_par
    );
    println!(
        "| real-time factor of the {par_audio:.1} s paragraph (first token + decode + 2-step S3Gen) | {:.2} | {:.2} | |",
        par_rtf(ours_first, ours_rate, ours_par),
        par_rtf(theirs_first, theirs_rate, theirs_par)
    );
    println!(
        "(S3Gen's products: {})",
        if bf16 {
            "bf16 inputs, f32 sums (AVX-512 BF16)"
        } else {
            "f32"
        }
    );
    println!(
        "(threads {threads}; model load {load_s:.1} s; ferrovox peak RSS {:.0} MiB, PyTorch {:.0} MiB)",
        ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
        torch["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(json!({
        "model": size.name(), "device": if on_gpu { "cuda" } else { "cpu" }, "threads": threads,
        "ferrovox": {"tokens_per_s": ours, "tokens_per_s_all": rates, "tokens": counts,
            "step_weights": by_format,
            "s3gen_s": decode, "rtf": rtf(ours, ours_2), "load_s": load_s,
            "decode_tokens_per_s": ours_rate,
            "paragraph_rtf": par_rtf(ours_first, ours_rate, ours_par),
            "peak_rss_mib": ferrovox_device::memory::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64},
        "torch": torch,
        "torch_rtf": rtf(theirs, theirs_2),
        "torch_decode_tokens_per_s": theirs_rate,
        "torch_paragraph_rtf": par_rtf(theirs_first, theirs_rate, theirs_par),
        "ratio_tokens_per_s": ours / theirs,
        "ratio_s3gen_2_step": theirs_2 / ours_2,
    }))
}

/// Eight tokens the f32 model draws, fed to every variant so their logits compare step for
/// step.
fn step_tokens(t3: &T3Turbo, cond: &T3Cond, text: &[u32]) -> anyhow::Result<Vec<u32>> {
    let options = TurboOptions {
        max_new_tokens: 8,
        ..TurboOptions::default()
    };
    let out = t3.generate(cond, text, &options, &mut SeededNoise::new(7), &mut |_| {
        Ok(Flow::Continue)
    })?;
    Ok(out.tokens)
}

/// The speech-head logits of each decode step over `steps`, concatenated.
fn step_logits(
    t3: &T3Turbo,
    cond: &T3Cond,
    text: &[u32],
    steps: &[u32],
) -> anyhow::Result<Vec<f32>> {
    let mut cache = ferrovox_chatterbox::t3::Gpt2Cache::default();
    t3.forward(&t3.prefill_embeds(cond, text)?, &mut cache)?;
    let mut all = Vec::new();
    for &token in steps {
        let logits = t3.forward(&t3.speech_step_embed(token)?, &mut cache)?;
        all.extend(logits.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(all)
}

/// `got` against `want`: max |diff| over max |want|, and RMS of the diff over RMS of `want`.
fn relative_error(got: &[f32], want: &[f32]) -> (f64, f64) {
    let max_want = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
    let max_diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
        m.max((f64::from(g) - f64::from(w)).abs())
    });
    let rms = |xs: &mut dyn Iterator<Item = f64>| xs.map(|x| x * x).sum::<f64>().sqrt();
    let rms_diff = rms(&mut got
        .iter()
        .zip(want)
        .map(|(&g, &w)| f64::from(g) - f64::from(w)));
    let rms_want = rms(&mut want.iter().map(|&w| f64::from(w)));
    (max_diff / max_want, rms_diff / rms_want)
}
