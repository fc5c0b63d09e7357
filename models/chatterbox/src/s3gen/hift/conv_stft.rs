//! HiFT's 16-point STFT and inverse STFT as convolutions with a windowed DFT basis, for devices
//! other than the CPU: the host FFT path would read the excitation back, transform it on one
//! core and upload the result, twice per call (tens of milliseconds for 10 s of audio, while
//! the GPU waits). Same conventions as `ferrovox_audio::Stft` (torch's `stft`/`istft` with
//! `center=True`, reflect padding, onesided, unnormalized); the arithmetic is the device's f32
//! (or TF32 where the device layer allows it), not the host's f64 FFT.

use candle_core::{DType, Device, Tensor};
use ferrovox_audio::{Spectrogram, Stft};

use crate::{Error, Result};

/// The bases of one window on one device.
#[derive(Debug, Clone)]
pub struct ConvStft {
    n_fft: usize,
    hop: usize,
    /// `[n_fft + 2, 1, n_fft]`: `w[k]·cos(2πfk/n)` for each bin `f`, then `−w[k]·sin(2πfk/n)`.
    analysis: Tensor,
    /// `[n_fft + 2, 1, n_fft]` (a transposed conv's `[in, out, k]`): each bin's share of a
    /// frame's inverse real DFT, times the window, scaled by `1/n` (bins other than DC and
    /// Nyquist counted twice, for their conjugates).
    synthesis: Tensor,
    /// `[1, 1, n_fft]`: the squared window, overlap-added into the inverse's envelope.
    window_sq: Tensor,
    /// `[n_fft / 2]` u32 `n/2 − 1, …, 0`: reverses the edge slices for reflect padding.
    reverse: Tensor,
}

impl ConvStft {
    pub fn new(n_fft: usize, hop: usize, window: &[f32], device: &Device) -> Result<Self> {
        if n_fft < 2 || !n_fft.is_multiple_of(2) || hop == 0 || window.len() != n_fft {
            return Err(Error::Config(format!(
                "conv STFT: n_fft {n_fft}, hop {hop}, window of {}",
                window.len()
            )));
        }
        let bins = n_fft / 2 + 1;
        let n = n_fft as f64;
        let angle = |f: usize, k: usize| 2.0 * std::f64::consts::PI * (f * k) as f64 / n;
        let mut analysis = vec![0f32; 2 * bins * n_fft];
        let mut synthesis = vec![0f32; 2 * bins * n_fft];
        for f in 0..bins {
            let twice = if f == 0 || f == n_fft / 2 { 1.0 } else { 2.0 };
            for (k, &w) in window.iter().enumerate() {
                let (w, a) = (w as f64, angle(f, k));
                analysis[f * n_fft + k] = (w * a.cos()) as f32;
                analysis[(bins + f) * n_fft + k] = (-w * a.sin()) as f32;
                synthesis[f * n_fft + k] = (twice * a.cos() * w / n) as f32;
                synthesis[(bins + f) * n_fft + k] = (-twice * a.sin() * w / n) as f32;
            }
        }
        let half = n_fft / 2;
        // The envelope over the kept samples is periodic past the first frames: checking a
        // few frame counts covers every pattern an inverse can meet.
        for frames in 2..=n_fft.div_ceil(hop) + 2 {
            nola(window, hop, frames)?;
        }
        Ok(Self {
            n_fft,
            hop,
            analysis: Tensor::from_vec(analysis, (2 * bins, 1, n_fft), device)?,
            synthesis: Tensor::from_vec(synthesis, (2 * bins, 1, n_fft), device)?,
            window_sq: Tensor::from_vec(
                window.iter().map(|w| w * w).collect(),
                (1, 1, n_fft),
                device,
            )?,
            reverse: Tensor::from_vec((0..half as u32).rev().collect(), half, device)?,
        })
    }

    /// `signal` `[b, 1, samples]` (f32) to `[b, n_fft + 2, frames]`: real parts, then imaginary.
    pub fn forward(&self, signal: &Tensor) -> Result<Tensor> {
        let (_, channels, len) = signal.dims3()?;
        let half = self.n_fft / 2;
        if channels != 1 || len <= half {
            return Err(Error::Input(format!(
                "HiFT STFT: a centred STFT needs [b, 1, > {half}] samples, got {:?}",
                signal.dims()
            )));
        }
        let signal = signal.to_dtype(DType::F32)?;
        // Reflect padding mirrors about the edge samples without repeating them.
        let left = signal.narrow(2, 1, half)?.index_select(&self.reverse, 2)?;
        let right = signal
            .narrow(2, len - 1 - half, half)?
            .index_select(&self.reverse, 2)?;
        let padded = Tensor::cat(&[&left, &signal, &right], 2)?;
        Ok(padded.conv1d(&self.analysis, 0, self.hop, 1, 1)?)
    }

