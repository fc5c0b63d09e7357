//! Chatterbox Turbo's T3 against upstream chatterbox-tts 0.1.7 (`T3.inference_turbo` on a
//! small GPT-2 with `tts_turbo.py`'s hyper-parameters, random weights:
//! `t3_turbo.safetensors`, `xtask/fixtures/chatterbox/gen_t3_turbo.py`): the prefill, GPT-2's
//! cache, each step's processors, and whole generations under upstream's draws.

mod common;

use candle_core::{DType, IndexOp, Tensor};
use common::t3::from;
use common::{ids, max_abs_diff, Fixture};
use ferrovox_chatterbox::t3::turbo_sampling::softmax;
use ferrovox_chatterbox::t3::{
    Flow, Gpt2Cache, Gpt2Config, ReplayedNoise, T3Cond, T3Config, T3Turbo, TurboOptions,
};

const RUNS: [&str; 4] = ["turbo_default", "turbo_topk", "turbo_hot", "turbo_stop"];

fn model() -> (T3Turbo, Fixture) {
    let fx = Fixture::load("t3_turbo");
    let cfg: T3Config = from(&fx.config["t3_config"]);
    let gpt2: Gpt2Config = from(&fx.config["gpt2_config"]);
    assert_eq!(
        (gpt2.n_embd, gpt2.n_layer),
        (64, 2),
        "the small config was read"
    );
    (T3Turbo::new(&cfg, &gpt2, fx.vb()).unwrap(), fx)
}

fn cond(fx: &Fixture) -> T3Cond {
    T3Cond {
        speaker_emb: fx.get("in.speaker_emb"),
        cond_prompt_speech_tokens: Some(fx.get("in.cond_prompt_speech_tokens")),
        emotion_adv: 0.0,
    }
}

fn text(fx: &Fixture) -> Vec<u32> {
    ids(&fx.get("in.text_tokens").i(0).unwrap())
}

fn options(fx: &Fixture, run: &str) -> TurboOptions {
    let p = &fx.config["runs"][run]["params"];
    let f = |k: &str| p[k].as_f64().unwrap() as f32;
    TurboOptions {
        temperature: f("temperature"),
        top_k: p["top_k"].as_u64().unwrap() as usize,
        top_p: f("top_p"),
        repetition_penalty: f("repetition_penalty"),
        max_new_tokens: fx.config["max_gen_len"].as_u64().unwrap() as usize + 1,
    }
}

fn check(what: &str, got: &Tensor, want: &Tensor, bound: f32) {
    let err = max_abs_diff(got, want);
    eprintln!("{what}: max|diff| {err:.2e} (bound {bound:.0e})");
    assert!(err <= bound, "{what}: {err} > {bound}");
}

/// The prefill's embeddings (bound 1e-6: lookups and one linear layer), GPT-2's hidden states
/// and the speech head's logits (1e-4), and three single steps through the cache (1e-4).
#[test]
fn prefill_and_cache_match_upstream() {
    let (t3, fx) = model();
    let embeds = t3.prefill_embeds(&cond(&fx), &text(&fx)).unwrap();
    check(
        "prefill embeds",
        &embeds,
        &fx.get("out.prefill_embeds"),
        1e-6,
    );
    let mut cache = Gpt2Cache::default();
    let hidden = t3.hidden_states(&embeds, &mut cache).unwrap();
    check(
        "hidden states",
        &hidden,
        &fx.get("out.prefill_hidden"),
        1e-4,
    );
    let mut cache = Gpt2Cache::default();
    let logits = t3.forward(&embeds, &mut cache).unwrap();
    check(
        "prefill logits",
        &logits,
        &fx.get("out.prefill_logits"),
        1e-4,
    );
    for (i, token) in ids(&fx.get("in.step_tokens").i(0).unwrap())
        .into_iter()
        .enumerate()
    {
        let step = t3
            .forward(&t3.speech_step_embed(token).unwrap(), &mut cache)
            .unwrap();
        check(
            &format!("step {i} logits"),
            &step.i((.., 0)).unwrap(),
            &fx.get(&format!("out.step{i}.logits")),
            1e-4,
        );
    }
}

