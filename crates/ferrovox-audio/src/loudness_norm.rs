//! Loudness normalisation as Chatterbox Turbo conditions on a reference: pyloudnorm 0.2's
//! `Meter(rate).integrated_loudness`, then one gain to the target (`tts_turbo.py`'s
//! `norm_loudness`, −27 LUFS).
//!
//! pyloudnorm measures BS.1770-4 with its own K-weighting: two biquads from RBJ's cookbook
//! formulas at the clip's rate (a +4 dB high shelf at 1500 Hz, Q 1/√2, then a 38 Hz high pass,
//! Q 0.5), which differ slightly from the ITU's coefficients the EBU R128 meter of
//! [`crate::ReferenceClip`] uses; its 400 ms blocks step by 100 ms from the start and their
//! count is rounded, not floored. Matching upstream's gain needs its meter, so this is that
//! meter, in f64 as numpy runs it.

/// Gating block (s) and the step between blocks (a quarter block).
const BLOCK_S: f64 = 0.4;
const STEP: f64 = 1.0 - 0.75;
/// Absolute gate (LUFS) and the relative gate below the gated mean (LU).
const ABSOLUTE_GATE: f64 = -70.0;
const RELATIVE_GATE: f64 = 10.0;

/// One biquad's coefficients, normalised by `a0`.
#[derive(Debug, Clone, Copy)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 3],
}

impl Biquad {
    /// RBJ's high shelf of `gain_db` at `fc` (pyloudnorm's `high_shelf`).
    fn high_shelf(gain_db: f64, q: f64, fc: f64, rate: f64) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let w0 = 2.0 * std::f64::consts::PI * (fc / rate);
        let alpha = w0.sin() / (2.0 * q);
        let (cos, sqrt_a) = (w0.cos(), a.sqrt());
        Self::normalised(
            [
                a * ((a + 1.0) + (a - 1.0) * cos + 2.0 * sqrt_a * alpha),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - 2.0 * sqrt_a * alpha),
            ],
            [
                (a + 1.0) - (a - 1.0) * cos + 2.0 * sqrt_a * alpha,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - 2.0 * sqrt_a * alpha,
            ],
        )
    }

    /// RBJ's high pass at `fc` (pyloudnorm's `high_pass`).
    fn high_pass(q: f64, fc: f64, rate: f64) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * (fc / rate);
        let alpha = w0.sin() / (2.0 * q);
        let cos = w0.cos();
        Self::normalised(
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0],
            [1.0 + alpha, -2.0 * cos, 1.0 - alpha],
        )
    }

    fn normalised(b: [f64; 3], a: [f64; 3]) -> Self {
        let a0 = a[0];
        Self {
            b: b.map(|v| v / a0),
            a: a.map(|v| v / a0),
        }
    }

    /// `scipy.signal.lfilter(b, a, x)` from rest (direct form II transposed), in place.
    fn filter(&self, x: &mut [f64]) {
        let (mut z0, mut z1) = (0.0, 0.0);
        for v in x.iter_mut() {
            let input = *v;
            let y = self.b[0] * input + z0;
            z0 = self.b[1] * input - self.a[1] * y + z1;
            z1 = self.b[2] * input - self.a[2] * y;
            *v = y;
        }
    }
}

