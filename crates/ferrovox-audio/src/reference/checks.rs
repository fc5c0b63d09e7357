//! Where the sound in a clip starts and ends, and how much of it is clipped.

/// Window over which a level is taken while trimming.
const TRIM_WINDOW_S: f64 = 0.025;
/// Step between trim windows.
const TRIM_HOP_S: f64 = 0.010;

/// The span `start..end` of `samples` left after trimming the margins whose 25 ms windows
/// (every 10 ms) have an RMS more than `top_db` below the loudest window's. The span runs
/// from the start of the first loud window to the end of the last, as librosa's
/// `effects.trim` does. An all-zero signal gives an empty span.
pub(crate) fn trim_span(samples: &[f32], rate: u32, top_db: f64) -> (usize, usize) {
    let window = ((TRIM_WINDOW_S * rate as f64).round() as usize).max(1);
    let hop = ((TRIM_HOP_S * rate as f64).round() as usize).max(1);
    let levels: Vec<f64> = (0..samples.len())
        .step_by(hop)
        .map(|start| {
            let w = &samples[start..(start + window).min(samples.len())];
            (w.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / w.len() as f64).sqrt()
        })
        .collect();
    let loudest = levels.iter().copied().fold(0.0, f64::max);
    if loudest == 0.0 {
        return (0, 0);
    }
    let floor = loudest * 10f64.powf(-top_db / 20.0);
    let first = levels.iter().position(|&l| l > floor).unwrap_or(0);
    let last = levels.iter().rposition(|&l| l > floor).unwrap_or(0);
    (first * hop, (last * hop + window).min(samples.len()))
}

/// The share of `clipped` that is set.
pub(crate) fn clipped_share(clipped: &[bool]) -> f64 {
    if clipped.is_empty() {
        return 0.0;
    }
    clipped.iter().filter(|&&c| c).count() as f64 / clipped.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_finds_a_burst_between_silences() {
        let rate = 1000;
        let mut x = vec![0.0f32; 3000];
        for s in &mut x[1000..2000] {
            *s = 0.5;
        }
        let (start, end) = trim_span(&x, rate, 40.0);
        // Windows are 25 samples long every 10: the first loud one starts up to 24 samples
        // early, the last loud one ends up to 24 late.
        assert!((976..=1000).contains(&start), "{start}");
        assert!((2000..=2024).contains(&end), "{end}");
    }

    #[test]
    fn trim_keeps_what_is_within_top_db() {
        let rate = 1000;
        let mut x = vec![0.001f32; 3000]; // 54 dB under the burst.
        for s in &mut x[1000..2000] {
            *s = 0.5;
        }
        assert_eq!(trim_span(&x, rate, 60.0), (0, 3000));
        let (start, end) = trim_span(&x, rate, 40.0);
        assert!(start > 900 && end < 2100, "{start}..{end}");
    }

    #[test]
    fn silence_trims_to_nothing_and_shares_count() {
        assert_eq!(trim_span(&[0.0; 500], 16000, 40.0), (0, 0));
        assert_eq!(clipped_share(&[true, false, false, false]), 0.25);
        assert_eq!(clipped_share(&[]), 0.0);
    }
}
