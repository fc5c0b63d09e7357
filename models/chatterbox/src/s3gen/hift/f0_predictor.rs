//! Mirrors `ConvRNNF0Predictor` (`s3gen/f0_predictor.py`): mel frames to F0 in Hz.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::config::F0PredictorConfig;
use super::conv::{self, Conv1d};
use crate::{Error, Result};

/// `torch.nn.ELU()` (alpha 1): `x` where positive, else `expm1(x)`.
///
/// torch evaluates `expm1`; Candle's `elu` uses `exp(x) - 1`, whose absolute error of ~6e-8
/// near 0 is large relative to small outputs, and the classifier behind this net multiplies
/// its input error by its weights' L1 norm (~1.7e3 in the fixture). Candle has no `expm1`,
/// so it is `2t / (1 - t)` with `t = tanh(x / 2)`, accurate to a few ulp for `x <= 0`.
fn elu(x: &Tensor) -> candle_core::Result<Tensor> {
    let t = x.minimum(0f32)?.affine(0.5, 0.0)?.tanh()?;
    let expm1 = ((&t + &t)? / t.affine(-1.0, 1.0)?)?;
    x.maximum(0f32)? + expm1
}

/// Five weight-normed `Conv1d(k 3, pad 1)` + ELU layers (`condnet.{0,2,4,6,8}`; the odd
/// indices are the ELUs), then `classifier` `Linear(cond_channels -> 1)` and `abs`.
#[derive(Debug, Clone)]
pub struct ConvRnnF0Predictor {
    condnet: Vec<Conv1d>,
    classifier: Linear,
}

impl ConvRnnF0Predictor {
    /// `vb` at `mel2wav.f0_predictor`.
    pub fn new(cfg: &F0PredictorConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.cond_channels;
        let condnet = (0..5)
            .map(|i| {
                let in_channels = if i == 0 { cfg.in_channels } else { c };
                conv::conv1d(
                    vb.pp(format!("condnet.{}", 2 * i)),
                    in_channels,
                    c,
                    3,
                    conv::exact(conv::same(3, 1)),
                )
            })
            .collect::<Result<_>>()?;
        let classifier = candle_nn::linear(c, cfg.num_class, vb.pp("classifier")).map_err(|e| {
            Error::Checkpoint {
                path: format!("{}.classifier", vb.prefix()),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            condnet,
            classifier,
        })
    }

    /// The condnet's output `[b, cond_channels, t]` (the fixture's `f0_condnet`).
    pub fn condnet(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = mel.clone();
        for conv in &self.condnet {
            x = elu(&conv.forward(&x)?)?;
        }
        Ok(x)
    }

    /// Mel frames each side that one F0 value depends on (one per k3 conv): F0 computed on
    /// a slice of a longer mel equals the full computation this far from the slice's edges.
    pub fn context_frames(&self) -> usize {
        self.condnet.len()
    }

    /// F0 from the condnet's output: `[b, t]` Hz, never negative.
    pub fn classify(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.classifier
            .forward(&hidden.transpose(1, 2)?)?
            .squeeze(2)?
            .abs()
    }
}

impl Module for ConvRnnF0Predictor {
    /// `mel` `[b, in_channels, t]` to F0 `[b, t]` Hz.
    fn forward(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        self.classify(&self.condnet(mel)?)
    }
}
