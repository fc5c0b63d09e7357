//! Level and loudness figures of a mono clip.

use ebur128::{EbuR128, Mode};

use super::ReferenceError;

/// Levels of a mono clip. dBFS figures take full scale as 1.0 in both cases, so a full-scale
/// sine has a peak of 0 dBFS and an RMS of −3.01 dBFS; silence reads −∞.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Levels {
    pub loudness_lufs: f64,
    pub peak_dbfs: f64,
    pub rms_dbfs: f64,
}

/// 20·log10 of an amplitude; −∞ for zero.
pub(crate) fn dbfs(amplitude: f64) -> f64 {
    20.0 * amplitude.log10()
}

/// Largest magnitude in `samples`.
pub(crate) fn peak(samples: &[f32]) -> f64 {
    samples.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64
}

/// EBU R128 integrated loudness (ITU-R BS.1770 K-weighting, 400 ms blocks, −70 LUFS absolute
/// and −10 LU relative gates) of a mono clip, with peak and RMS levels. A clip shorter than one
/// 400 ms block, or quieter than the absolute gate, has a loudness of −∞.
pub(crate) fn measure(samples: &[f32], rate: u32) -> Result<Levels, ReferenceError> {
    let fail = |e: ebur128::Error| ReferenceError::Loudness {
        reason: format!("{e} at {rate} Hz"),
    };
    let mut meter = EbuR128::new(1, rate, Mode::I).map_err(fail)?;
    meter.add_frames_f32(samples).map_err(fail)?;
    let loudness_lufs = meter.loudness_global().map_err(fail)?;
    let mean_square = if samples.is_empty() {
        0.0
    } else {
        samples
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            / samples.len() as f64
    };
    Ok(Levels {
        loudness_lufs,
        peak_dbfs: dbfs(peak(samples)),
        rms_dbfs: dbfs(mean_square.sqrt()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_scale_sine_reads_minus_six_and_minus_nine() {
        let rate = 48000;
        let x: Vec<f32> = (0..rate)
            .map(|i| 0.5 * (std::f32::consts::TAU * 1000.0 * i as f32 / rate as f32).sin())
            .collect();
        let l = measure(&x, rate).unwrap();
        assert!((l.peak_dbfs + 6.02).abs() < 0.01, "{l:?}");
        assert!((l.rms_dbfs + 9.03).abs() < 0.01, "{l:?}");
        assert!((l.loudness_lufs + 9.03).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn silence_reads_minus_infinity() {
        let l = measure(&[0.0; 48000], 48000).unwrap();
        assert_eq!(l.loudness_lufs, f64::NEG_INFINITY);
        assert_eq!(l.peak_dbfs, f64::NEG_INFINITY);
        assert_eq!(l.rms_dbfs, f64::NEG_INFINITY);
    }
}
