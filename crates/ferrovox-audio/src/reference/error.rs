//! Why a reference clip was refused.

use std::path::PathBuf;

use crate::ResampleError;

/// Why a reference clip was refused. Each message names what was wrong and the figures that
/// decided it, so it can be shown to whoever supplied the clip.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// No bytes at all.
    #[error("the reference audio is empty (0 bytes)")]
    Empty,
    /// The input is over [`ReferenceLimits::max_bytes`](crate::ReferenceLimits::max_bytes);
    /// nothing of it was decoded.
    #[error("the reference audio is {bytes} bytes, over the {max_bytes}-byte limit")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// The file could not be opened or read.
    #[error("cannot read the reference audio {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No supported container was recognised in the data.
    #[error(
        "the reference audio is not in a recognised format (WAV, AIFF, FLAC, MP3, Ogg, \
         MP4/M4A, WebM/Matroska): {detail}"
    )]
    Unrecognized { detail: String },
    /// The container holds no audio track.
    #[error("the {container} file holds no audio track")]
    NoAudioTrack { container: String },
    /// The audio is in a codec that cannot be decoded here.
    #[error(
        "the {container} file holds {codec} audio, which cannot be decoded{}",
        note(detail)
    )]
    UnsupportedCodec {
        container: String,
        codec: String,
        detail: String,
    },
    /// The container or codec data is damaged so that nothing could be decoded.
    #[error("the {container} ({codec}) audio is damaged and cannot be decoded: {detail}")]
    Malformed {
        container: String,
        codec: String,
        detail: String,
    },
    /// A channel layout without a meaningful average of its channels.
    #[error("cannot mix the {layout} channel layout of the reference audio to mono")]
    ChannelLayout { layout: String },
    /// The stream changes its sample rate or channel layout part-way through.
    #[error(
        "the reference audio changes from {from_rate} Hz, {from_channels} channel(s) to \
         {to_rate} Hz, {to_channels} channel(s) part-way through"
    )]
    FormatChange {
        from_rate: u32,
        from_channels: usize,
        to_rate: u32,
        to_channels: usize,
    },
    /// The container parsed but held no samples.
    #[error("the {container} file holds no audio samples")]
    NoAudio { container: String },
    /// No sample reaches the silence threshold.
    #[error(
        "the reference audio is silent: its peak is {peak_dbfs:.1} dBFS, below the \
         {silence_dbfs:.1} dBFS threshold"
    )]
    Silent { peak_dbfs: f64, silence_dbfs: f64 },
    /// The integrated loudness of the trimmed clip is under the floor.
    #[error(
        "the reference audio is too quiet: {loudness_lufs:.1} LUFS, below the \
         {min_lufs:.1} LUFS floor"
    )]
    TooQuiet { loudness_lufs: f64, min_lufs: f64 },
    /// Shorter than the family's minimum once silent margins are trimmed.
    #[error(
        "the reference audio holds {duration_s:.2} s of sound after trimming silence \
         ({read_s:.2} s before), under the {min_s:.2} s minimum"
    )]
    TooShort {
        duration_s: f64,
        read_s: f64,
        min_s: f64,
    },
    /// Too many samples at or past the clip level.
    #[error(
        "the reference audio is clipped: {:.2}% of its samples reach |x| >= {clip_level}, \
         over the {:.2}% limit",
        share * 100.0,
        max_share * 100.0
    )]
    Clipped {
        share: f64,
        max_share: f64,
        clip_level: f32,
    },
    /// Limits that contradict each other or a target rate of zero.
    #[error("invalid reference-audio request: {reason}")]
    InvalidRequest { reason: String },
    /// Conversion to the rate an encoder needs failed.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// The loudness meter could not be set up for the clip's rate.
    #[error("cannot measure the loudness of the reference audio: {reason}")]
    Loudness { reason: String },
}

fn note(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
