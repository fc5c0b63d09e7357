//! Mirrors `SineGen` and `SourceModuleHnNSF` (`s3gen/hifigan.py`): the harmonic excitation
//! that HiFT's filter shapes, built from the predicted F0.
//!
//! Upstream draws two random tensors here (the harmonics' initial phases and additive noise);
//! they come from a [`SourceNoise`] so a run can replay upstream's draws exactly.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rayon::prelude::*;

use super::config::HiftConfig;
use crate::{Error, Result};

/// Where the source's random draws come from.
pub trait SourceNoise {
    /// `[batch, harmonics, 1]` uniform draws in `[0, 1)` (`torch.rand`): the initial phases,
    /// mapped to `[-π, π)`.
    fn phase_uniform(&mut self, batch: usize, harmonics: usize, device: &Device) -> Result<Tensor>;
    /// `[batch, harmonics, samples]` standard-normal draws (`torch.randn_like(sine_waves)`).
    fn sine_normal(
        &mut self,
        batch: usize,
        harmonics: usize,
        samples: usize,
        device: &Device,
    ) -> Result<Tensor>;
}

/// Replays recorded draws (upstream's `noise.phase_rand` and `noise.sine`); a draw of another
/// shape is an error, never a silent reshape.
#[derive(Debug, Clone)]
pub struct RecordedSourceNoise {
    pub phase_rand: Tensor,
    pub sine: Tensor,
}

fn recorded(tensor: &Tensor, want: &[usize], what: &str, device: &Device) -> Result<Tensor> {
    if tensor.dims() != want {
        return Err(Error::Input(format!(
            "recorded {what} noise has shape {:?}, the source drew {want:?}",
            tensor.dims()
        )));
    }
    Ok(tensor.to_device(device)?)
}

impl SourceNoise for RecordedSourceNoise {
    fn phase_uniform(&mut self, batch: usize, harmonics: usize, device: &Device) -> Result<Tensor> {
        recorded(&self.phase_rand, &[batch, harmonics, 1], "phase", device)
    }

    fn sine_normal(
        &mut self,
        batch: usize,
        harmonics: usize,
        samples: usize,
        device: &Device,
    ) -> Result<Tensor> {
        recorded(&self.sine, &[batch, harmonics, samples], "sine", device)
    }
}

/// Deterministic draws from a seed (SplitMix64, Box-Muller). Not torch's generator: audio
/// from a seed is reproducible here, but differs from upstream's for the same seed.
#[derive(Debug, Clone)]
pub struct SeededSourceNoise {
    state: u64,
}

impl SeededSourceNoise {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one position of one stream of draws: its state is `seed`, `stream` and
    /// `index` mixed through SplitMix64's finaliser, so the draws at a position do not depend
    /// on how many draws other positions took (what lets a stream that synthesizes an
    /// utterance in pieces reproduce the one-shot draws).
    pub fn keyed(seed: u64, stream: u64, index: u64) -> Self {
        let mut mixer = Self::new(seed);
        let mut state = mixer.next_u64();
        for key in [stream, index] {
            mixer.state = state ^ key;
            state = mixer.next_u64();
        }
        Self::new(state)
    }

    /// `n` standard-normal draws.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut values = Vec::with_capacity(n + 1);
        while values.len() < n {
            // Box-Muller: two normals from two uniforms; 1 - u keeps the log finite.
            let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
            let angle = 2.0 * std::f64::consts::PI * self.uniform();
            values.push((radius * angle.cos()) as f32);
            values.push((radius * angle.sin()) as f32);
        }
        values.truncate(n);
        values
    }

    /// `n` uniform draws in `[0, 1)` as f32 (rounding can reach 1.0 in f32; it is kept below).
    pub fn uniforms(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.uniform() as f32).min(1.0 - f32::EPSILON / 2.0))
            .collect()
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SourceNoise for SeededSourceNoise {
    fn phase_uniform(&mut self, batch: usize, harmonics: usize, device: &Device) -> Result<Tensor> {
        let values = self.uniforms(batch * harmonics);
        Ok(Tensor::from_vec(values, (batch, harmonics, 1), device)?)
    }

    fn sine_normal(
        &mut self,
        batch: usize,
        harmonics: usize,
        samples: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let values = self.normals(batch * harmonics * samples);
        Ok(Tensor::from_vec(
            values,
            (batch, harmonics, samples),
            device,
        )?)
    }
}

