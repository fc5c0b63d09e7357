//! The reference-audio front end for voice cloning, shared by every model family: decode a
//! clip from whatever format it came in, mix it to mono, trim its silent margins, measure it,
//! refuse it with a typed reason when it cannot serve as a voice sample, and hand it over at
//! the rates the family's encoders need.
//!
//! The steps, in order:
//! 1. Input of 0 bytes is [`ReferenceError::Empty`]; input over `max_bytes` is refused unread.
//! 2. symphonia finds the container and codec (WAV with 8/16/24/32-bit integer or 32/64-bit
//!    float PCM or IMA/MS ADPCM, AIFF, FLAC, MP3, Ogg Vorbis, MP4/M4A with AAC-LC or ALAC) and
//!    decodes the first `max_s` seconds; a longer source is cut there, and
//!    [`ReferenceClip::used`] says so.
//! 3. Channels are averaged to mono (LFE channels left out; ambisonic layouts refused).
//! 4. A clip whose peak is under `silence_dbfs` is silent.
//! 5. Margins more than `trim_top_db` under the loudest 25 ms window are trimmed.
//! 6. The trimmed clip must last `min_s`, have at most `clip_share` of its frames clipped,
//!    and reach `min_lufs` of integrated loudness.
//! 7. The trimmed mono clip at the source rate is hashed, measured, and resampled to each rate
//!    asked for with [`resample`](crate::resample).

mod checks;
mod decode;
mod error;
mod limits;
mod loudness;

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use symphonia::core::formats::probe::Hint;

pub use error::ReferenceError;
pub use limits::ReferenceLimits;

/// EBU R128 gives no integrated loudness for less than one 400 ms block.
const LOUDNESS_BLOCK_S: f64 = 0.4;

/// Which part of the source the clip was taken from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsedSpan {
    /// Seconds decoded from the start of the source: all of it, or
    /// [`ReferenceLimits::max_s`] when `truncated`.
    pub read_s: f64,
    /// The source goes on past `read_s`; the rest was not read.
    pub truncated: bool,
    /// The source's length as its container declares it, where it does.
    pub declared_s: Option<f64>,
}

impl fmt::Display for UsedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0.00–{:.2} s", self.read_s)?;
        match (self.truncated, self.declared_s) {
            (true, Some(total)) => write!(f, " of {total:.2} s (the rest is not used)"),
            (true, None) => write!(f, " (the rest is not used)"),
            (false, _) => write!(f, " (all of it)"),
        }
    }
}

/// SHA-256 of a clip's trimmed mono samples at the source rate (a domain tag, the rate as
/// u32 little-endian, then each sample as f32 little-endian). It does not depend on the rate a
/// caller asks for, so a voice store can key on it; the same audio in two lossless containers
/// hashes alike.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClipHash(pub [u8; 32]);

impl ClipHash {
    fn of(samples: &[f32], rate: u32) -> Self {
        let mut h = Sha256::new();
        h.update(b"ferrovox reference clip v1\0");
        h.update(rate.to_le_bytes());
        for s in samples {
            h.update(s.to_le_bytes());
        }
        Self(h.finalize().into())
    }

    /// Lower-case hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ClipHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ClipHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClipHash({})", self.to_hex())
    }
}

