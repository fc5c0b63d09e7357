//! The multilingual T3 with its stop detector against upstream chatterbox-tts 0.1.7, whose
//! `T3.inference` runs `AlignmentStreamAnalyzer` for a multilingual T3: a small random-weight
//! build with 14 layers of 16 heads, so that the analyzer's heads (12, 15), (13, 11), (9, 2)
//! exist (`t3_mtl.safetensors`, `xtask/fixtures/chatterbox/gen_t3_mtl.py`). Per step, the
//! heads' attention over the text and the logits after the detector; then whole generations,
//! token for token under the recorded draws, including stops the detector forced.

mod common;

use candle_core::{DType, IndexOp, Tensor};
use common::t3::from;
use common::{ids, max_abs_diff, Fixture};
use ferrovox_chatterbox::t3::{
    AlignmentDetector, Flow, LlamaConfig, PerceiverConfig, ReplayedNoise, Sampler, SamplingOptions,
    T3Cond, T3Config, ALIGNED_HEADS, T3,
};

const RUNS: [&str; 5] = ["mtl_a", "mtl_b", "mtl_greedy", "mtl_long", "mtl_tail"];

fn model() -> (T3, Fixture) {
    let fx = Fixture::load("t3_mtl");
    let mut cfg: T3Config = from(&fx.config["t3_config"]);
    cfg.llama = from::<LlamaConfig>(&fx.config["llama_config"]);
    cfg.perceiver = from::<PerceiverConfig>(&fx.config["perceiver"]);
    cfg.alignment_heads = from(&fx.config["aligned_heads"]);
    assert_eq!(cfg.alignment_heads, ALIGNED_HEADS.to_vec());
    assert_eq!(
        (cfg.llama.num_hidden_layers, cfg.text_tokens_dict_size),
        (14, 2454)
    );
    (T3::new(&cfg, fx.vb()).unwrap(), fx)
}

fn cond(fx: &Fixture) -> T3Cond {
    T3Cond {
        speaker_emb: fx.get("in.speaker_emb"),
        cond_prompt_speech_tokens: Some(fx.get("in.cond_prompt_speech_tokens")),
        emotion_adv: 0.5,
    }
}

fn run_config<'a>(fx: &'a Fixture, run: &str) -> &'a serde_json::Value {
    &fx.config["runs"][run]
}

fn options(fx: &Fixture, run: &str) -> SamplingOptions {
    let r = &run_config(fx, run)["sampling"];
    let f = |k: &str| r[k].as_f64().unwrap() as f32;
    let greedy = run_config(fx, run)["mode"] == "argmax";
    SamplingOptions {
        cfg_weight: f("cfg_weight"),
        // The fixture's greedy run takes argmax(probs), which is the penalized argmax.
        temperature: if greedy { 0.0 } else { f("temperature") },
        top_p: f("top_p"),
        min_p: f("min_p"),
        repetition_penalty: f("repetition_penalty"),
        max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
    }
}

fn text(fx: &Fixture, run: &str) -> Vec<u32> {
    ids(&fx.get(&format!("in.{run}.text_tokens")).i(0).unwrap())
}

