//! Response encodings, fed chunk by chunk as synthesis streams: `pcm` is 24 kHz s16le
//! (resampled from the voice's rate), `wav` is 16-bit at the voice's rate with a streaming
//! header, `flac` is encoded once the audio is complete.

use ferrovox_audio::{encode_flac, wav_header, write_pcm_s16le, StreamResampler};

/// Sample rate of the `pcm` format (OpenAI's).
pub const PCM_RATE: u32 = 24_000;

/// Formats the speech endpoint returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// RIFF WAV, 16-bit mono at the voice's rate.
    Wav,
    /// Raw 16-bit little-endian mono at 24 kHz.
    Pcm,
    /// FLAC, 16-bit mono at the voice's rate.
    Flac,
}

impl AudioFormat {
    /// Parses the `response_format` field.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wav" => Some(Self::Wav),
            "pcm" => Some(Self::Pcm),
            "flac" => Some(Self::Flac),
            _ => None,
        }
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Pcm => "audio/pcm",
            Self::Flac => "audio/flac",
        }
    }
}

/// Turns audio chunks into response bytes.
#[derive(Debug)]
pub enum Encoder {
    /// WAV: the header goes out with the first chunk.
    Wav {
        /// The voice's rate.
        rate: u32,
        /// Whether the header is out.
        started: bool,
    },
    /// PCM through the resampler.
    Pcm(Box<StreamResampler>),
    /// FLAC: buffered until the end.
    Flac {
        /// The voice's rate.
        rate: u32,
        /// Every sample so far.
        samples: Vec<f32>,
    },
}

impl Encoder {
    /// An encoder for `format` and a voice that speaks at `rate`.
    pub fn new(format: AudioFormat, rate: u32) -> Result<Self, String> {
        Ok(match format {
            AudioFormat::Wav => Self::Wav {
                rate,
                started: false,
            },
            AudioFormat::Pcm => Self::Pcm(Box::new(
                StreamResampler::new(rate, PCM_RATE).map_err(|e| e.to_string())?,
            )),
            AudioFormat::Flac => Self::Flac {
                rate,
                samples: Vec::new(),
            },
        })
    }

    /// Bytes for the next chunk (possibly none yet).
    pub fn chunk(&mut self, audio: &[f32]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self {
            Self::Wav { rate, started } => {
                if !*started {
                    out.extend_from_slice(&wav_header(*rate, None));
                    *started = true;
                }
                pcm(&mut out, audio);
            }
            Self::Pcm(r) => pcm(&mut out, &r.push(audio).map_err(|e| e.to_string())?),
            Self::Flac { samples, .. } => samples.extend_from_slice(audio),
        }
        Ok(out)
    }

    /// The remaining bytes once synthesis is complete.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self {
            Self::Wav { rate, started } => {
                if !started {
                    out.extend_from_slice(&wav_header(rate, Some(0)));
                }
            }
            Self::Pcm(r) => pcm(&mut out, &r.finish().map_err(|e| e.to_string())?),
            Self::Flac { rate, samples } => {
                out = encode_flac(&samples, rate).map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }
}

fn pcm(out: &mut Vec<u8>, samples: &[f32]) {
    write_pcm_s16le(out, samples).expect("writing to a Vec cannot fail");
}