/// The sine source's running state between calls: each harmonic's initial phase (drawn once
/// per utterance) and its phase accumulator in cycles. Carrying it makes a source generated in
/// pieces equal to one generated in one call, sample for sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SinePhase {
    /// `[b · H]` radians, the fundamental's 0.
    initial: Vec<f32>,
    /// `[b · H]` cycles so far (f64, as torch's CPU `cumsum` accumulates).
    cycles: Vec<f64>,
}

impl SinePhase {
    /// The state before the first sample.
    pub fn new(initial: Vec<f32>) -> Self {
        let cycles = vec![0.0; initial.len()];
        Self { initial, cycles }
    }

    /// Accumulated cycles per harmonic (`[b · H]`).
    pub fn cycles(&self) -> &[f64] {
        &self.cycles
    }
}

/// `SineGen`: F0 at the audio rate to `nb_harmonics + 1` noisy sines, silenced where unvoiced.
#[derive(Debug, Clone)]
pub struct SineGen {
    harmonics: usize,
    sampling_rate: u32,
    sine_amp: f32,
    noise_std: f32,
    voiced_threshold: f32,
}

impl SineGen {
    pub fn new(cfg: &HiftConfig) -> Self {
        Self {
            harmonics: cfg.nb_harmonics + 1,
            sampling_rate: cfg.sampling_rate,
            sine_amp: cfg.nsf_alpha as f32,
            noise_std: cfg.nsf_sigma as f32,
            voiced_threshold: cfg.nsf_voiced_threshold as f32,
        }
    }

    /// Sines plus harmonics.
    pub fn harmonics(&self) -> usize {
        self.harmonics
    }

    /// The harmonics' initial phases `[b, H, 1]` from uniform draws: `-π + u · 2π` in f32 (torch's
    /// `Uniform(-π, π)`), the fundamental's forced to 0 (the fixture's `noise.phase`).
    pub fn initial_phase(&self, uniform: &[f32]) -> Vec<f32> {
        let low = -std::f32::consts::PI;
        let span = std::f32::consts::PI - low;
        uniform
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                if i % self.harmonics == 0 {
                    0.0
                } else {
                    low + u * span
                }
            })
            .collect()
    }

    /// The state before the first sample, from the initial-phase draw.
    pub fn start(
        &self,
        batch: usize,
        noise: &mut dyn SourceNoise,
        device: &Device,
    ) -> Result<SinePhase> {
        let uniform = noise
            .phase_uniform(batch, self.harmonics, device)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(SinePhase::new(self.initial_phase(&uniform)))
    }

    /// `f0` `[b, samples]` Hz (already at the audio rate) to sine waves `[b, H, samples]`.
    /// Draws the initial phases, then the noise, in upstream's order.
    pub fn forward(&self, f0: &Tensor, noise: &mut dyn SourceNoise) -> Result<Tensor> {
        let (batch, samples) = f0.dims2()?;
        let device = f0.device();
        let mut phase = self.start(batch, noise, device)?;
        let normal = noise.sine_normal(batch, self.harmonics, samples, device)?;
        self.forward_continued(f0, &normal, &mut phase)
    }

    /// [`Self::forward`] for the samples after those `phase` has seen, with the noise given
    /// (`normal` `[b, H, samples]` standard normal); advances `phase` past them.
    ///
    /// Runs on the host. The running phase is `cumsum(f0 · (h+1) / sr)` accumulated in f64 and
    /// stored per sample as f32, as torch's CPU `cumsum` does (an f32 running sum drifts by
    /// ~1e-2 cycles over 10 s); the rest follows upstream's f32 arithmetic. Because the f64
    /// accumulator is carried, pieces give the same samples as one call.
    pub fn forward_continued(
        &self,
        f0: &Tensor,
        normal: &Tensor,
        phase: &mut SinePhase,
    ) -> Result<Tensor> {
        let (batch, samples) = f0.dims2()?;
        let device = f0.device();
        let h = self.harmonics;
        if normal.dims() != [batch, h, samples] || phase.cycles.len() != batch * h {
            return Err(Error::Input(format!(
                "sine noise {:?} and phase state of {} harmonics for f0 {:?}, expected \
                 [{batch}, {h}, {samples}] and {}",
                normal.dims(),
                phase.cycles.len(),
                f0.dims(),
                batch * h
            )));
        }
        let f0 = f0.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let normal = normal
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let two_pi = 2.0 * std::f32::consts::PI;
        let sr = self.sampling_rate as f32;
        let unvoiced_std = (self.sine_amp as f64 / 3.0) as f32;
        let mut out = vec![0f32; batch * h * samples];
        // Each (item, harmonic) row carries its own accumulator, so rows run in parallel with
        // the values of a sequential run (10 s of audio is 2.2 M sines).
        out.par_chunks_mut(samples.max(1))
            .zip(phase.cycles.par_iter_mut())
            .enumerate()
            .for_each(|(row, (out, cycles))| {
                let (b, harmonic) = (row / h, row % h);
                let factor = (harmonic + 1) as f32;
                let initial = phase.initial[row];
                let normal = &normal[row * samples..(row + 1) * samples];
                for (n, &hz) in f0[b].iter().enumerate() {
                    *cycles += (hz * factor / sr) as f64;
                    let fraction = (*cycles as f32).fract();
                    let theta = two_pi * fraction + initial;
                    let sine = self.sine_amp * ((theta as f64).sin() as f32);
                    let voiced = hz > self.voiced_threshold;
                    let (sine, std) = if voiced {
                        (sine, self.noise_std)
                    } else {
                        (0.0, unvoiced_std)
                    };
                    out[n] = sine + std * normal[n];
                }
            });
        Ok(Tensor::from_vec(out, (batch, h, samples), device)?)
    }
}

