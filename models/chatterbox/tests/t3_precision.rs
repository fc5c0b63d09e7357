//! T3 in reduced precision against upstream's f32 logits on the small fixture
//! (`gen_t3.py`): decode steps reading bf16 or int8 weights on the CPU (`T3::pack_steps`), and
//! the whole model in bf16 (the GPU's dtype policy). Each is fed upstream's own step tokens, so
//! the error is the logits' own. Bounds are relative to the largest logit and stated per format.

mod common;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use common::t3::{cond, from, small, text_tokens};
use common::{ids, max_abs_diff, Fixture};
use ferrovox_chatterbox::t3::{LlamaConfig, PerceiverConfig, T3Config, T3};
use ferrovox_chatterbox::RowFormat;

/// Upstream's prefill logits and each step's, and ours fed the same tokens.
fn step_logits(t3: &T3, fx: &Fixture) -> (Tensor, Vec<(Tensor, Tensor)>) {
    let device = t3.device().clone();
    let cond_emb = t3.prepare_conditioning(&cond(fx)).unwrap();
    let embeds = t3
        .prefill_embeds(&cond_emb, &text_tokens(fx), true)
        .unwrap();
    let mut cache = t3.cache(2, 128, t3.dtype(), &device).unwrap();
    let prefill = t3.forward(&embeds, &mut cache).unwrap();
    let steps = ids(&fx.get("in.step_tokens"))
        .into_iter()
        .enumerate()
        .map(|(i, tok)| {
            let token = Tensor::new(&[tok], &device).unwrap();
            let e = t3.speech_step_embed(&token, i + 1, 2).unwrap();
            let got = t3.forward(&e, &mut cache).unwrap().squeeze(1).unwrap();
            (
                got.to_dtype(DType::F32).unwrap(),
                fx.get(&format!("out.step{i}.logits")),
            )
        })
        .collect();
    (prefill.to_dtype(DType::F32).unwrap(), steps)
}

fn largest(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Packed step weights: the prefill (many rows, f32 weights) is unchanged (1e-4), and each step
/// is within the format's rounding of upstream's f32 logits: bf16 ≤ 1 %, int8 ≤ 2 % of the
/// largest logit. Each also differs from f32, so the packed weights were read.
#[test]
fn packed_step_weights_stay_within_their_rounding_of_upstream() {
    let (t3, fx) = small();
    if !t3.device().is_cpu() {
        eprintln!(
            "packed step weights are a CPU path; on {:?} they stay f32",
            t3.device()
        );
        let mut packed = t3.clone();
        packed.pack_steps(RowFormat::Int8).unwrap();
        assert_eq!(packed.step_format(), RowFormat::F32);
        return;
    }
    for (format, bound) in [(RowFormat::Bf16, 1e-2f32), (RowFormat::Int8, 2e-2)] {
        let mut packed = t3.clone();
        packed.pack_steps(format).unwrap();
        assert_eq!(packed.step_format(), format);
        let (prefill, steps) = step_logits(&packed, &fx);
        let err = max_abs_diff(&prefill, &fx.get("out.prefill_logits"));
        assert!(err <= 1e-4, "{format:?} prefill: {err}");
        let mut worst = 0f32;
        for (i, (got, want)) in steps.iter().enumerate() {
            let rel = max_abs_diff(got, want) / largest(want);
            eprintln!("{format:?} step {i}: max|diff| / max|logit| = {rel:.2e}");
            worst = worst.max(rel);
        }
        assert!(worst <= bound, "{format:?}: {worst} > {bound}");
        assert!(
            worst > 1e-6,
            "{format:?}: no rounding seen, the packed path was not taken"
        );
    }
}

/// The whole model in bf16 (weights, activations and cache; logits compared in f32) runs the
/// conditioning, prefill and steps, within 3 % of the largest logit of upstream's f32.
#[test]
fn the_model_in_bf16_stays_within_bf16_rounding_of_upstream() {
    let fx = Fixture::load("t3");
    let mut cfg: T3Config = from(&fx.config["t3_config"]);
    cfg.llama = from::<LlamaConfig>(&fx.config["llama_config"]);
    cfg.perceiver = from::<PerceiverConfig>(&fx.config["perceiver"]);
    let vb = VarBuilder::from_tensors(fx.tensors.clone(), DType::BF16, &common::device());
    let t3 = T3::new(&cfg, vb).unwrap();
    assert_eq!(t3.dtype(), DType::BF16);
    let (prefill, steps) = step_logits(&t3, &fx);
    let want = fx.get("out.prefill_logits");
    let rel = max_abs_diff(&prefill, &want) / largest(&want);
    eprintln!("bf16 prefill: {rel:.2e}");
    assert!(rel <= 3e-2, "prefill {rel}");
    for (i, (got, want)) in steps.iter().enumerate() {
        let rel = max_abs_diff(got, want) / largest(want);
        eprintln!("bf16 step {i}: {rel:.2e}");
        assert!(rel <= 3e-2, "step {i}: {rel}");
        assert!(rel > 0.0);
    }
    // And it generates: the stop token or the budget, every token in the vocabulary.
    let out = t3
        .generate(
            &cond(&fx),
            &text_tokens(&fx),
            &ferrovox_chatterbox::t3::SamplingOptions {
                max_new_tokens: 12,
                ..Default::default()
            },
            &mut ferrovox_chatterbox::t3::SeededNoise::new(3),
            4,
            &mut |_| Ok(ferrovox_chatterbox::t3::Flow::Continue),
        )
        .unwrap();
    assert!(out.tokens.len() <= 12);
    let vocab = t3.config().speech_tokens_dict_size as u32;
    assert!(out.tokens.iter().all(|&t| t < vocab));
}