    /// `magnitude` and `phase` `[b, bins, frames]` to `[b, hop · (frames − 1)]` samples: each
    /// frame's inverse DFT of `magnitude·e^{i·phase}` times the window, overlap-added and divided
    /// by the overlap-added squared window, `n_fft / 2` samples dropped at each end.
    pub fn inverse(&self, magnitude: &Tensor, phase: &Tensor) -> Result<Tensor> {
        let (b, bins, frames) = magnitude.dims3()?;
        if bins != self.n_fft / 2 + 1 || phase.dims() != magnitude.dims() || frames < 2 {
            return Err(Error::Input(format!(
                "HiFT iSTFT: magnitude {:?} and phase {:?} for an n_fft of {}",
                magnitude.dims(),
                phase.dims(),
                self.n_fft
            )));
        }
        let spectrum = Tensor::cat(
            &[(magnitude * phase.cos()?)?, (magnitude * phase.sin()?)?],
            1,
        )?;
        let full = spectrum.conv_transpose1d(&self.synthesis, 0, 0, self.hop, 1, 1)?;
        let half = self.n_fft / 2;
        let kept = self.hop * (frames - 1);
        // Made on the device (no upload), so the inverse can be captured in a CUDA graph.
        let envelope = Tensor::ones((1, 1, frames), DType::F32, magnitude.device())?
            .conv_transpose1d(&self.window_sq, 0, 0, self.hop, 1, 1)?
            .narrow(2, half, kept)?;
        Ok(full
            .narrow(2, half, kept)?
            .broadcast_div(&envelope)?
            .reshape((b, kept))?)
    }
}

/// Refuses a window and hop whose overlap-added squared window vanishes inside the samples an
/// inverse of `frames` frames keeps (torch's NOLA check), through the host inverse's own check.
fn nola(window: &[f32], hop: usize, frames: usize) -> Result<()> {
    let bins = window.len() / 2 + 1;
    let silence = Spectrogram::new(
        frames,
        bins,
        vec![0.0; frames * bins],
        vec![0.0; frames * bins],
    )
    .and_then(|spec| Stft::new(window.len(), hop, window.to_vec())?.inverse(&spec));
    match silence {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Config(format!("HiFT iSTFT: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovox_audio::hann_window_scipy;

    fn signal(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.37).sin() + 0.3 * (i as f32 * 1.91).cos()) * 0.8)
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn forward_and_inverse_match_the_host_fft() {
        let (n_fft, hop) = (16, 4);
        let window = hann_window_scipy(n_fft);
        let host = Stft::new(n_fft, hop, window.clone()).unwrap();
        let conv = ConvStft::new(n_fft, hop, &window, &Device::Cpu).unwrap();
        let x = signal(1001);
        let want = host.forward(&x, true).unwrap();
        let got = conv
            .forward(&Tensor::from_vec(x.clone(), (1, 1, x.len()), &Device::Cpu).unwrap())
            .unwrap();
        let (_, rows, frames) = got.dims3().unwrap();
        assert_eq!((rows, frames), (2 * want.bins, want.frames));
        // Host spectra are frame-major: transpose ours to compare.
        let got_t = got.squeeze(0).unwrap().t().unwrap();
        let re = got_t
            .narrow(1, 0, want.bins)
            .unwrap()
            .flatten_all()
            .unwrap();
        let im = got_t
            .narrow(1, want.bins, want.bins)
            .unwrap()
            .flatten_all()
            .unwrap();
        let d_re = max_diff(&re.to_vec1().unwrap(), &want.re);
        let d_im = max_diff(&im.to_vec1().unwrap(), &want.im);
        assert!(
            d_re < 1e-5 && d_im < 1e-5,
            "forward: re {d_re:.2e}, im {d_im:.2e}"
        );

        // The inverse of a spectrum given as magnitude and phase, against the host's inverse.
        let bins = want.bins;
        let mag: Vec<f32> = (0..bins * frames)
            .map(|i| 0.5 + (i % 7) as f32 * 0.3)
            .collect();
        let ph: Vec<f32> = (0..bins * frames)
            .map(|i| (i as f32 * 0.61).sin() * 3.0)
            .collect();
        let magnitude = Tensor::from_vec(mag.clone(), (1, bins, frames), &Device::Cpu).unwrap();
        let phase = Tensor::from_vec(ph.clone(), (1, bins, frames), &Device::Cpu).unwrap();
        let got = conv.inverse(&magnitude, &phase).unwrap();
        // Frame-major rectangular parts for the host.
        let (mut re, mut im) = (vec![0f32; bins * frames], vec![0f32; bins * frames]);
        for f in 0..bins {
            for t in 0..frames {
                let (m, p) = (mag[f * frames + t], ph[f * frames + t]);
                re[t * bins + f] = m * p.cos();
                im[t * bins + f] = m * p.sin();
            }
        }
        let want = host
            .inverse(&Spectrogram::new(frames, bins, re, im).unwrap())
            .unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "inverse: {d:.2e}");
    }

    #[test]
    fn inputs_it_cannot_transform_are_errors() {
        let window = hann_window_scipy(16);
        let conv = ConvStft::new(16, 4, &window, &Device::Cpu).unwrap();
        let short = Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(conv.forward(&short).is_err());
        let two = Tensor::zeros((1, 2, 100), DType::F32, &Device::Cpu).unwrap();
        assert!(conv.forward(&two).is_err());
        let mag = Tensor::zeros((1, 8, 10), DType::F32, &Device::Cpu).unwrap();
        assert!(conv.inverse(&mag, &mag).is_err());
        assert!(ConvStft::new(15, 4, &hann_window_scipy(15), &Device::Cpu).is_err());
        // A hop as long as the window leaves samples no frame weights.
        assert!(ConvStft::new(16, 16, &hann_window_scipy(16), &Device::Cpu).is_err());
    }
}
