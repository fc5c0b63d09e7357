//! Where the model's random draws come from: a seeded generator for synthesis, or recorded
//! tensors replayed in draw order so a run can match a reference exactly.

use std::collections::VecDeque;

use candle_core::{Device, Result, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A source of standard-normal tensors.
pub trait NoiseSource {
    /// A standard-normal tensor of `shape` (f32).
    fn standard_normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor>;
}

/// Deterministic noise from a seed.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: rand::rngs::StdRng,
}

impl SeededNoise {
    /// Noise from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn standard_normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        Tensor::from_vec(values, shape, device)
    }
}

/// Replays recorded draws; a draw of another shape is an error, never a silent reshape.
#[derive(Debug, Clone, Default)]
pub struct RecordedNoise {
    draws: VecDeque<Tensor>,
}

impl RecordedNoise {
    /// Replays `draws` in order.
    pub fn new(draws: impl IntoIterator<Item = Tensor>) -> Self {
        Self {
            draws: draws.into_iter().collect(),
        }
    }
}

impl NoiseSource for RecordedNoise {
    fn standard_normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let next = self.draws.pop_front().ok_or_else(|| {
            candle_core::Error::Msg(format!("no recorded noise left for a draw of {shape:?}"))
        })?;
        if next.dims() != shape {
            candle_core::bail!(
                "recorded noise has shape {:?}, the model drew {shape:?}",
                next.dims()
            );
        }
        next.to_device(device)
    }
}