/// `SourceModuleHnNSF`: the sines merged into one excitation, `tanh(l_linear(sines))`.
/// (Upstream also draws a noise branch that inference discards; it is not drawn here.)
#[derive(Debug, Clone)]
pub struct SourceModuleHnNsf {
    sine_gen: SineGen,
    /// `Linear(H -> 1)`.
    l_linear: Linear,
}

impl SourceModuleHnNsf {
    /// `vb` at `mel2wav.m_source`.
    pub fn new(cfg: &HiftConfig, vb: VarBuilder) -> Result<Self> {
        let sine_gen = SineGen::new(cfg);
        let l_linear =
            candle_nn::linear(sine_gen.harmonics(), 1, vb.pp("l_linear")).map_err(|e| {
                Error::Checkpoint {
                    path: format!("{}.l_linear", vb.prefix()),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self { sine_gen, l_linear })
    }

    pub fn sine_gen(&self) -> &SineGen {
        &self.sine_gen
    }

    /// `f0` `[b, samples]` Hz at the audio rate to the excitation `[b, 1, samples]`.
    pub fn forward(&self, f0: &Tensor, noise: &mut dyn SourceNoise) -> Result<Tensor> {
        let sines = self.sine_gen.forward(f0, noise)?.to_dtype(f0.dtype())?;
        self.merge(&sines)
    }

    /// [`Self::forward`] continuing from `phase` with the given sine noise
    /// ([`SineGen::forward_continued`]).
    pub fn forward_continued(
        &self,
        f0: &Tensor,
        normal: &Tensor,
        phase: &mut SinePhase,
    ) -> Result<Tensor> {
        let sines = self
            .sine_gen
            .forward_continued(f0, normal, phase)?
            .to_dtype(f0.dtype())?;
        self.merge(&sines)
    }

    fn merge(&self, sines: &Tensor) -> Result<Tensor> {
        Ok(self
            .l_linear
            .forward(&sines.transpose(1, 2)?)?
            .tanh()?
            .transpose(1, 2)?)
    }
}
