//! Parity of the flow half of S3Gen (speech tokens -> mel) with upstream chatterbox-tts 0.1.7,
//! component by component, at f32 against the fixtures of `xtask/fixtures/chatterbox`
//! (`encoder`, `cfm`, `s3gen_e2e`; a small random-weight model, described in `gen_s3gen.py`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use common::{max_abs_diff, Fixture};
use ferrovox_chatterbox::{Error, Flow, FlowConfig};

/// Encoder and estimator stages: upstream's own reference reproduces them to ~4e-6.
const STAGE_BOUND: f32 = 1e-4;
/// The 10-step solve compounds ten estimator calls.
const SOLVE_BOUND: f32 = 1e-4;

fn check(tag: &str, got: &Tensor, want: &Tensor, bound: f32) {
    let err = max_abs_diff(got, want);
    eprintln!("{tag:32} max|diff| {err:.3e} (bound {bound:.0e})");
    assert!(err <= bound, "{tag}: max abs diff {err:e} > {bound:e}");
}

/// The small S3Gen flow the fixtures were made with, read from their `config` metadata.
fn small_config(enc: &Fixture, cfm: &Fixture) -> FlowConfig {
    fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
        serde_json::from_value(v.clone()).unwrap()
    }
    let mut cfg: FlowConfig = from(&enc.config["flow"]);
    cfg.encoder = from(&enc.config["encoder"]);
    cfg.encoder.num_up_blocks = enc.config["encoder_swapped_parts"]["up_encoders"]
        .as_u64()
        .unwrap() as usize;
    cfg.estimator = from(&cfm.config["estimator"]);
    cfg.cfm.n_timesteps = cfm.config["cfm"]["n_timesteps"].as_u64().unwrap() as usize;
    cfg.cfm.inference_cfg_rate = cfm.config["cfm"]["cfm_params"]["inference_cfg_rate"]
        .as_f64()
        .unwrap();
    assert_eq!(cfg.encoder.output_size, 32, "fixture config not read");
    assert_eq!(cfg.estimator.channels, vec![16], "fixture config not read");
    cfg
}

struct Setup {
    enc: Fixture,
    cfm: Fixture,
    flow: Flow,
}

fn setup() -> Setup {
    let enc = Fixture::load("encoder");
    let cfm = Fixture::load("cfm");
    let cfg = small_config(&enc, &cfm);
    let flow = Flow::new(&cfg, Fixture::vb_of(&[&enc, &cfm]).pp("flow")).unwrap();
    Setup { enc, cfm, flow }
}

/// Lengths from an i64 `[b]` fixture tensor.
fn lengths(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect()
}

/// Compares every recorded stage with fixture tensor `{prefix}{name}`, and requires that each
/// of `expected` was both recorded and present in the fixture.
fn check_stages(
    fixture: &Fixture,
    prefix: &str,
    recorded: &HashMap<String, Tensor>,
    expected: &[String],
) {
    for name in expected {
        let got = recorded
            .get(name)
            .unwrap_or_else(|| panic!("stage {name} was not recorded"));
        let key = format!("{prefix}{name}");
        check(&key, got, &fixture.get(&key), STAGE_BOUND);
    }
}

