//! Mirrors `librosa.effects.trim(wav, top_db=...)` as `VoiceEncoder.embeds_from_wavs`
//! (`voice_encoder/voice_encoder.py`) calls it: librosa's defaults `ref=np.max`,
//! `frame_length=2048`, `hop_length=512`, on mono audio.

use std::ops::Range;

/// Samples per RMS frame (`frame_length`).
pub const FRAME_LENGTH: usize = 2048;
/// Samples between RMS frames (`hop_length`); trim points fall on multiples of it.
pub const HOP_LENGTH: usize = 512;
/// `amplitude_to_db`'s floor on the amplitude (1e-5), squared as `power_to_db` applies it.
const AMIN_POWER: f64 = 1e-10;

/// Each frame's level in dB below the loudest frame (`amplitude_to_db(rms(y), ref=np.max)`):
/// `librosa.feature.rms` over zero-padded (`center=True`, `pad_mode="constant"`) frames of
/// [`FRAME_LENGTH`] every [`HOP_LENGTH`], `1 + len / HOP_LENGTH` of them.
pub fn frame_levels_db(wav: &[f32]) -> Vec<f32> {
    let half = FRAME_LENGTH / 2;
    let frames = 1 + wav.len() / HOP_LENGTH;
    // rms in f32 as librosa returns it, squared again by amplitude_to_db.
    let power: Vec<f64> = (0..frames)
        .map(|f| {
            // Frame f spans wav[f * hop - half .. f * hop + half]; the padding adds zeros.
            let centre = f * HOP_LENGTH;
            let (lo, hi) = (centre.saturating_sub(half), (centre + half).min(wav.len()));
            let sum: f64 = wav[lo..hi].iter().map(|&x| (x as f64).powi(2)).sum();
            let rms = (sum / FRAME_LENGTH as f64).sqrt() as f32;
            (rms as f64).powi(2)
        })
        .collect();
    let reference = power.iter().copied().fold(0.0, f64::max);
    let ref_db = 10.0 * reference.max(AMIN_POWER).log10();
    power
        .iter()
        .map(|&p| (10.0 * p.max(AMIN_POWER).log10() - ref_db) as f32)
        .collect()
}

/// The non-silent span `[start, end)` of `wav`: from the first to one hop past the last frame
/// whose level exceeds `-top_db`, capped at the clip's length (librosa's `index`). A clip with
/// no such frame gives an empty span, as librosa does.
pub fn trim_indices(wav: &[f32], top_db: f32) -> Range<usize> {
    let levels = frame_levels_db(wav);
    let loud = |&(_, &db): &(usize, &f32)| db > -top_db;
    let first = levels.iter().enumerate().find(loud).map(|(i, _)| i);
    let last = levels.iter().enumerate().rev().find(loud).map(|(i, _)| i);
    match (first, last) {
        (Some(first), Some(last)) => first * HOP_LENGTH..((last + 1) * HOP_LENGTH).min(wav.len()),
        _ => 0..0,
    }
}
