//! T3 in reduced precision beside f32: on the CPU each decode-step weight format
//! ([`RowFormat`]), on a GPU the model in bf16. Tokens/s, and the error against f32 logits,
//! taken teacher-forced: every variant reads the same prefix (the f32 model's tokens), so it is
//! the logits' own error, not a drift between two diverging generations.

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, IndexOp, Tensor};
use ferrovox_chatterbox::t3::{Flow, SamplingOptions, SeededNoise, T3Cond, T3};
use ferrovox_chatterbox::RowFormat;
use serde_json::json;

use crate::util::median;

/// Formats compared on the CPU, f32 first (the reference).
const FORMATS: [RowFormat; 3] = [RowFormat::F32, RowFormat::Bf16, RowFormat::Int8];

/// One way of running T3.
pub struct Variant {
    pub name: String,
    pub bytes_per_weight: f64,
    pub t3: T3,
}

/// `t3` (f32 weights) with each decode-step weight format.
pub fn cpu_variants(t3: &T3) -> anyhow::Result<Vec<Variant>> {
    FORMATS
        .iter()
        .map(|&format| {
            let mut t = t3.clone();
            t.pack_steps(format)?;
            Ok(Variant {
                name: format!("{} step weights", format.name()),
                bytes_per_weight: format.bytes_per_weight(),
                t3: t,
            })
        })
        .collect()
}

/// CFG's weight as upstream's default `cfg_weight` applies it.
const CFG_WEIGHT: f32 = 0.5;

/// Each variant's tokens/s and its logits' error against the first's (the f32 reference).
pub fn table(
    variants: &[Variant],
    cond: &T3Cond,
    text: &[u32],
    options: &SamplingOptions,
    reps: usize,
) -> anyhow::Result<serde_json::Value> {
    let reference = &variants.first().context("no variants")?.t3;
    let forced = reference.generate(
        cond,
        text,
        options,
        &mut SeededNoise::new(7),
        8,
        &mut |_| Ok(Flow::Continue),
    )?;
    let want = step_logits(reference, cond, text, &forced.tokens)?;
    let mut rows = Vec::new();
    println!(
        "| T3 variant | weight bytes/param | decode tokens/s (median of {reps}) | vs f32 | max abs logit error | max abs logit | rel. RMS error | CFG top-1 agreement |\n|---|---|---|---|---|---|---|---|"
    );
    let mut f32_rate = f64::NAN;
    for (i, v) in variants.iter().enumerate() {
        let rate = rates(&v.t3, cond, text, options, reps)?;
        let r = median(rate.clone());
        if i == 0 {
            f32_rate = r;
        }
        let got = step_logits(&v.t3, cond, text, &forced.tokens)?;
        let err = compare(&got, &want)?;
        println!(
            "| {} | {:.3} | {r:.2} | {:.2}× | {:.3e} | {:.2} | {:.3e} | {}/{} |",
            v.name,
            v.bytes_per_weight,
            r / f32_rate,
            err.max_abs,
            err.max_ref,
            err.rel_rms,
            err.top1_same,
            err.steps
        );
        rows.push(json!({
            "variant": v.name, "bytes_per_weight": v.bytes_per_weight,
            "tokens_per_s": r, "tokens_per_s_all": rate, "vs_f32": r / f32_rate,
            "max_abs_logit_error": err.max_abs, "max_abs_logit": err.max_ref,
            "rel_rms_error": err.rel_rms, "cfg_top1_agree": err.top1_same, "steps": err.steps,
        }));
    }
    Ok(json!({ "teacher_forced_steps": forced.tokens.len(), "variants": rows }))
}

/// Decode tokens/s of `reps` seeded generations after an untimed one: the tokens after the
/// first report (8 tokens in, so the prefill is behind) over the time they took.
fn rates(
    t3: &T3,
    cond: &T3Cond,
    text: &[u32],
    options: &SamplingOptions,
    reps: usize,
) -> anyhow::Result<Vec<f64>> {
    let run = |seed| {
        let mut first: Option<(Instant, usize)> = None;
        let mut seen = 0;
        let out = t3.generate(
            cond,
            text,
            options,
            &mut SeededNoise::new(seed),
            8,
            &mut |tokens| {
                seen += tokens.len();
                first.get_or_insert((Instant::now(), seen));
                Ok(Flow::Continue)
            },
        )?;
        let (at, after) = first.context("no tokens reported")?;
        anyhow::Ok((out.tokens.len().saturating_sub(after)) as f64 / at.elapsed().as_secs_f64())
    };
    run(0)?;
    (0..reps).map(|rep| run(100 + rep as u64)).collect()
}

/// The step logits `[steps, 2, vocab]` (conditional and unconditional rows) of `tokens` fed
/// one at a time after the prefill.
fn step_logits(
    t3: &T3,
    cond: &T3Cond,
    text: &[u32],
    tokens: &[u32],
) -> anyhow::Result<Vec<Tensor>> {
    let device = t3.device().clone();
    let cond_emb = t3.prepare_conditioning(cond)?;
    let embeds = t3.prefill_embeds(&cond_emb, text, true)?;
    let positions = embeds.dim(1)? + tokens.len() + 1;
    let mut cache = t3.cache(2, positions, t3.dtype(), &device)?;
    t3.forward(&embeds, &mut cache)?;
    let mut out = Vec::with_capacity(tokens.len());
    for (i, &token) in tokens.iter().enumerate() {
        let token = Tensor::new(&[token], &device)?;
        let embed = t3.speech_step_embed(&token, i + 1, 2)?;
        out.push(
            t3.forward(&embed, &mut cache)?
                .squeeze(1)?
                .to_dtype(DType::F32)?,
        );
    }
    Ok(out)
}

struct Error {
    max_abs: f64,
    max_ref: f64,
    rel_rms: f64,
    top1_same: usize,
    steps: usize,
}

fn compare(got: &[Tensor], want: &[Tensor]) -> anyhow::Result<Error> {
    let (mut max_abs, mut max_ref, mut sq_err, mut sq_ref, mut top1_same) =
        (0f64, 0f64, 0f64, 0f64, 0);
    let guided = |l: &Tensor| -> anyhow::Result<Vec<f32>> {
        let (c, u) = (l.i(0)?, l.i(1)?);
        Ok((&c + ((&c - &u)? * f64::from(CFG_WEIGHT))?)?.to_vec1()?)
    };
    for (g, w) in got.iter().zip(want) {
        let (gv, wv) = (
            g.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
        );
        for (a, b) in gv.iter().zip(&wv) {
            let d = f64::from(a - b);
            max_abs = max_abs.max(d.abs());
            max_ref = max_ref.max(f64::from(b.abs()));
            sq_err += d * d;
            sq_ref += f64::from(*b) * f64::from(*b);
        }
        if argmax(&guided(g)?) == argmax(&guided(w)?) {
            top1_same += 1;
        }
    }
    Ok(Error {
        max_abs,
        max_ref,
        rel_rms: (sq_err / sq_ref.max(f64::MIN_POSITIVE)).sqrt(),
        top1_same,
        steps: got.len(),
    })
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}