/// A reference clip that passed every check: mono, trimmed, at the rate asked for.
///
/// The level figures describe the trimmed mono clip at the source rate. `trimmed` is in seconds
/// of the source, from its start.
#[derive(Clone)]
pub struct ReferenceClip {
    /// Mono samples at `sample_rate`.
    pub samples: Vec<f32>,
    /// Rate of `samples`, as asked for.
    pub sample_rate: u32,
    /// Length of `samples` in seconds.
    pub duration_s: f64,
    /// The source's sample rate.
    pub source_rate: u32,
    /// The source's channel count.
    pub source_channels: usize,
    /// The container symphonia recognised (e.g. "wave", "flac", "isomp4").
    pub container: &'static str,
    /// The codec it decoded (e.g. "pcm_s16le", "mp3", "aac").
    pub codec: &'static str,
    /// Start and end, in seconds of the source, of the part kept after trimming.
    pub trimmed: (f64, f64),
    /// Which part of the source was read.
    pub used: UsedSpan,
    /// EBU R128 integrated loudness; −∞ for a clip shorter than one 400 ms block.
    pub loudness_lufs: f64,
    /// Largest magnitude, in dBFS.
    pub peak_dbfs: f64,
    /// RMS level in dBFS (a full-scale sine reads −3.01).
    pub rms_dbfs: f64,
    /// Share of frames with a source channel at or past the clip level.
    pub clipped_share: f64,
    /// Damaged packets the codec rejected and that were left out (usually 0).
    pub skipped_packets: usize,
    /// Key for the voice store.
    pub hash: ClipHash,
    /// The trimmed mono clip at the source rate, shared by every rate made from it.
    source: Arc<[f32]>,
}

impl fmt::Debug for ReferenceClip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceClip")
            .field("samples", &self.samples.len())
            .field("sample_rate", &self.sample_rate)
            .field("duration_s", &self.duration_s)
            .field("source_rate", &self.source_rate)
            .field("source_channels", &self.source_channels)
            .field("container", &self.container)
            .field("codec", &self.codec)
            .field("trimmed", &self.trimmed)
            .field("used", &self.used)
            .field("loudness_lufs", &self.loudness_lufs)
            .field("peak_dbfs", &self.peak_dbfs)
            .field("rms_dbfs", &self.rms_dbfs)
            .field("clipped_share", &self.clipped_share)
            .field("skipped_packets", &self.skipped_packets)
            .field("hash", &self.hash)
            .finish()
    }
}

/// An encoded file held in memory, decoded whole and mixed to mono at its own rate, with no
/// checks (what [`ReferenceClip`] reads clips with; also how the tests read ferrovox's own
/// output back).
pub fn decode_audio(bytes: &[u8]) -> Result<(Vec<f32>, u32), ReferenceError> {
    let decoded = decode::decode(
        Box::new(Cursor::new(bytes)),
        &Hint::new(),
        f64::INFINITY,
        f32::INFINITY,
    )?;
    Ok((decoded.samples, decoded.rate))
}

impl ReferenceClip {
    /// Decodes and checks an encoded clip held in memory; the result is at `rate` Hz.
    pub fn from_bytes(
        bytes: &[u8],
        rate: u32,
        limits: &ReferenceLimits,
    ) -> Result<Self, ReferenceError> {
        check_request(rate, limits)?;
        check_size(bytes.len() as u64, limits)?;
        let decoded = decode::decode(
            Box::new(Cursor::new(bytes)),
            &Hint::new(),
            limits.max_s,
            limits.clip_level,
        )?;
        Self::from_decoded(decoded, rate, limits)
    }

    /// Decodes and checks a clip from a file; the result is at `rate` Hz. The file's
    /// extension helps pick the format, and only the part within `max_s` is read.
    pub fn from_path(
        path: impl AsRef<Path>,
        rate: u32,
        limits: &ReferenceLimits,
    ) -> Result<Self, ReferenceError> {
        let path = path.as_ref();
        check_request(rate, limits)?;
        let read_error = |source| ReferenceError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        check_size(file.metadata().map_err(read_error)?.len(), limits)?;
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let decoded = decode::decode(Box::new(file), &hint, limits.max_s, limits.clip_level)?;
        Self::from_decoded(decoded, rate, limits)
    }

