//! What a reference clip must satisfy, per model family.

use super::ReferenceError;

/// The bounds a reference clip is held to. Each model family sets its own `min_s`; the rest
/// rarely need changing.
///
/// For Chatterbox, upstream's guidance is a clean clip of a single speaker of about 10 s. Its
/// T3 stage conditions on the first 6 s (at 16 kHz) and S3Gen on the first 10 s (at 24 kHz),
/// so audio past 10 s is unused there; [`ReferenceLimits::chatterbox`] asks for at least 2 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceLimits {
    /// Shortest accepted clip in seconds, counted after trimming silent margins.
    /// Default 2.0 (the Chatterbox value).
    pub min_s: f64,
    /// Longest stretch read, in seconds from the start of the source, before trimming.
    /// A longer source is not refused: decoding stops here and
    /// [`ReferenceClip::used`](crate::ReferenceClip::used) says which part was used.
    /// Default 30.0.
    pub max_s: f64,
    /// Hard cap on the encoded input in bytes. Larger input is refused before any decoding,
    /// since a file that big is no voice sample and would cost time and memory to parse.
    /// Default 64 MiB (about 6 minutes of 44.1 kHz stereo 16-bit WAV).
    pub max_bytes: u64,
    /// Largest accepted share (0–1) of clipped samples in the trimmed clip. Default 0.01.
    pub clip_share: f64,
    /// A sample counts as clipped when its magnitude, in any source channel before mixing,
    /// is at least this. Default 0.999.
    pub clip_level: f32,
    /// A clip whose peak (mono, before trimming) is below this many dBFS is silent.
    /// Default −50 dBFS.
    pub silence_dbfs: f64,
    /// A trimmed clip whose EBU R128 integrated loudness is below this many LUFS is too quiet.
    /// Default −60 LUFS; a clip quieter than the meter's −70 LUFS absolute gate reads −∞.
    /// Not applied to a clip shorter than one 400 ms gating block, which has no integrated
    /// loudness (possible only with `min_s` under 0.4).
    pub min_lufs: f64,
    /// Margins are trimmed where the level stays more than this many dB below the loudest
    /// part, measured as the RMS of 25 ms windows every 10 ms (the method of librosa's
    /// `effects.trim` with `top_db`, with windows set in time rather than samples).
    /// Default 40 dB.
    pub trim_top_db: f64,
}

impl Default for ReferenceLimits {
    fn default() -> Self {
        Self {
            min_s: 2.0,
            max_s: 30.0,
            max_bytes: 64 << 20,
            clip_share: 0.01,
            clip_level: 0.999,
            silence_dbfs: -50.0,
            min_lufs: -60.0,
            trim_top_db: 40.0,
        }
    }
}

impl ReferenceLimits {
    /// The limits for Chatterbox's voice encoder and S3Gen prompt: the defaults.
    pub fn chatterbox() -> Self {
        Self::default()
    }

    /// Chatterbox Turbo's (and Nano's): as [`Self::chatterbox`], but at least 5 s (upstream
    /// refuses a prompt of 5 s or less).
    pub fn chatterbox_turbo() -> Self {
        Self {
            min_s: 5.0,
            ..Self::default()
        }
    }

    /// Refuses limits that contradict each other or cannot be met by any clip.
    pub(crate) fn check(&self) -> Result<(), ReferenceError> {
        let bad = |reason: String| Err(ReferenceError::InvalidRequest { reason });
        if !(self.min_s.is_finite() && self.min_s >= 0.0) {
            return bad(format!("min_s must be finite and >= 0, not {}", self.min_s));
        }
        if !(self.max_s.is_finite() && self.max_s > 0.0) {
            return bad(format!("max_s must be finite and > 0, not {}", self.max_s));
        }
        if self.min_s > self.max_s {
            return bad(format!(
                "min_s ({} s) is over max_s ({} s)",
                self.min_s, self.max_s
            ));
        }
        if !(0.0..=1.0).contains(&self.clip_share) {
            return bad(format!(
                "clip_share must lie in 0..=1, not {}",
                self.clip_share
            ));
        }
        if !(self.clip_level > 0.0 && self.clip_level.is_finite()) {
            return bad(format!("clip_level must be > 0, not {}", self.clip_level));
        }
        if self.silence_dbfs.is_nan() || self.min_lufs.is_nan() {
            return bad("silence_dbfs and min_lufs must be numbers".into());
        }
        if !(self.trim_top_db.is_finite() && self.trim_top_db > 0.0) {
            return bad(format!(
                "trim_top_db must be finite and > 0, not {}",
                self.trim_top_db
            ));
        }
        Ok(())
    }
}
