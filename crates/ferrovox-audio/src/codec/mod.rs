//! Response encodings, fed chunk by chunk as synthesis streams, and what each format is:
//!
//! | format | container, codec | rate | channels | bitrate | streams as it is made |
//! |---|---|---|---|---|---|
//! | `mp3` | MPEG audio layer III (LAME) | the voice's (22.05 kHz Piper, 16 kHz MMS, 24 kHz Chatterbox) | mono | 64 kbit/s CBR | yes |
//! | `opus` | Ogg Opus (libopus) | 48 kHz (resampled; the header names the voice's) | mono | 32 kbit/s | yes, a page per chunk |
//! | `wav` | RIFF, 16-bit PCM | the voice's | mono | — | only with placeholder sizes ([`wav_header`]`(rate, None)`) |
//! | `flac` | FLAC, 16-bit | the voice's | mono | lossless | no: encoded once complete |
//! | `pcm` | raw s16le | 24 kHz (OpenAI's), resampled | mono | — | yes |
//!
//! `aac` has no encoder that builds here without a C toolchain's extras (no maintained crate
//! bundles one): it is named, and refused as unsupported.

mod mp3;
mod ogg_opus;

pub use mp3::{Mp3Encoder, MP3_KBPS};
pub use ogg_opus::{OggOpusEncoder, OPUS_KBPS, OPUS_RATE};

use crate::{encode_flac, wav_header, write_pcm_s16le, StreamResampler};

/// An encoder that failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The codec library refused or failed.
    #[error("{0}")]
    Encoder(String),
    /// A format no encoder here writes.
    #[error("`{0}` has no encoder in this build; the formats are mp3, opus, wav, flac and pcm")]
    Unsupported(&'static str),
}

/// Sample rate of the `pcm` format (OpenAI's).
pub const PCM_RATE: u32 = 24_000;

/// The formats a synthesis is delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// MP3, mono CBR at the voice's rate.
    Mp3,
    /// Ogg Opus, mono at 48 kHz.
    Opus,
    /// AAC (ADTS): named by OpenAI's API, not encoded here.
    Aac,
    /// RIFF WAV, 16-bit mono at the voice's rate.
    Wav,
    /// Raw 16-bit little-endian mono at 24 kHz.
    Pcm,
    /// FLAC, 16-bit mono at the voice's rate.
    Flac,
}

impl AudioFormat {
    /// Every format an encoder here writes.
    pub const ENCODED: [Self; 5] = [Self::Mp3, Self::Opus, Self::Wav, Self::Flac, Self::Pcm];

    /// The format named `s` (OpenAI's `response_format` values).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mp3" => Self::Mp3,
            "opus" => Self::Opus,
            "aac" => Self::Aac,
            "wav" => Self::Wav,
            "pcm" => Self::Pcm,
            "flac" => Self::Flac,
            _ => return None,
        })
    }

    /// Its name, as [`AudioFormat::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mp3 => "mp3",
            Self::Opus => "opus",
            Self::Aac => "aac",
            Self::Wav => "wav",
            Self::Pcm => "pcm",
            Self::Flac => "flac",
        }
    }

    /// The MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Mp3 => "audio/mpeg",
            Self::Opus => "audio/ogg; codecs=opus",
            Self::Aac => "audio/aac",
            Self::Wav => "audio/wav",
            Self::Pcm => "audio/pcm",
            Self::Flac => "audio/flac",
        }
    }

    /// Whether bytes can go out before the audio is complete without making the file wrong:
    /// false for WAV (its header holds the length) and FLAC (encoded whole).
    pub fn streams(self) -> bool {
        !matches!(self, Self::Wav | Self::Flac)
    }
}

/// Turns audio chunks into a format's bytes as they come.
#[derive(Debug)]
pub enum Encoder {
    /// MP3 frames as LAME completes them.
    Mp3(Box<Mp3Encoder>),
    /// Ogg pages.
    Opus(Box<OggOpusEncoder>),
    /// WAV streamed: the header (with placeholder sizes) goes out with the first chunk.
    WavStream {
        /// The voice's rate.
        rate: u32,
        /// Whether the header is out.
        started: bool,
    },
    /// PCM through the resampler.
    Pcm(Box<StreamResampler>),
    /// WAV or FLAC whole: every sample kept until the end, then a file with exact sizes.
    Whole {
        /// WAV or FLAC.
        format: AudioFormat,
        /// The voice's rate.
        rate: u32,
        /// Every sample so far.
        samples: Vec<f32>,
    },
}