#[test]
fn encoder_stages_match_upstream() {
    let s = setup();
    let tokens = s.enc.get("in.tokens");
    let lens = lengths(&s.enc.get("in.token_len"));
    let x = s.flow.embed_tokens(&tokens, &lens).unwrap();
    check("enc.embedding", &x, &s.enc.get("enc.embedding"), 0.0);

    let mut recorded = HashMap::new();
    let out = s
        .flow
        .encoder()
        .forward_recorded(&x, &lens, &mut |name, t| {
            recorded.insert(name.to_string(), t.clone());
        })
        .unwrap();
    let mut expected: Vec<String> = [
        "embed.x",
        "embed.pos_emb",
        "pre_lookahead",
        "up_layer",
        "up_embed.x",
        "up_embed.pos_emb",
        "after_norm",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend((0..2).map(|i| format!("encoders.{i}")));
    expected.extend((0..4).map(|i| format!("up_encoders.{i}")));
    check_stages(&s.enc, "enc.", &recorded, &expected);
    check(
        "out.encoder",
        &out.hidden,
        &s.enc.get("out.encoder"),
        STAGE_BOUND,
    );
    check("enc.out_mask", &out.mask, &s.enc.get("enc.out_mask"), 0.0);

    let enc = s.flow.encode(&tokens, &lens).unwrap();
    check(
        "out.encoder_proj",
        &enc.mu,
        &s.enc.get("out.encoder_proj"),
        STAGE_BOUND,
    );
}

#[test]
fn padded_batch_matches_upstream() {
    let s = setup();
    let lens = lengths(&s.enc.get("b2.in.token_len"));
    assert_eq!(lens, [10, 7]);
    let enc = s.flow.encode(&s.enc.get("b2.in.tokens"), &lens).unwrap();
    check(
        "b2.enc.out_mask",
        &enc.mask,
        &s.enc.get("b2.enc.out_mask"),
        0.0,
    );
    // Padded frames are not meaningful output; upstream returns them, and so do we.
    check(
        "b2.out.encoder",
        &enc.hidden,
        &s.enc.get("b2.out.encoder"),
        STAGE_BOUND,
    );
    check(
        "b2.out.encoder_proj",
        &enc.mu,
        &s.enc.get("b2.out.encoder_proj"),
        STAGE_BOUND,
    );
}

#[test]
fn speaker_projection_matches_upstream() {
    let s = setup();
    let spks = s.flow.speaker_embedding(&s.cfm.get("in.xvector")).unwrap();
    check("out.spks", &spks, &s.cfm.get("out.spks"), 1e-5);
}

#[test]
fn estimator_call_matches_upstream() {
    let s = setup();
    let c = &s.cfm;
    let double = |t: Tensor, zero_second: bool| {
        let other = if zero_second {
            t.zeros_like().unwrap()
        } else {
            t.clone()
        };
        Tensor::cat(&[&t, &other], 0).unwrap()
    };
    let mask = double(c.get("in.mask"), false);
    let mu = double(c.get("in.mu"), true);
    let spks = double(c.get("out.spks"), true);
    let cond = double(c.get("in.cond"), true);
    let mut recorded = HashMap::new();
    let out = s
        .flow
        .decoder()
        .estimator()
        .forward_recorded(
            &c.get("est.in.x"),
            &mask,
            &mu,
            &c.get("est.in.t"),
            &spks,
            &cond,
            &mut |name, t| {
                recorded.insert(name.to_string(), t.clone());
            },
        )
        .unwrap();
    // Every intermediate the fixture holds, found by name so none is skipped silently.
    let mut expected: Vec<String> = c
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("est."))
        .filter(|k| !k.starts_with("in.") && *k != "out")
        .map(str::to_string)
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 18, "fixture stages: {expected:?}");
    check_stages(c, "est.", &recorded, &expected);
    check("est.out", &out, &c.get("est.out"), STAGE_BOUND);
}

