//! Short-time Fourier transforms as torch computes them (`torch.stft` / `torch.istft`: onesided,
//! unnormalised, window as long as the FFT), on plain f32 buffers with realfft.
//!
//! The transforms run in f64 and round once to f32: torch's own f32 FFT carries ~1e-7 relative
//! error, and an exact transform sits closer to it than a second f32 FFT with different rounding.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Why a transform could not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StftError {
    /// FFT size, hop or window that do not describe a transform.
    #[error("invalid STFT parameters: {0}")]
    Params(String),
    /// A signal too short for the padding or framing asked for.
    #[error("{what} needs at least {needed} samples, got {len}")]
    TooShort {
        what: &'static str,
        len: usize,
        needed: usize,
    },
    /// A spectrogram whose buffers do not match its shape or the transform.
    #[error("spectrogram shape: {0}")]
    Shape(String),
}

/// Periodic Hann window as `torch.hann_window(n)` builds it in f32:
/// `0.5 - 0.5 * cos(k * f32(2π / n))`, the product rounded to f32 before the cosine.
pub fn hann_window_torch(n: usize) -> Vec<f32> {
    let step = (2.0 * std::f64::consts::PI / n as f64) as f32;
    (0..n)
        .map(|k| {
            let angle = k as f32 * step;
            // The cosine of the f32 angle, correctly rounded. torch's vectorised f32 cos is
            // not, so a few values differ from `torch.hann_window` by one ulp (6e-8);
            // evaluating in f64 at least makes this independent of the platform's libm.
            let cos = (angle as f64).cos() as f32;
            0.5 - 0.5 * cos
        })
        .collect()
}

/// Periodic Hann window as `scipy.signal.get_window("hann", n, fftbins=True)` builds it:
/// `0.5 - 0.5 * cos(2πk / n)` in f64, cast to f32 (HiFT's STFT window).
pub fn hann_window_scipy(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| {
            let angle = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            (0.5 - 0.5 * angle.cos()) as f32
        })
        .collect()
}

/// Reflect padding (`F.pad(mode="reflect")`, numpy's "reflect"): mirrors about the edge sample
/// without repeating it, so each pad must be shorter than the signal.
pub fn reflect_pad(signal: &[f32], left: usize, right: usize) -> Result<Vec<f32>, StftError> {
    let len = signal.len();
    let needed = left.max(right) + 1;
    if len < needed {
        return Err(StftError::TooShort {
            what: "reflect padding",
            len,
            needed,
        });
    }
    let mut out = Vec::with_capacity(left + len + right);
    out.extend((1..=left).rev().map(|i| signal[i]));
    out.extend_from_slice(signal);
    out.extend((1..=right).map(|i| signal[len - 1 - i]));
    Ok(out)
}

/// A onesided complex spectrogram, frame-major: bin `k` of frame `f` is
/// `(re[f * bins + k], im[f * bins + k])`. (torch's `[bins, frames]` is the transpose.)
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    pub frames: usize,
    pub bins: usize,
    pub re: Vec<f32>,
    pub im: Vec<f32>,
}

impl Spectrogram {
    /// Wraps frame-major buffers, checking that they hold `frames * bins` values each.
    pub fn new(frames: usize, bins: usize, re: Vec<f32>, im: Vec<f32>) -> Result<Self, StftError> {
        let want = frames * bins;
        if re.len() != want || im.len() != want {
            return Err(StftError::Shape(format!(
                "{frames} frames x {bins} bins need {want} values, got re {} and im {}",
                re.len(),
                im.len()
            )));
        }
        Ok(Self {
            frames,
            bins,
            re,
            im,
        })
    }
}

/// An STFT of fixed size, hop and window, with its FFT plans made once.
#[derive(Clone)]
pub struct Stft {
    n_fft: usize,
    hop: usize,
    window: Vec<f32>,
    forward: Arc<dyn RealToComplex<f64>>,
    inverse: Arc<dyn ComplexToReal<f64>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft")
            .field("n_fft", &self.n_fft)
            .field("hop", &self.hop)
            .finish_non_exhaustive()
    }
}

