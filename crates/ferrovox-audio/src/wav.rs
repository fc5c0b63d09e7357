//! f32 samples to 16-bit PCM, WAV (RIFF) files and headers for streams.

use std::io::{self, Write};

/// Converts samples in [-1, 1] to 16-bit PCM, clipping what lies outside.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

/// Writes samples as little-endian signed 16-bit PCM.
pub fn write_pcm_s16le<W: Write>(out: &mut W, samples: &[f32]) -> io::Result<()> {
    let bytes: Vec<u8> = to_i16(samples)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    out.write_all(&bytes)
}

/// The 44-byte header of a mono 16-bit PCM WAV file holding `num_samples` samples.
/// For streams of unknown length pass `None`: the sizes are set to the maximum, which
/// common players read as "until the end of the stream".
pub fn wav_header(sample_rate: u32, num_samples: Option<usize>) -> [u8; 44] {
    let data_len = num_samples.map_or(u32::MAX - 36, |n| {
        (n * 2).min((u32::MAX - 36) as usize) as u32
    });
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Writes a complete mono 16-bit WAV file.
pub fn write_wav<W: Write>(out: &mut W, samples: &[f32], sample_rate: u32) -> io::Result<()> {
    out.write_all(&wav_header(sample_rate, Some(samples.len())))?;
    write_pcm_s16le(out, samples)
}

/// Parsed essentials of a 16-bit PCM WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
    /// Samples of the first channel, scaled to [-1, 1].
    pub samples: Vec<f32>,
}

/// Reads a 16-bit PCM WAV file, naming what is wrong when it is not one.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut pos = 12;
    let (mut rate, mut channels, mut bits) = (0u32, 0u16, 0u16);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let format = u16::from_le_bytes([body[0], body[1]]);
                if format != 1 {
                    return Err(format!("WAV format {format} is not PCM"));
                }
                channels = u16::from_le_bytes([body[2], body[3]]);
                rate = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes"));
                bits = u16::from_le_bytes([body[14], body[15]]);
            }
            b"data" => {
                if bits != 16 || channels == 0 {
                    return Err(format!(
                        "{bits}-bit, {channels}-channel WAV; only 16-bit PCM is read"
                    ));
                }
                let frame = 2 * channels as usize;
                let samples = body
                    .chunks_exact(frame)
                    .map(|f| i16::from_le_bytes([f[0], f[1]]) as f32 / 32768.0)
                    .collect();
                return Ok(Wav {
                    sample_rate: rate,
                    channels,
                    samples,
                });
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip() {
        let samples: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        let mut buf = Vec::new();
        write_wav(&mut buf, &samples, 22050).unwrap();
        assert_eq!(buf.len(), 44 + 2000);
        let wav = read_wav(&buf).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (22050, 1));
        let err = wav
            .samples
            .iter()
            .zip(&samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn clipping_and_garbage() {
        assert_eq!(to_i16(&[2.0, -2.0, 0.0]), [32767, -32767, 0]);
        assert!(read_wav(b"RIFF....WAVEjunk").is_err());
        assert!(read_wav(b"hello").unwrap_err().contains("RIFF"));
    }
}