/// The aligned heads' attention over the text as the detector keeps it (columns past the
/// frame zeroed), bound 1e-5; the logits after the detector, bound 1e-4 (the -2¹⁵ and 2¹⁵ it
/// writes exactly), fed upstream's own tokens; the detector suppresses and forces the stop
/// token on the same steps as upstream.
#[test]
fn each_step_attends_and_adjusts_as_upstream() {
    let (t3, fx) = model();
    let device = t3.device().clone();
    let c = cond(&fx);
    let stop = t3.config().stop_speech_token;
    let start = t3.config().start_speech_token;
    for run in RUNS {
        let opts = options(&fx, run);
        let text = text(&fx, run);
        let want = ids(&fx.get(&format!("out.{run}_tokens")));
        let notes = run_config(&fx, run)["analyzer"].as_array().unwrap().clone();
        let cond_emb = t3.prepare_conditioning(&c).unwrap();
        let embeds = t3.prefill_embeds(&cond_emb, &text, true).unwrap();
        let text_start = cond_emb.dim(1).unwrap();
        let mut detector = AlignmentDetector::new(text_start..text_start + text.len(), stop);
        let mut cache = t3.cache(2, 256, DType::F32, &device).unwrap();
        let (mut logits, mut attention) = t3
            .forward_aligned(&embeds, &mut cache, detector.first_row())
            .unwrap();
        let mut sampler = Sampler::new(opts, 264, start, &device).unwrap();
        let (mut worst_attn, mut worst_logits) = (0f32, 0f32);
        let mut previous = start;
        let (mut forced, mut suppressed) = (0, 0);
        for (i, &upstream) in want.iter().enumerate() {
            // The text columns, past-frame ones zeroed, as the detector appends them.
            let rows: Vec<f32> = attention
                .iter()
                .flat_map(|r| {
                    let mut r = r[text_start..text_start + text.len()].to_vec();
                    r.iter_mut().skip(i + 1).for_each(|v| *v = 0.0);
                    r
                })
                .collect();
            let want_attn = fx.get(&format!("{run}.step{i}.attn"));
            let got_attn = Tensor::from_vec(rows, want_attn.shape(), &device).unwrap();
            worst_attn = worst_attn.max(max_abs_diff(&got_attn, &want_attn));

            let last = logits.i((.., logits.dim(1).unwrap() - 1, ..)).unwrap();
            let mut guided = sampler
                .guide(&last)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let report = detector.step(&attention, previous, &mut guided);
            let note = &notes[i];
            assert_eq!(report.forced_stop(), note["forced"], "{run} step {i}");
            assert_eq!(
                report.stop_suppressed && !report.forced_stop(),
                note["suppressed"],
                "{run} step {i}"
            );
            assert_eq!(
                report.text_position as u64, note["text_position"],
                "{run} {i}"
            );
            forced += usize::from(report.forced_stop());
            suppressed += usize::from(report.stop_suppressed);
            let guided = Tensor::from_vec(guided, (1, 264), &device).unwrap();
            worst_logits = worst_logits.max(max_abs_diff(
                &guided,
                &fx.get(&format!("{run}.step{i}.logits")),
            ));

            let token = Tensor::new(&[upstream], &device).unwrap();
            sampler.record(&token).unwrap();
            previous = upstream;
            if upstream == stop {
                break;
            }
            let e = t3.speech_step_embed(&token, i + 1, 2).unwrap();
            (logits, attention) = t3.forward_aligned(&e, &mut cache, 0).unwrap();
        }
        eprintln!(
            "{run}: {} steps, attention max|diff| {worst_attn:.2e} (bound 1e-5), adjusted logits \
             {worst_logits:.2e} (bound 1e-4); stop suppressed on {suppressed} steps, forced on {forced}",
            want.len()
        );
        assert!(worst_attn <= 1e-5 && worst_logits <= 1e-4, "{run}");
    }
}

/// Whole generations through `T3::generate` (the detector on, the dynamic path): the same
/// tokens as upstream under its draws, and the same stop, forced or drawn.
#[test]
fn generations_match_upstream_token_for_token() {
    let (t3, fx) = model();
    let c = cond(&fx);
    let stop = t3.config().stop_speech_token;
    let mut forced_stops = 0;
    for run in RUNS {
        let opts = options(&fx, run);
        let want = ids(&fx.get(&format!("out.{run}_tokens")));
        let n = run_config(&fx, run)["n_steps"].as_u64().unwrap() as usize;
        let mut noise = ReplayedNoise::new(
            (0..n)
                .filter_map(|i| fx.tensors.get(&format!("draw_{run}.q{i}")).cloned())
                .collect(),
        );
        let got = t3
            .generate(&c, &text(&fx, run), &opts, &mut noise, 4, &mut |_| {
                Ok(Flow::Continue)
            })
            .unwrap();
        let ends_on_stop = want.last() == Some(&stop);
        let want_tokens: Vec<u32> = want.iter().copied().filter(|&t| t != stop).collect();
        assert_eq!(got.tokens, want_tokens, "{run}: tokens");
        assert_eq!(got.stopped, ends_on_stop, "{run}: stop");
        let notes = run_config(&fx, run)["analyzer"].as_array().unwrap().clone();
        let forced = notes.iter().any(|n| n["forced"] == true);
        forced_stops += usize::from(forced);
        eprintln!(
            "{run}: {} tokens identical, stopped {} (forced by the detector: {forced})",
            got.tokens.len(),
            got.stopped
        );
    }
    assert!(forced_stops >= 3, "the fixture exercises forced stops");
}

/// A detector's heads outside the backbone are refused with the reason, not indexed.
#[test]
fn heads_outside_the_backbone_are_refused() {
    let (t3, fx) = model();
    let mut cfg = t3.config().clone();
    cfg.alignment_heads = vec![(20, 0)];
    let err = T3::new(&cfg, fx.vb()).unwrap_err().to_string();
    assert!(err.contains("head 0 of layer 20"), "{err}");
    cfg.alignment_heads = vec![(0, 16)];
    let err = T3::new(&cfg, fx.vb()).unwrap_err().to_string();
    assert!(err.contains("head 16 of layer 0"), "{err}");
}