impl Stft {
    /// A transform of `n_fft` points advancing `hop` samples; `window` has `n_fft` values.
    pub fn new(n_fft: usize, hop: usize, window: Vec<f32>) -> Result<Self, StftError> {
        if n_fft == 0 || hop == 0 {
            return Err(StftError::Params(format!(
                "n_fft ({n_fft}) and hop ({hop}) must be positive"
            )));
        }
        if window.len() != n_fft {
            return Err(StftError::Params(format!(
                "window has {} values, n_fft is {n_fft}",
                window.len()
            )));
        }
        let mut planner = RealFftPlanner::<f64>::new();
        Ok(Self {
            n_fft,
            hop,
            window,
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        })
    }

    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// Onesided bins per frame, `n_fft / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// `torch.stft(signal, n_fft, hop, window=window, center=center, pad_mode="reflect",
    /// onesided=True, normalized=False)`. With `center`, the signal is first reflect-padded by
    /// `n_fft / 2` on both sides. Frame `f` covers samples `hop * f .. hop * f + n_fft`.
    pub fn forward(&self, signal: &[f32], center: bool) -> Result<Spectrogram, StftError> {
        let padded;
        let signal = if center {
            let half = self.n_fft / 2;
            padded = reflect_pad(signal, half, half).map_err(|_| StftError::TooShort {
                what: "a centred STFT",
                len: signal.len(),
                needed: half + 1,
            })?;
            &padded[..]
        } else {
            signal
        };
        if signal.len() < self.n_fft {
            return Err(StftError::TooShort {
                what: "an STFT frame",
                len: signal.len(),
                needed: self.n_fft,
            });
        }
        let frames = 1 + (signal.len() - self.n_fft) / self.hop;
        let bins = self.bins();
        let mut re = Vec::with_capacity(frames * bins);
        let mut im = Vec::with_capacity(frames * bins);
        let mut input = self.forward.make_input_vec();
        let mut output = self.forward.make_output_vec();
        let mut scratch = self.forward.make_scratch_vec();
        for f in 0..frames {
            let frame = &signal[f * self.hop..f * self.hop + self.n_fft];
            for ((slot, &x), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                // torch windows in f32 before its FFT.
                *slot = (x * w) as f64;
            }
            self.forward
                .process_with_scratch(&mut input, &mut output, &mut scratch)
                .map_err(|e| StftError::Params(e.to_string()))?;
            re.extend(output.iter().map(|c| c.re as f32));
            im.extend(output.iter().map(|c| c.im as f32));
        }
        Ok(Spectrogram {
            frames,
            bins,
            re,
            im,
        })
    }

    /// `torch.istft(spec, n_fft, hop, window=window, center=True, onesided=True,
    /// normalized=False, length=None)`: each frame's inverse real FFT (scaled by `1 / n_fft`;
    /// the imaginary parts of the DC and Nyquist bins are ignored, as a C2R FFT does) times the
    /// window, overlap-added at `hop`, divided by the overlap-added squared window, with
    /// `n_fft / 2` samples dropped at each end: `hop * (frames - 1)` samples.
    pub fn inverse(&self, spec: &Spectrogram) -> Result<Vec<f32>, StftError> {
        let bins = self.bins();
        if spec.bins != bins {
            return Err(StftError::Shape(format!(
                "{} bins, an n_fft of {} needs {bins}",
                spec.bins, self.n_fft
            )));
        }
        if spec.re.len() != spec.frames * bins || spec.im.len() != spec.frames * bins {
            return Err(StftError::Shape(format!(
                "{} frames x {bins} bins, but re has {} and im {} values",
                spec.frames,
                spec.re.len(),
                spec.im.len()
            )));
        }
        if spec.frames == 0 {
            return Err(StftError::TooShort {
                what: "an inverse STFT",
                len: 0,
                needed: 1,
            });
        }
        let n = self.n_fft;
        let full = n + self.hop * (spec.frames - 1);
        let mut signal = vec![0f32; full];
        let mut envelope = vec![0f32; full];
        let mut input = self.inverse.make_input_vec();
        let mut output = self.inverse.make_output_vec();
        let mut scratch = self.inverse.make_scratch_vec();
        let scale = 1.0 / n as f64;
        for f in 0..spec.frames {
            let row = f * bins..(f + 1) * bins;
            for ((slot, &re), &im) in input
                .iter_mut()
                .zip(&spec.re[row.clone()])
                .zip(&spec.im[row])
            {
                *slot = Complex::new(re as f64, im as f64);
            }
            // A real signal's DC (and, for even sizes, Nyquist) bin is real; torch's C2R FFT
            // ignores those imaginary parts, realfft refuses them.
            input[0].im = 0.0;
            if n.is_multiple_of(2) {
                input[bins - 1].im = 0.0;
            }
            self.inverse
                .process_with_scratch(&mut input, &mut output, &mut scratch)
                .map_err(|e| StftError::Params(e.to_string()))?;
            let start = f * self.hop;
            for (i, (&x, &w)) in output.iter().zip(&self.window).enumerate() {
                signal[start + i] += (x * scale) as f32 * w;
                envelope[start + i] += w * w;
            }
        }
        let half = n / 2;
        let kept = half..full - half;
        if let Some(i) = envelope[kept.clone()].iter().position(|&e| e.abs() < 1e-11) {
            return Err(StftError::Params(format!(
                "window envelope vanishes at sample {i}: window and hop fail the NOLA condition"
            )));
        }
        Ok(signal[kept.clone()]
            .iter()
            .zip(&envelope[kept])
            .map(|(&y, &e)| y / e)
            .collect())
    }
}