/// Each step's processed logits (bound 1e-4; filtered ones −∞ on both sides) and
/// probabilities (1e-5), fed upstream's own tokens; then whole generations through
/// `T3Turbo::generate`: identical tokens under upstream's draws, one run ending on its stop.
#[test]
fn generations_match_upstream_token_for_token() {
    let (t3, fx) = model();
    let c = cond(&fx);
    let text = text(&fx);
    let stop = t3.config().stop_speech_token;
    let device = t3.device().clone();
    for run in RUNS {
        let opts = options(&fx, run);
        let drawn = ids(&fx.get(&format!("out.{run}_drawn")).i(0).unwrap());
        let mut cache = Gpt2Cache::default();
        let embeds = t3.prefill_embeds(&c, &text).unwrap();
        let mut logits = t3.forward(&embeds, &mut cache).unwrap();
        let (mut worst_logits, mut worst_probs) = (0f32, 0f32);
        let mut seen = vec![t3.config().start_speech_token];
        for (i, &token) in drawn.iter().enumerate() {
            let last = logits.i((0, logits.dim(1).unwrap() - 1)).unwrap();
            let mut row = last.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            opts.process(&mut row, &seen);
            let want = fx
                .get(&format!("{run}.step{i}.processed"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (g, w) in row.iter().zip(&want) {
                let both_filtered = *g == f32::NEG_INFINITY && *w <= -1e29;
                assert!(both_filtered || (*w > -1e29 && g.is_finite()), "{run} {i}");
                if !both_filtered {
                    worst_logits = worst_logits.max((g - w).abs());
                }
            }
            let probs = Tensor::new(softmax(&row).as_slice(), &device)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            worst_probs = worst_probs.max(max_abs_diff(
                &probs,
                &fx.get(&format!("{run}.step{i}.probs")),
            ));
            if i == 0 {
                seen.clear();
            }
            seen.push(token);
            if token != stop {
                logits = t3
                    .forward(&t3.speech_step_embed(token).unwrap(), &mut cache)
                    .unwrap();
            }
        }
        eprintln!(
            "{run}: {} steps, processed logits max|diff| {worst_logits:.2e} (bound 1e-4), \
             probabilities {worst_probs:.2e} (bound 1e-5)",
            drawn.len()
        );
        assert!(worst_logits <= 1e-4 && worst_probs <= 1e-5, "{run}");

        let mut noise = ReplayedNoise::new(
            (0..drawn.len())
                .map(|i| fx.get(&format!("draw_{run}.q{i}")))
                .collect(),
        );
        let got = t3
            .generate(&c, &text, &opts, &mut noise, &mut |_| Ok(Flow::Continue))
            .unwrap();
        let ends_on_stop = drawn.last() == Some(&stop);
        let want: Vec<u32> = drawn.iter().copied().filter(|&t| t != stop).collect();
        assert_eq!(got.tokens, want, "{run}: tokens");
        assert_eq!(got.stopped, ends_on_stop, "{run}: stop");
        eprintln!(
            "{run}: {} tokens identical, stopped {}",
            got.tokens.len(),
            got.stopped
        );
    }
}

/// Bad controls and text ids outside the vocabulary are named, and a model of other sizes
/// than its checkpoint is refused at load.
#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (t3, fx) = model();
    let c = cond(&fx);
    let mut noise = ferrovox_chatterbox::t3::SeededNoise::new(0);
    let mut run = |opts: TurboOptions, text: &[u32]| {
        t3.generate(&c, text, &opts, &mut noise, &mut |_| Ok(Flow::Continue))
            .unwrap_err()
            .to_string()
    };
    let e = run(
        TurboOptions {
            temperature: 0.0,
            ..TurboOptions::default()
        },
        &[1, 2],
    );
    assert!(e.contains("temperature"), "{e}");
    let e = run(
        TurboOptions {
            max_new_tokens: 8,
            ..TurboOptions::default()
        },
        &[1, 100_000],
    );
    assert!(e.contains("100000"), "{e}");
    let e = run(TurboOptions::default(), &[1, 2]);
    assert!(e.contains("positions"), "{e}");
    let gpt2 = Gpt2Config {
        n_layer: 3,
        ..from(&fx.config["gpt2_config"])
    };
    assert!(T3Turbo::new(t3.config(), &gpt2, fx.vb()).is_err());
}

/// Turbo's T3 at the released size (the key set `T3` with `tts_turbo.py`'s hyper-parameters
/// writes, `t3_turbo_full_keys.json`): read unchanged by `T3Config::turbo()` and the default
/// GPT-2 config, every tensor at its shape; only GPT-2's token table and the text head are not
/// read. A model with another layer count is refused naming what it lacks.
#[test]
fn the_released_full_size_key_set_loads_unchanged() {
    released_key_set_loads("t3_turbo_full_keys.json", 299, Gpt2Config::default());
}

/// Nano's T3 at the released size (`t3_nano_full_keys.json`: the same hyper-parameters on
/// GPT-2 small), read unchanged by `Gpt2Config::small()` as Turbo's is by the default.
#[test]
fn nanos_released_full_size_key_set_loads_unchanged() {
    released_key_set_loads("t3_nano_full_keys.json", 155, Gpt2Config::small());
    let shapes = common::full_size_shapes("t3_nano_full_keys.json");
    let (vb, _) = common::manifest_vb(&shapes, &candle_core::Device::Cpu);
    let err = T3Turbo::new(&T3Config::turbo(), &Gpt2Config::default(), vb)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("read as"),
        "Turbo's sizes over Nano's file: {err}"
    );
}

fn released_key_set_loads(manifest: &str, tensors: usize, gpt2: Gpt2Config) {
    use candle_core::Device;
    let shapes = common::full_size_shapes(manifest);
    assert_eq!(shapes.len(), tensors);
    let expected = T3Turbo::expected_keys(&gpt2);
    let mut unused: Vec<&String> = shapes.keys().filter(|k| !expected.contains(k)).collect();
    unused.sort();
    assert_eq!(unused, ferrovox_chatterbox::t3::turbo::UNUSED_KEYS);
    assert!(expected.iter().all(|k| shapes.contains_key(k)));
    let (vb, read) = common::manifest_vb(&shapes, &Device::Cpu);
    T3Turbo::new(&T3Config::turbo(), &gpt2, vb).expect("the released shapes");
    assert_eq!(read.lock().unwrap().len(), expected.len());
    let (vb, _) = common::manifest_vb(&shapes, &Device::Cpu);
    let deeper = Gpt2Config {
        n_layer: gpt2.n_layer + 1,
        ..gpt2.clone()
    };
    let err = T3Turbo::new(&T3Config::turbo(), &deeper, vb)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("h.{}", gpt2.n_layer)), "{err}");
}