#[test]
fn cfm_solve_matches_upstream() {
    let s = setup();
    let c = &s.cfm;
    let t_span = ferrovox_chatterbox::s3gen::cfm::CausalConditionalCfm::t_span(10);
    let want = c.get("const.t_span");
    check(
        "const.t_span",
        &Tensor::new(t_span.as_slice(), &common::device()).unwrap(),
        &want,
        1e-7,
    );
    let mut steps = HashMap::new();
    let out = s
        .flow
        .decoder()
        .forward_recorded(
            &c.get("noise.cfm"),
            &c.get("in.mu"),
            &c.get("in.mask"),
            &c.get("out.spks"),
            &c.get("in.cond"),
            &mut |name, t| {
                steps.insert(name.to_string(), t.clone());
            },
        )
        .unwrap();
    let x_steps = c.get("cfm.x_steps");
    for k in 0..10 {
        check(
            &format!("cfm.x_steps[{k}]"),
            &steps[&format!("x_steps.{k}")],
            &x_steps.get(k).unwrap(),
            SOLVE_BOUND,
        );
    }
    check("out.cfm", &out, &c.get("out.cfm"), SOLVE_BOUND);
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

#[test]
fn flow_end_to_end_matches_upstream() {
    let s = setup();
    let e = Fixture::load("s3gen_e2e");
    let prompt_tokens = ids(&e.get("in.prompt_tokens"));
    let tokens = ids(&e.get("in.tokens"));

    let spks = s.flow.speaker_embedding(&e.get("in.xvector")).unwrap();
    check("e2e.spks", &spks, &e.get("e2e.spks"), 1e-5);
    let all: Vec<u32> = prompt_tokens.iter().chain(&tokens).copied().collect();
    let n = all.len();
    let enc = s
        .flow
        .encode(
            &Tensor::from_vec(all, (1, n), &common::device()).unwrap(),
            &[n],
        )
        .unwrap();
    check(
        "e2e.encoder",
        &enc.hidden,
        &e.get("e2e.encoder"),
        STAGE_BOUND,
    );
    check("e2e.mu", &enc.mu, &e.get("e2e.mu"), STAGE_BOUND);
    check("e2e.mask", &enc.mask, &e.get("e2e.mask"), 0.0);

    let mel = s
        .flow
        .inference(
            &prompt_tokens,
            &tokens,
            &e.get("in.prompt_feat"),
            &e.get("in.xvector"),
            &e.get("noise.cfm"),
        )
        .unwrap();
    check("e2e.mel", &mel, &e.get("e2e.mel"), SOLVE_BOUND);
}

#[test]
fn out_of_range_token_is_an_input_error_naming_it() {
    let s = setup();
    let e = Fixture::load("s3gen_e2e");
    let mut tokens = ids(&e.get("in.tokens"));
    tokens[2] = 256; // the small vocabulary is 0..256
    let err = s
        .flow
        .inference(
            &ids(&e.get("in.prompt_tokens")),
            &tokens,
            &e.get("in.prompt_feat"),
            &e.get("in.xvector"),
            &e.get("noise.cfm"),
        )
        .unwrap_err();
    match &err {
        Error::Input(msg) => assert!(msg.contains("256"), "{msg}"),
        other => panic!("expected Error::Input, got {other:?}"),
    }
    // A negative id in a batch tensor is caught too, not wrapped around.
    let bad = Tensor::new(&[[3i64, -1]], &common::device()).unwrap();
    match s.flow.encode(&bad, &[2]) {
        Err(Error::Input(msg)) => assert!(msg.contains("-1"), "{msg}"),
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

#[test]
fn empty_tokens_and_bad_shapes_are_input_errors() {
    let s = setup();
    let e = Fixture::load("s3gen_e2e");
    let prompt_tokens = ids(&e.get("in.prompt_tokens"));
    let tokens = ids(&e.get("in.tokens"));
    let feat = e.get("in.prompt_feat");
    let xvec = e.get("in.xvector");
    let noise = e.get("noise.cfm");
    let is_input = |r: ferrovox_chatterbox::Result<Tensor>, what: &str| match r {
        Err(Error::Input(msg)) => eprintln!("{what}: {msg}"),
        other => panic!("{what}: expected Error::Input, got {other:?}"),
    };
    is_input(
        s.flow.inference(&prompt_tokens, &[], &feat, &xvec, &noise),
        "empty tokens",
    );
    let narrow_feat = feat.narrow(2, 0, 79).unwrap();
    is_input(
        s.flow
            .inference(&prompt_tokens, &tokens, &narrow_feat, &xvec, &noise),
        "prompt mel of 79 bins",
    );
    let short_noise = noise.narrow(2, 0, 19).unwrap();
    is_input(
        s.flow
            .inference(&prompt_tokens, &tokens, &feat, &xvec, &short_noise),
        "noise one frame short",
    );
    is_input(
        s.flow.inference(
            &prompt_tokens,
            &tokens,
            &feat,
            &xvec.narrow(1, 0, 100).unwrap(),
            &noise,
        ),
        "x-vector of 100 dims",
    );
    // A prompt mel covering every frame leaves nothing to synthesize.
    let long_feat = Tensor::zeros((1, 20, 80), DType::F32, &common::device()).unwrap();
    is_input(
        s.flow
            .inference(&prompt_tokens, &tokens, &long_feat, &xvec, &noise),
        "prompt mel as long as everything",
    );
}

#[test]
fn config_defaults_are_the_released_model() {
    let cfg: FlowConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(cfg, FlowConfig::default());
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.input_size,
            cfg.output_size,
            cfg.spk_embed_dim
        ),
        (6561, 512, 80, 192)
    );
    assert_eq!(
        (cfg.encoder.output_size, cfg.encoder.attention_heads),
        (512, 8)
    );
    assert_eq!((cfg.encoder.num_blocks, cfg.encoder.num_up_blocks), (6, 4));
    assert_eq!(cfg.estimator.channels, vec![256]);
    assert_eq!(
        (cfg.estimator.n_blocks, cfg.estimator.num_mid_blocks),
        (4, 12)
    );
    assert_eq!(cfg.cfm.n_timesteps, 10);
    cfg.validate().unwrap();
    let mut bad = cfg.clone();
    bad.estimator.channels = vec![256, 256];
    assert!(matches!(bad.validate(), Err(Error::Config(_))));
}

/// The released sizes build from a zero VarBuilder and run: every shape in the checkpoint
/// layout (S3GEN-KEYS.txt) is requested with the size the code expects.
#[test]
fn full_size_flow_builds_and_runs_from_zeros() {
    let cfg = FlowConfig::default();
    let flow = Flow::new(
        &cfg,
        VarBuilder::zeros(DType::F32, &common::device()).pp("flow"),
    )
    .unwrap();
    let frames = flow.mel_frames(2, 3);
    assert_eq!(frames, 10);
    let mel = flow
        .inference(
            &[1, 2],
            &[3, 4, 6560],
            &Tensor::zeros((1, 4, 80), DType::F32, &common::device()).unwrap(),
            &Tensor::ones((1, 192), DType::F32, &common::device()).unwrap(),
            &Tensor::ones((1, 80, frames), DType::F32, &common::device()).unwrap(),
        )
        .unwrap();
    assert_eq!(mel.dims(), [1, 80, 6]);
}