/// One-shot [`Stft::forward`].
pub fn stft(
    signal: &[f32],
    n_fft: usize,
    hop: usize,
    window: &[f32],
    center: bool,
) -> Result<Spectrogram, StftError> {
    Stft::new(n_fft, hop, window.to_vec())?.forward(signal, center)
}

/// One-shot [`Stft::inverse`] (torch's `center=True`).
pub fn istft(
    spec: &Spectrogram,
    n_fft: usize,
    hop: usize,
    window: &[f32],
) -> Result<Vec<f32>, StftError> {
    Stft::new(n_fft, hop, window.to_vec())?.inverse(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test signal (a chirp plus a little xorshift noise).
    fn signal(len: usize) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let t = i as f32 / 100.0;
                (t * (1.0 + t)).sin() * 0.5 + 0.1 * noise
            })
            .collect()
    }

    #[test]
    fn windows() {
        let torch = hann_window_torch(16);
        let scipy = hann_window_scipy(16);
        assert_eq!(torch[0], 0.0);
        assert_eq!(scipy[8], 1.0);
        for (a, b) in torch.iter().zip(&scipy) {
            assert!((a - b).abs() < 1e-6);
        }
        // Periodic: symmetric about n/2, not about (n-1)/2.
        for k in 1..8 {
            assert_eq!(scipy[k], scipy[16 - k]);
        }
    }

    #[test]
    fn reflect_padding_mirrors_without_the_edge() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            reflect_pad(&x, 2, 3).unwrap(),
            [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]
        );
        assert!(matches!(
            reflect_pad(&x, 4, 0),
            Err(StftError::TooShort { needed: 5, .. })
        ));
    }

    #[test]
    fn forward_matches_a_direct_dft() {
        let x = signal(100);
        let window = hann_window_scipy(16);
        let spec = stft(&x, 16, 4, &window, false).unwrap();
        assert_eq!((spec.frames, spec.bins), (22, 9));
        for f in [0, 7, 21] {
            for k in 0..9 {
                let (mut re, mut im) = (0f64, 0f64);
                for (j, &w) in window.iter().enumerate() {
                    let v = (x[4 * f + j] * w) as f64;
                    let angle = -2.0 * std::f64::consts::PI * (j * k) as f64 / 16.0;
                    re += v * angle.cos();
                    im += v * angle.sin();
                }
                assert!((spec.re[f * 9 + k] as f64 - re).abs() < 1e-5);
                assert!((spec.im[f * 9 + k] as f64 - im).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn centred_round_trip_reconstructs() {
        let x = signal(2400);
        let stft = Stft::new(16, 4, hann_window_scipy(16)).unwrap();
        let spec = stft.forward(&x, true).unwrap();
        assert_eq!(spec.frames, 601);
        let y = stft.inverse(&spec).unwrap();
        assert_eq!(y.len(), x.len());
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-6, "round trip error {err}");
    }

    #[test]
    fn imaginary_dc_and_nyquist_are_ignored() {
        let stft = Stft::new(16, 4, hann_window_scipy(16)).unwrap();
        let spec = stft.forward(&signal(64), true).unwrap();
        let mut bent = spec.clone();
        for f in 0..bent.frames {
            bent.im[f * 9] = 1.0;
            bent.im[f * 9 + 8] = -2.0;
        }
        assert_eq!(stft.inverse(&spec).unwrap(), stft.inverse(&bent).unwrap());
    }

    #[test]
    fn bad_input_is_an_error() {
        let window = hann_window_scipy(16);
        assert!(matches!(
            stft(&signal(8), 16, 4, &window, true),
            Err(StftError::TooShort { .. })
        ));
        assert!(matches!(
            stft(&signal(15), 16, 4, &window, false),
            Err(StftError::TooShort { .. })
        ));
        assert!(matches!(
            stft(&signal(64), 16, 0, &window, true),
            Err(StftError::Params(_))
        ));
        assert!(matches!(
            stft(&signal(64), 32, 4, &window, true),
            Err(StftError::Params(_))
        ));
        let spec = Spectrogram::new(2, 5, vec![0.0; 10], vec![0.0; 10]).unwrap();
        assert!(matches!(
            istft(&spec, 16, 4, &window),
            Err(StftError::Shape(_))
        ));
        assert!(Spectrogram::new(2, 9, vec![0.0; 18], vec![0.0; 17]).is_err());
        // A hop longer than the window leaves gaps no division can fill.
        let spec = Spectrogram::new(4, 9, vec![1.0; 36], vec![0.0; 36]).unwrap();
        assert!(matches!(
            istft(&spec, 16, 20, &window),
            Err(StftError::Params(_))
        ));
    }
}