/// Integrated loudness (LUFS) of a mono clip as pyloudnorm 0.2 measures it; `None` for a clip
/// shorter than one 400 ms block (pyloudnorm refuses it), `−∞` where no block passes the gates.
pub fn upstream_integrated_loudness(samples: &[f32], rate: u32) -> Option<f64> {
    let rate_f = rate as f64;
    if rate == 0 || (samples.len() as f64) < BLOCK_S * rate_f {
        return None;
    }
    let mut x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
    Biquad::high_shelf(4.0, std::f64::consts::FRAC_1_SQRT_2, 1500.0, rate_f).filter(&mut x);
    Biquad::high_pass(0.5, 38.0, rate_f).filter(&mut x);
    let duration = samples.len() as f64 / rate_f;
    // numpy's round: half to even.
    let blocks = ((duration - BLOCK_S) / (BLOCK_S * STEP)).round_ties_even() as usize + 1;
    let norm = 1.0 / (BLOCK_S * rate_f);
    let z: Vec<f64> = (0..blocks)
        .map(|j| {
            // Python's int() of the same products, and numpy's clamped slice.
            let lo = ((BLOCK_S * (j as f64 * STEP) * rate_f) as usize).min(x.len());
            let hi = ((BLOCK_S * (j as f64 * STEP + 1.0) * rate_f) as usize).min(x.len());
            norm * x[lo..hi.max(lo)].iter().map(|v| v * v).sum::<f64>()
        })
        .collect();
    let loudness = |z: f64| -0.691 + 10.0 * z.log10();
    let block_loudness: Vec<f64> = z.iter().map(|&z| loudness(z)).collect();
    let mean_of = |keep: &dyn Fn(f64) -> bool| {
        let kept: Vec<f64> = z
            .iter()
            .zip(&block_loudness)
            .filter(|(_, &l)| keep(l))
            .map(|(&z, _)| z)
            .collect();
        (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64)
    };
    let Some(above_absolute) = mean_of(&|l| l >= ABSOLUTE_GATE) else {
        return Some(f64::NEG_INFINITY);
    };
    let relative = loudness(above_absolute) - RELATIVE_GATE;
    Some(mean_of(&|l| l > relative && l > ABSOLUTE_GATE).map_or(f64::NEG_INFINITY, loudness))
}

/// The gain `norm_loudness(wav, rate, target_lufs)` scales the clip by (as numpy applies it,
/// in f32); `None` where upstream leaves the clip as it is (too short to measure, or no finite
/// positive gain, as for silence).
pub fn loudness_gain(samples: &[f32], rate: u32, target_lufs: f64) -> Option<f32> {
    let loudness = upstream_integrated_loudness(samples, rate)?;
    let gain = 10f64.powf((target_lufs - loudness) / 20.0);
    (gain.is_finite() && gain > 0.0).then_some(gain as f32)
}

/// `norm_loudness(wav, rate, target_lufs)`: the clip scaled by [`loudness_gain`], or as it is.
pub fn normalize_loudness(samples: &[f32], rate: u32, target_lufs: f64) -> Vec<f32> {
    match loudness_gain(samples, rate, target_lufs) {
        Some(gain) => samples.iter().map(|&s| s * gain).collect(),
        None => samples.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, seconds: f64, amplitude: f64) -> Vec<f32> {
        (0..(seconds * rate as f64) as usize)
            .map(|i| {
                let t = i as f64 / rate as f64;
                (amplitude * (std::f64::consts::TAU * 997.0 * t).sin()) as f32
            })
            .collect()
    }

    /// BS.1770's reference: a 997 Hz sine at −20 dBFS RMS (amplitude 0.1·√2) reads −20 LUFS
    /// within the K-weighting's gain at 1 kHz (RBJ's shelf adds a little there).
    #[test]
    fn a_reference_sine_reads_near_minus_twenty() {
        let l =
            upstream_integrated_loudness(&tone(48_000, 5.0, 0.1 * 2f64.sqrt()), 48_000).unwrap();
        assert!((l + 20.0).abs() < 0.2, "{l}");
        let normalized = normalize_loudness(&tone(24_000, 6.0, 0.05), 24_000, -27.0);
        let l = upstream_integrated_loudness(&normalized, 24_000).unwrap();
        assert!((l + 27.0).abs() < 1e-4, "{l}");
    }

    #[test]
    fn silence_and_short_clips_are_left_as_they_are() {
        let silence = vec![0f32; 24_000 * 6];
        assert_eq!(
            upstream_integrated_loudness(&silence, 24_000),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(normalize_loudness(&silence, 24_000, -27.0), silence);
        let short = tone(24_000, 0.3, 0.5);
        assert_eq!(upstream_integrated_loudness(&short, 24_000), None);
        assert_eq!(normalize_loudness(&short, 24_000, -27.0), short);
        assert_eq!(upstream_integrated_loudness(&short, 0), None);
    }
}
