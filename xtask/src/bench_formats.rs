//! `cargo xtask bench formats`: every response format over 10 s of the joe voice's speech
//! (22.05 kHz): bytes, encode time (median of 5), the decoded length, and SNR against the PCM
//! (MP3 aligned past LAME's priming delay; Opus against the input resampled to 48 kHz, decoded
//! by libopus with its pre-skip dropped and cut to the last granule position). SNR is of the
//! waveform: a perceptual codec that keeps what is heard but not the phase scores low on it.

use std::time::Instant;

use ferrovox_audio::codec::OPUS_RATE;
use ferrovox_audio::{decode_audio, resample, AudioFormat, Encoder};
use ferrovox_engine::{open_voice, SynthesisOptions, Voice};
use serde_json::json;

use crate::util::median;

/// SNR of `got` against `want` in dB at the best lag below `max_lag`, and that lag.
fn snr(want: &[f32], got: &[f32], max_lag: usize) -> (f64, usize) {
    (0..max_lag.min(got.len()))
        .map(|lag| {
            let n = want.len().min(got.len() - lag);
            let (mut s, mut e) = (0.0f64, 0.0f64);
            for i in 0..n {
                let (w, g) = (f64::from(want[i]), f64::from(got[i + lag]));
                s += w * w;
                e += (w - g) * (w - g);
            }
            (10.0 * (s / e.max(1e-20)).log10(), lag)
        })
        .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// An Ogg Opus stream's packets decoded at 48 kHz, as a player plays them.
fn decode_opus(bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
    use unsafe_libopus::{opus_decode_float, opus_decoder_create, opus_decoder_destroy};
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
    let head = reader.read_packet_expected()?;
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]) as usize;
    reader.read_packet_expected()?;
    let mut error = 0;
    // SAFETY: a plain constructor; the state is destroyed below.
    let decoder = unsafe { opus_decoder_create(OPUS_RATE as i32, 1, &mut error) };
    anyhow::ensure!(error == 0, "opus decoder: {error}");
    let (mut out, mut end) = (Vec::new(), 0u64);
    while let Some(packet) = reader.read_packet()? {
        end = packet.absgp_page();
        let mut frame = vec![0f32; 5760];
        // SAFETY: the packet and frame buffers hold the lengths passed.
        let n = unsafe {
            opus_decode_float(
                decoder,
                packet.data.as_ptr(),
                packet.data.len() as i32,
                frame.as_mut_ptr(),
                frame.len() as i32,
                0,
            )
        };
        anyhow::ensure!(n > 0, "opus decode: {n}");
        out.extend_from_slice(&frame[..n as usize]);
    }
    // SAFETY: made above, destroyed once.
    unsafe { opus_decoder_destroy(decoder) };
    out.truncate(end as usize);
    out.drain(..pre_skip.min(out.len()));
    Ok(out)
}

pub fn run() -> anyhow::Result<serde_json::Value> {
    let voice = Voice::new(
        open_voice(ferrovox_voices::DEFAULT_VOICE, &candle_core::Device::Cpu)?,
        None,
    );
    let rate = voice.model().sample_rate();
    let mut pcm = voice
        .synthesize(crate::bench_texts::PARAGRAPH, &SynthesisOptions::default())?
        .samples;
    pcm.truncate(10 * rate as usize);
    anyhow::ensure!(
        pcm.len() == 10 * rate as usize,
        "the paragraph is under 10 s"
    );
    println!(
        "| format | bytes for 10 s | kbit/s | encode | decoded | SNR |\n|---|---|---|---|---|---|"
    );
    let mut rows = Vec::new();
    for format in AudioFormat::ENCODED {
        let times: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                Encoder::encode(format, &pcm, rate).map(|_| start.elapsed().as_secs_f64())
            })
            .collect::<Result<_, _>>()?;
        let bytes = Encoder::encode(format, &pcm, rate)?;
        let (decoded, decoded_rate, reference) = match format {
            AudioFormat::Opus => (
                decode_opus(&bytes)?,
                OPUS_RATE,
                resample(&pcm, rate, OPUS_RATE)?,
            ),
            AudioFormat::Pcm => (
                bytes
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect(),
                ferrovox_audio::PCM_RATE,
                resample(&pcm, rate, ferrovox_audio::PCM_RATE)?,
            ),
            AudioFormat::Flac => {
                let mut r = claxon::FlacReader::new(std::io::Cursor::new(&bytes))?;
                let s: Vec<f32> = r
                    .samples()
                    .map(|s| s.map(|v| v as f32 / 32768.0))
                    .collect::<Result<_, _>>()?;
                (s, rate, pcm.clone())
            }
            _ => {
                let (s, r) = decode_audio(&bytes)?;
                (s, r, pcm.clone())
            }
        };
        let (db, lag) = snr(&reference, &decoded, 3000);
        let seconds = (decoded.len() - lag) as f64 / decoded_rate as f64;
        let encode_ms = median(times) * 1e3;
        println!(
            "| {} | {} | {:.1} | {encode_ms:.1} ms | {seconds:.3} s at {decoded_rate} Hz{} | {} |",
            format.name(),
            bytes.len(),
            bytes.len() as f64 * 8.0 / 10.0 / 1000.0,
            if lag > 0 {
                format!(" (after a {lag}-sample delay)")
            } else {
                String::new()
            },
            if db > 70.0 {
                format!("{db:.1} dB (16-bit rounding only)")
            } else {
                format!("{db:.1} dB")
            },
        );
        rows.push(json!({
            "format": format.name(), "bytes": bytes.len(), "encode_ms": encode_ms,
            "decoded_s": seconds, "decoded_rate": decoded_rate, "delay": lag, "snr_db": db,
        }));
    }
    Ok(json!({"voice": ferrovox_voices::DEFAULT_VOICE, "seconds": 10, "formats": rows}))
}
