//! S3Gen's meanflow decoder (Chatterbox Turbo's `s3gen_meanflow.safetensors`) against upstream
//! chatterbox-tts 0.1.7 on a small random-weight build (`s3gen_meanflow.safetensors`,
//! `xtask/fixtures/chatterbox/gen_s3gen_meanflow.py`): one estimator call with its end time,
//! then the 2-step solve Turbo runs and the 1-step option, from upstream's noise.

mod common;

use std::collections::HashMap;

use candle_core::Tensor;
use common::t3::from;
use common::{max_abs_diff, Fixture};
use ferrovox_chatterbox::s3gen::cfm::CausalConditionalCfm;
use ferrovox_chatterbox::s3gen::{CfmConfig, EstimatorConfig};

fn model(steps: usize) -> (CausalConditionalCfm, Fixture) {
    let fx = Fixture::load("s3gen_meanflow");
    let estimator: EstimatorConfig = from(&fx.config["estimator"]);
    assert!(estimator.meanflow && estimator.channels == [16]);
    let cfm = CfmConfig {
        n_timesteps: steps,
        ..CfmConfig::default()
    };
    let vb = fx.vb().pp("flow.decoder");
    (CausalConditionalCfm::new(&cfm, &estimator, vb).unwrap(), fx)
}

fn check(what: &str, got: &Tensor, want: &Tensor, bound: f32) {
    let err = max_abs_diff(got, want);
    eprintln!("{what}: max|diff| {err:.2e} (bound {bound:.0e})");
    assert!(err <= bound, "{what}: {err} > {bound}");
}

/// The estimator over the step from t = 0.25 to r = 0.75: bound 1e-4 (the U-Net's dozen
/// convolution and attention blocks in f32).
#[test]
fn the_estimator_takes_the_end_time_as_upstream() {
    let (cfm, fx) = model(2);
    let est = cfm.estimator();
    assert!(est.is_meanflow());
    let out = est
        .forward_meanflow(
            &fx.get("est.in.x"),
            &fx.get("in.mask"),
            &fx.get("in.mu"),
            &fx.get("est.in.t"),
            &fx.get("est.in.r"),
            &fx.get("in.spks"),
            &fx.get("in.cond"),
        )
        .unwrap();
    check("estimator", &out, &fx.get("est.out"), 1e-4);
    // The end time changes the field (the mixer reads it).
    let same_end = est
        .forward_meanflow(
            &fx.get("est.in.x"),
            &fx.get("in.mask"),
            &fx.get("in.mu"),
            &fx.get("est.in.t"),
            &fx.get("est.in.t"),
            &fx.get("in.spks"),
            &fx.get("in.cond"),
        )
        .unwrap();
    assert!(max_abs_diff(&same_end, &out) > 1e-3);
}

/// Turbo's 2-step solve and the 1-step option from upstream's noise, x before each step and
/// the mel: bound 1e-4.
#[test]
fn the_solve_matches_upstream_in_two_steps_and_in_one() {
    for steps in [2usize, 1] {
        let (cfm, fx) = model(steps);
        let mut seen = HashMap::new();
        let out = cfm
            .forward_recorded(
                &fx.get("mf.noise"),
                &fx.get("in.mu"),
                &fx.get("in.mask"),
                &fx.get("in.spks"),
                &fx.get("in.cond"),
                &mut |name, t| {
                    seen.insert(name.to_string(), t.clone());
                },
            )
            .unwrap();
        assert_eq!(seen.len(), steps);
        for k in 0..steps {
            let name = format!("x_steps.{k}");
            check(
                &format!("{steps} steps: {name}"),
                &seen[&name],
                &fx.get(&format!("mf{steps}.{name}")),
                1e-4,
            );
        }
        check(
            &format!("{steps} steps: mel"),
            &out,
            &fx.get(&format!("mf{steps}.out")),
            1e-4,
        );
    }
    assert_eq!(CausalConditionalCfm::linspace(2), [0.0, 0.5, 1.0]);
}
