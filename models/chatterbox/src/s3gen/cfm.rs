//! Mirrors `CausalConditionalCFM` (`flow_matching.py`) at inference: Euler steps of the
//! estimator's vector field on a cosine time schedule, with classifier-free guidance from an
//! unconditional half of the batch.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use ferrovox_device::stages::stage;
use ferrovox_device::GraphCache;

use crate::s3gen::estimator::ConditionalDecoder;
use crate::s3gen::flow_config::{CfmConfig, EstimatorConfig};

/// The flow-matching ODE solver around the U-Net estimator.
#[derive(Debug, Clone)]
pub struct CausalConditionalCfm {
    estimator: ConditionalDecoder,
    n_timesteps: usize,
    cfg_rate: f64,
    /// The estimator's graphs on CUDA, per input shape: its ten calls per decode share one
    /// shape, and a voice's stream chunks repeat their shapes from one request to the next.
    graphs: Arc<GraphCache>,
}

/// Estimator shapes held as graphs: a voice's chunk schedule and a few one-shot lengths.
const ESTIMATOR_GRAPHS: usize = 16;

impl CausalConditionalCfm {
    /// `vb` at `flow.decoder`.
    pub fn new(cfg: &CfmConfig, estimator: &EstimatorConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            estimator: ConditionalDecoder::new(estimator, vb.pp("estimator"))?,
            n_timesteps: cfg.n_timesteps,
            cfg_rate: cfg.inference_cfg_rate,
            graphs: Arc::new(GraphCache::with_limit(
                "chatterbox.cfm.estimator",
                ESTIMATOR_GRAPHS,
            )),
        })
    }

    /// The estimator's graphs, for benches and logs.
    pub fn graphs(&self) -> &GraphCache {
        &self.graphs
    }

    pub fn estimator(&self) -> &ConditionalDecoder {
        &self.estimator
    }

    /// See [`ConditionalDecoder::bf16_products`].
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.estimator.bf16_products(on)
    }

    /// `1 − cos(linspace(0, 1, n + 1) · π/2)` (see [`Self::linspace`]).
    pub fn t_span(n_timesteps: usize) -> Vec<f32> {
        Self::linspace(n_timesteps)
            .into_iter()
            .map(|lin| 1f32 - (lin * 0.5 * std::f32::consts::PI).cos())
            .collect()
    }

    /// `linspace(0, 1, n + 1)` in f32 as torch computes it (the first half counted up from 0,
    /// the second down from 1), so the steps match upstream's to the bit; a meanflow
    /// estimator's schedule as it is.
    pub fn linspace(n_timesteps: usize) -> Vec<f32> {
        let n = n_timesteps.max(1);
        let steps = n + 1;
        let step = 1f32 / n as f32;
        (0..steps)
            .map(|i| {
                if i < steps / 2 {
                    step * i as f32
                } else {
                    1f32 - step * (steps - 1 - i) as f32
                }
            })
            .collect()
    }

    /// Solves from `noise` (the start `x₀`, upstream's `randn_like(mu)`) to the mel.
    /// `noise`, `mu`, `cond` `[b, 80, t]`; `mask` `[b, 1, t]`; `spks` `[b, 80]`.
    pub fn forward(
        &self,
        noise: &Tensor,
        mu: &Tensor,
        mask: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        stage("s3gen.cfm", noise.device(), || {
            self.forward_recorded(noise, mu, mask, spks, cond, &mut |_, _| {})
        })
    }

    /// [`Self::forward`], handing `x` before each step `k` to `record` as `x_steps.{k}`.
    pub fn forward_recorded(
        &self,
        noise: &Tensor,
        mu: &Tensor,
        mask: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        if self.estimator.is_meanflow() {
            return self.meanflow_euler(noise, mu, mask, spks, cond, self.n_timesteps, record);
        }
        let b = mu.dim(0)?;
        // Rows [0, b) are conditional, [b, 2b) the same x with mu, spks and cond zeroed.
        let doubled = |cond_half: &Tensor, zero_uncond: bool| -> Result<Tensor> {
            let other = if zero_uncond {
                cond_half.zeros_like()?
            } else {
                cond_half.clone()
            };
            Tensor::cat(&[cond_half, &other], 0)
        };
        let mask_in = doubled(mask, false)?;
        let mu_in = doubled(mu, true)?;
        let spks_in = doubled(spks, true)?;
        let cond_in = doubled(cond, true)?;
        let t_span = Self::t_span(self.n_timesteps);
        let w = self.cfg_rate;
        let mut x = noise.clone();
        for (k, pair) in t_span.windows(2).enumerate() {
            let (t, r) = (pair[0], pair[1]);
            record(&format!("x_steps.{k}"), &x);
            let x_in = doubled(&x, false)?;
            let t_in = Tensor::full(t, 2 * b, x.device())?.to_dtype(x.dtype())?;
            let (v, _) =
                self.graphs
                    .run(&[&x_in, &mask_in, &mu_in, &t_in, &spks_in, &cond_in], |i| {
                        self.estimator
                            .forward(&i[0], &i[1], &i[2], &i[3], &i[4], &i[5])
                    })?;
            let (v_cond, v_uncond) = (v.narrow(0, 0, b)?, v.narrow(0, b, b)?);
            let guided = (v_cond.affine(1.0 + w, 0.0)? - v_uncond.affine(w, 0.0)?)?;
            x = (x + guided.affine((r - t) as f64, 0.0)?)?;
        }
        Ok(x)
    }

    /// A meanflow estimator's solve (`basic_euler`): `steps` Euler steps over
    /// [`Self::linspace`], each the field from its start to its end time, no guidance row
    /// (the distilled model was trained on guided outputs). Turbo runs 2; 1 is the one-step
    /// option.
    #[allow(clippy::too_many_arguments)]
    pub fn meanflow_euler(
        &self,
        noise: &Tensor,
        mu: &Tensor,
        mask: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        steps: usize,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let b = mu.dim(0)?;
        let mut x = noise.clone();
        for (k, pair) in Self::linspace(steps).windows(2).enumerate() {
            let (t, r) = (pair[0], pair[1]);
            record(&format!("x_steps.{k}"), &x);
            let at = |v: f32| Tensor::full(v, b, x.device())?.to_dtype(x.dtype());
            let (t_in, r_in) = (at(t)?, at(r)?);
            let (v, _) = self
                .graphs
                .run(&[&x, mask, mu, &t_in, &r_in, spks, cond], |i| {
                    self.estimator
                        .forward_meanflow(&i[0], &i[1], &i[2], &i[3], &i[4], &i[5], &i[6])
                })?;
            x = (x + v.affine((r - t) as f64, 0.0)?)?;
        }
        Ok(x)
    }
}