    fn from_decoded(
        decoded: decode::Decoded,
        rate: u32,
        limits: &ReferenceLimits,
    ) -> Result<Self, ReferenceError> {
        let source_rate = decoded.rate;
        let seconds = |n: usize| n as f64 / source_rate as f64;
        let read_s = seconds(decoded.samples.len());

        if decoded.samples.iter().any(|s| !s.is_finite()) {
            return Err(ReferenceError::Malformed {
                container: decoded.container.into(),
                codec: decoded.codec.into(),
                detail: "it holds NaN or infinite sample values".into(),
            });
        }
        let peak_dbfs = loudness::dbfs(loudness::peak(&decoded.samples));
        if peak_dbfs < limits.silence_dbfs {
            return Err(ReferenceError::Silent {
                peak_dbfs,
                silence_dbfs: limits.silence_dbfs,
            });
        }

        let (start, end) = checks::trim_span(&decoded.samples, source_rate, limits.trim_top_db);
        let duration_s = seconds(end - start);
        if duration_s < limits.min_s {
            return Err(ReferenceError::TooShort {
                duration_s,
                read_s,
                min_s: limits.min_s,
            });
        }

        let clipped_share = checks::clipped_share(&decoded.clipped[start..end]);
        if clipped_share > limits.clip_share {
            return Err(ReferenceError::Clipped {
                share: clipped_share,
                max_share: limits.clip_share,
                clip_level: limits.clip_level,
            });
        }

        let source: Arc<[f32]> = decoded.samples[start..end].into();
        let levels = loudness::measure(&source, source_rate)?;
        if duration_s >= LOUDNESS_BLOCK_S && levels.loudness_lufs < limits.min_lufs {
            return Err(ReferenceError::TooQuiet {
                loudness_lufs: levels.loudness_lufs,
                min_lufs: limits.min_lufs,
            });
        }

        let samples = crate::resample(&source, source_rate, rate)?;
        Ok(Self {
            duration_s: samples.len() as f64 / rate as f64,
            samples,
            sample_rate: rate,
            source_rate,
            source_channels: decoded.channels,
            container: decoded.container,
            codec: decoded.codec,
            trimmed: (seconds(start), seconds(end)),
            used: UsedSpan {
                read_s,
                truncated: decoded.truncated,
                declared_s: decoded.declared_s,
            },
            loudness_lufs: levels.loudness_lufs,
            peak_dbfs: levels.peak_dbfs,
            rms_dbfs: levels.rms_dbfs,
            clipped_share,
            skipped_packets: decoded.skipped_packets,
            hash: ClipHash::of(&source, source_rate),
            source,
        })
    }

    /// The same clip at another rate, made from the source-rate samples (never from an
    /// already resampled copy). Figures and hash are unchanged.
    pub fn at_rate(&self, rate: u32) -> Result<Self, ReferenceError> {
        if rate == 0 {
            return Err(zero_rate());
        }
        let samples = crate::resample(&self.source, self.source_rate, rate)?;
        Ok(Self {
            duration_s: samples.len() as f64 / rate as f64,
            samples,
            sample_rate: rate,
            source: Arc::clone(&self.source),
            ..*self
        })
    }

    /// The clip at each of `rates`, in that order; encoders that need different rates each
    /// take theirs.
    pub fn at_rates(&self, rates: &[u32]) -> Result<Vec<Self>, ReferenceError> {
        rates.iter().map(|&rate| self.at_rate(rate)).collect()
    }

    /// The first `seconds` of `samples` (all of them when the clip is shorter), for encoders
    /// that condition on a prefix, such as Chatterbox's T3 (6 s) and S3Gen (10 s).
    pub fn head(&self, seconds: f64) -> &[f32] {
        let n = (seconds.max(0.0) * self.sample_rate as f64).round() as usize;
        &self.samples[..n.min(self.samples.len())]
    }

    /// The trimmed mono clip at the source rate, as hashed and measured.
    pub fn source_samples(&self) -> &[f32] {
        &self.source
    }
}

fn zero_rate() -> ReferenceError {
    ReferenceError::InvalidRequest {
        reason: "the target sample rate is 0 Hz".into(),
    }
}

fn check_request(rate: u32, limits: &ReferenceLimits) -> Result<(), ReferenceError> {
    if rate == 0 {
        return Err(zero_rate());
    }
    limits.check()
}

fn check_size(bytes: u64, limits: &ReferenceLimits) -> Result<(), ReferenceError> {
    if bytes == 0 {
        return Err(ReferenceError::Empty);
    }
    if bytes > limits.max_bytes {
        return Err(ReferenceError::TooLarge {
            bytes,
            max_bytes: limits.max_bytes,
        });
    }
    Ok(())
}