impl Encoder {
    /// An encoder of `format` for a voice at `rate` Hz; `stream`: WAV goes out as it is made,
    /// with placeholder sizes, instead of whole.
    pub fn new(format: AudioFormat, rate: u32, stream: bool) -> Result<Self, CodecError> {
        Ok(match format {
            AudioFormat::Mp3 => Self::Mp3(Box::new(Mp3Encoder::new(rate)?)),
            AudioFormat::Opus => Self::Opus(Box::new(OggOpusEncoder::new(rate)?)),
            AudioFormat::Aac => return Err(CodecError::Unsupported("aac")),
            AudioFormat::Wav if stream => Self::WavStream {
                rate,
                started: false,
            },
            AudioFormat::Pcm => Self::Pcm(Box::new(
                StreamResampler::new(rate, PCM_RATE)
                    .map_err(|e| CodecError::Encoder(e.to_string()))?,
            )),
            AudioFormat::Wav | AudioFormat::Flac => Self::Whole {
                format,
                rate,
                samples: Vec::new(),
            },
        })
    }

    /// Bytes for the next chunk (possibly none yet). Samples outside [-1, 1] are clipped and
    /// NaN taken as silence: LAME aborts the process on NaN or infinite input, and a resampler
    /// spreads a NaN over its neighbours.
    pub fn chunk(&mut self, audio: &[f32]) -> Result<Vec<u8>, CodecError> {
        let audio = &*sanitized(audio);
        let mut out = Vec::new();
        match self {
            Self::Mp3(e) => out = e.push(audio)?,
            Self::Opus(e) => out = e.push(audio)?,
            Self::WavStream { rate, started } => {
                if !*started {
                    out.extend_from_slice(&wav_header(*rate, None));
                    *started = true;
                }
                pcm(&mut out, audio);
            }
            Self::Pcm(r) => pcm(
                &mut out,
                &r.push(audio)
                    .map_err(|e| CodecError::Encoder(e.to_string()))?,
            ),
            Self::Whole { samples, .. } => samples.extend_from_slice(audio),
        }
        Ok(out)
    }

    /// The remaining bytes once synthesis is complete: the encoder flushed.
    pub fn finish(self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        match self {
            Self::Mp3(e) => out = e.finish()?,
            Self::Opus(e) => out = e.finish()?,
            Self::WavStream { rate, started } => {
                if !started {
                    out.extend_from_slice(&wav_header(rate, Some(0)));
                }
            }
            Self::Pcm(r) => pcm(
                &mut out,
                &r.finish().map_err(|e| CodecError::Encoder(e.to_string()))?,
            ),
            Self::Whole {
                format: AudioFormat::Flac,
                rate,
                samples,
            } => {
                out = encode_flac(&samples, rate).map_err(|e| CodecError::Encoder(e.to_string()))?
            }
            Self::Whole { rate, samples, .. } => {
                out.extend_from_slice(&wav_header(rate, Some(samples.len())));
                pcm(&mut out, &samples);
            }
        }
        Ok(out)
    }

    /// `samples` at `rate` encoded whole as `format`.
    pub fn encode(format: AudioFormat, samples: &[f32], rate: u32) -> Result<Vec<u8>, CodecError> {
        let mut e = Self::new(format, rate, false)?;
        let mut out = e.chunk(samples)?;
        out.extend(e.finish()?);
        Ok(out)
    }
}

/// `samples` if every one is a number in [-1, 1], else a copy clipped to it with NaN as 0.
pub(crate) fn sanitized(samples: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if samples.iter().all(|s| (-1.0..=1.0).contains(s)) {
        std::borrow::Cow::Borrowed(samples)
    } else {
        samples
            .iter()
            .map(|&s| if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) })
            .collect()
    }
}

fn pcm(out: &mut Vec<u8>, samples: &[f32]) {
    write_pcm_s16le(out, samples).expect("writing to a Vec cannot fail");
}
