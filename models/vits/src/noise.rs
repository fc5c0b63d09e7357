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

/// Deterministic noise from a seed: draw `d` is filled in chunks of 16384 values, chunk `c`
/// from its own small generator seeded by `(seed, d, c)`, so the values do not depend on how
/// many threads fill them and a batch's prior noise (hundreds of thousands of values) does not
/// hold up a GPU run on one host thread.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seed: u64,
    draws: u64,
}

/// Values per independently seeded chunk of a draw.
const CHUNK: usize = 1 << 14;

impl SeededNoise {
    /// Noise from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, draws: 0 }
    }
}

/// SplitMix64's finaliser: spreads `(seed, draw, chunk)` over the generator's seed space.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl NoiseSource for SeededNoise {
    fn standard_normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        use rayon::prelude::*;
        let n = shape.iter().product();
        let draw = mix(self.seed ^ mix(self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15)));
        self.draws += 1;
        let mut values = vec![0f32; n];
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(draw ^ c as u64));
                for v in chunk {
                    *v = StandardNormal.sample(&mut rng);
                }
            });
        Tensor::from_vec(values, shape, device)
    }
}

/// Deterministic noise with a seed per batch item: item `i`'s values come from its own seed,
/// each row (all axes but the first and last) from its own generator, chunked along the last
/// axis (time). An item's noise is then the same whatever it is batched with and however far
/// the batch is padded past its length, so a unit's audio depends on its own seed alone.
#[derive(Debug, Clone)]
pub struct PerItemNoise {
    seeds: Vec<u64>,
    draws: u64,
}

impl PerItemNoise {
    /// Noise for a batch whose item `i` has seed `seeds[i]`.
    pub fn new(seeds: Vec<u64>) -> Self {
        Self { seeds, draws: 0 }
    }
}

impl NoiseSource for PerItemNoise {
    fn standard_normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        use rayon::prelude::*;
        let (Some(&b), Some(&len)) = (shape.first(), shape.last()) else {
            candle_core::bail!("per-item noise needs a batch axis and a time axis, got {shape:?}");
        };
        if b != self.seeds.len() || shape.len() < 2 {
            candle_core::bail!(
                "per-item noise for {} items asked for shape {shape:?}",
                self.seeds.len()
            );
        }
        let rows_per_item: usize = shape[1..shape.len() - 1].iter().product();
        let draw = mix(self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15));
        self.draws += 1;
        let mut values = vec![0f32; b * rows_per_item * len];
        if len > 0 {
            let seeds = &self.seeds;
            values
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(row, out)| {
                    let (item, r) = (row / rows_per_item, row % rows_per_item);
                    let key = mix(mix(seeds[item] ^ draw) ^ r as u64);
                    for (c, chunk) in out.chunks_mut(CHUNK).enumerate() {
                        let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(key ^ c as u64));
                        for v in chunk {
                            *v = StandardNormal.sample(&mut rng);
                        }
                    }
                });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(noise: &mut SeededNoise, n: usize) -> Vec<f32> {
        noise
            .standard_normal(&[n], &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn an_items_noise_does_not_depend_on_its_batch_or_padding() {
        let alone = PerItemNoise::new(vec![11])
            .standard_normal(&[1, 2, 5], &Device::Cpu)
            .unwrap();
        let batched = PerItemNoise::new(vec![3, 11])
            .standard_normal(&[2, 2, 9], &Device::Cpu)
            .unwrap();
        let ours = batched.narrow(0, 1, 1).unwrap().narrow(2, 0, 5).unwrap();
        assert_eq!(
            alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let other = batched.narrow(0, 0, 1).unwrap().narrow(2, 0, 5).unwrap();
        assert_ne!(
            other.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(PerItemNoise::new(vec![1])
            .standard_normal(&[2, 3], &Device::Cpu)
            .is_err());
    }

    #[test]
    fn seeded_draws_repeat_and_look_standard_normal() {
        let n = 3 * CHUNK + 17;
        let (mut a, mut b) = (SeededNoise::new(7), SeededNoise::new(7));
        let first = draw(&mut a, n);
        assert_eq!(first, draw(&mut b, n), "same seed, same draw");
        let second = draw(&mut a, n);
        assert_ne!(first, second, "a later draw is new noise");
        assert_ne!(first, draw(&mut SeededNoise::new(8), n), "another seed");
        // Chunks are seeded apart: no chunk repeats another.
        assert_ne!(first[..CHUNK], first[CHUNK..2 * CHUNK]);
        let mean = first.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = first
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "mean {mean}, variance {var}"
        );
    }
}
