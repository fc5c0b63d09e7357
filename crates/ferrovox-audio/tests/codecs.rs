//! Every format's bytes read back by a decoder that is not its encoder: MP3 through symphonia,
//! Ogg Opus through the `ogg` crate's page reader and libopus's decoder, WAV and FLAC through
//! their readers; duration and content against the PCM that went in (SNR per lossy format).

use ferrovox_audio::codec::{OggOpusEncoder, OPUS_RATE};
use ferrovox_audio::{resample, AudioFormat, Encoder};

/// 10 s of a voiced, speech-like signal: harmonics of a gliding pitch under a syllable-rate
/// envelope.
fn speechlike(rate: u32, seconds: f64) -> Vec<f32> {
    let n = (rate as f64 * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / rate as f64;
            let voice: f64 = (1..=12).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            let envelope = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            (0.3 * envelope * voice) as f32
        })
        .collect()
}

/// Signal-to-noise ratio of `got` against `want`, in dB, at the lag (0..`max_lag`) where they
/// line up best; and that lag.
fn snr_aligned(want: &[f32], got: &[f32], max_lag: usize) -> (f64, usize) {
    let mut best = (f64::NEG_INFINITY, 0);
    for lag in 0..max_lag.min(got.len()) {
        let n = want.len().min(got.len() - lag);
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for i in 0..n {
            let (w, g) = (want[i] as f64, got[i + lag] as f64);
            signal += w * w;
            noise += (w - g) * (w - g);
        }
        let snr = 10.0 * (signal / noise.max(1e-20)).log10();
        if snr > best.0 {
            best = (snr, lag);
        }
    }
    best
}

/// MP3 at Piper's and Chatterbox's rates: symphonia reads the rate back and every input
/// sample after LAME's priming delay (the end padded by under two frames); the content,
/// aligned, keeps SNR ≥ 15 dB at 64 kbit/s. Streamed in pieces it is the same file.
#[test]
fn mp3_decodes_to_the_input() {
    for rate in [22_050, 24_000] {
        let pcm = speechlike(rate, 10.0);
        let bytes = Encoder::encode(AudioFormat::Mp3, &pcm, rate).unwrap();
        let (got, got_rate) = ferrovox_audio::decode_audio(&bytes).unwrap();
        assert_eq!(got_rate, rate);
        let (snr, lag) = snr_aligned(&pcm, &got, 4000);
        // Every input sample is there after LAME's priming delay; the padding is under two
        // frames.
        let extra = got.len() as i64 - (lag + pcm.len()) as i64;
        assert!(
            (0..2 * 1152).contains(&extra),
            "{extra} samples past the input's end"
        );
        eprintln!(
            "mp3 {rate} Hz: {} bytes for 10 s ({:.1} kbit/s), {} samples decoded for {}, delay {lag}, SNR {snr:.1} dB",
            bytes.len(),
            bytes.len() as f64 * 8.0 / 10.0 / 1000.0,
            got.len(),
            pcm.len()
        );
        assert!(snr >= 15.0, "SNR {snr:.1} dB");
        let mut streamed = Encoder::new(AudioFormat::Mp3, rate, true).unwrap();
        let mut pieces = Vec::new();
        for chunk in pcm.chunks(4_321) {
            pieces.extend(streamed.chunk(chunk).unwrap());
        }
        pieces.extend(streamed.finish().unwrap());
        assert_eq!(pieces, bytes, "streamed in pieces");
    }
}

/// The Ogg pages of an Opus stream: the header's fields, each page's granule position, and
/// the packets.
struct OggOpus {
    pre_skip: usize,
    input_rate: u32,
    granules: Vec<u64>,
    packets: Vec<Vec<u8>>,
    ended: bool,
}

fn read_ogg_opus(bytes: &[u8]) -> OggOpus {
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
    let head = reader.read_packet_expected().unwrap();
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!(head.data[9], 1, "mono");
    let tags = reader.read_packet_expected().unwrap();
    assert_eq!(&tags.data[..8], b"OpusTags");
    let mut out = OggOpus {
        pre_skip: u16::from_le_bytes([head.data[10], head.data[11]]) as usize,
        input_rate: u32::from_le_bytes(head.data[12..16].try_into().unwrap()),
        granules: Vec::new(),
        packets: Vec::new(),
        ended: false,
    };
    while let Some(packet) = reader.read_packet().unwrap() {
        if packet.last_in_page() {
            out.granules.push(packet.absgp_page());
        }
        out.ended |= packet.last_in_stream();
        out.packets.push(packet.data);
    }
    out
}

/// libopus's decoder over the packets, at 48 kHz, the pre-skip dropped and the length cut to
/// the last granule position, as a player does.
fn decode_opus(stream: &OggOpus) -> Vec<f32> {
    use unsafe_libopus::{opus_decode_float, opus_decoder_create, opus_decoder_destroy};
    let mut error = 0;
    let decoder = unsafe { opus_decoder_create(OPUS_RATE as i32, 1, &mut error) };
    assert_eq!(error, 0);
    let mut out = Vec::new();
    for packet in &stream.packets {
        let mut frame = vec![0f32; 5760];
        let n = unsafe {
            opus_decode_float(
                decoder,
                packet.as_ptr(),
                packet.len() as i32,
                frame.as_mut_ptr(),
                frame.len() as i32,
                0,
            )
        };
        assert!(n > 0, "decode error {n}");
        out.extend_from_slice(&frame[..n as usize]);
    }
    unsafe { opus_decoder_destroy(decoder) };
    let end = *stream.granules.last().unwrap() as usize;
    out.truncate(end);
    out.drain(..stream.pre_skip.min(out.len()));
    out
}

/// Ogg Opus: the header names the input rate and the encoder's lookahead as pre-skip; page
/// granule positions never decrease and the last one is the pre-skip plus exactly the input's
/// length at 48 kHz; decoded, the stream has that length and matches the resampled input (SNR
/// ≥ 10 dB at 32 kbit/s, no delay left once the pre-skip is dropped). Streaming pieces gives a
/// stream of the same length.
#[test]
fn ogg_opus_has_its_pre_skip_and_granule_positions_right() {
    for rate in [22_050, 24_000, 16_000] {
        let pcm = speechlike(rate, 10.0);
        let bytes = Encoder::encode(AudioFormat::Opus, &pcm, rate).unwrap();
        let stream = read_ogg_opus(&bytes);
        let want = resample(&pcm, rate, OPUS_RATE).unwrap();
        assert_eq!(stream.input_rate, rate);
        assert_eq!(
            stream.pre_skip,
            OggOpusEncoder::new(rate).unwrap().pre_skip()
        );
        assert!(stream.pre_skip > 0);
        assert!(stream.ended, "the last page ends the stream");
        assert!(
            stream.granules.windows(2).all(|w| w[0] <= w[1]),
            "{:?}",
            stream.granules
        );
        let last = *stream.granules.last().unwrap() as usize;
        assert_eq!(last, stream.pre_skip + want.len(), "end trimming");
        let got = decode_opus(&stream);
        assert_eq!(got.len(), want.len());
        let (snr, lag) = snr_aligned(&want, &got, 200);
        eprintln!(
            "opus from {rate} Hz: {} bytes for 10 s ({:.1} kbit/s), pre-skip {}, {} pages, SNR {snr:.1} dB at lag {lag}",
            bytes.len(),
            bytes.len() as f64 * 8.0 / 10.0 / 1000.0,
            stream.pre_skip,
            stream.granules.len()
        );
        assert!(snr >= 10.0, "SNR {snr:.1} dB");
        assert!(lag <= 2, "lag {lag}");
        let mut streamed = Encoder::new(AudioFormat::Opus, rate, true).unwrap();
        let mut pieces = Vec::new();
        for chunk in pcm.chunks(rate as usize / 2) {
            pieces.extend(streamed.chunk(chunk).unwrap());
        }
        pieces.extend(streamed.finish().unwrap());
        let s = read_ogg_opus(&pieces);
        assert!(
            s.granules.len() >= 20,
            "a page per half second: {}",
            s.granules.len()
        );
        assert_eq!(
            *s.granules.last().unwrap() as usize,
            s.pre_skip + want.len()
        );
        assert_eq!(decode_opus(&s).len(), want.len());
    }
}

/// WAV and FLAC encoded whole carry their exact length; a streamed WAV carries the
/// placeholder sizes; PCM is the input at 24 kHz.
#[test]
fn whole_files_carry_their_exact_length() {
    let rate = 22_050;
    let pcm = speechlike(rate, 4.8);
    let wav = Encoder::encode(AudioFormat::Wav, &pcm, rate).unwrap();
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    let riff = u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize;
    assert_eq!(data, 2 * pcm.len());
    assert_eq!(riff, wav.len() - 8);
    let read = ferrovox_audio::read_wav(&wav).unwrap();
    assert_eq!(read.samples.len(), pcm.len());
    let flac = Encoder::encode(AudioFormat::Flac, &pcm, rate).unwrap();
    let mut reader = claxon::FlacReader::new(std::io::Cursor::new(flac)).unwrap();
    let flac_rate = reader.streaminfo().sample_rate;
    let flac: Vec<i32> = reader.samples().map(Result::unwrap).collect();
    assert_eq!((flac.len(), flac_rate), (pcm.len(), rate));
    let mut streamed = Encoder::new(AudioFormat::Wav, rate, true).unwrap();
    let head = streamed.chunk(&pcm).unwrap();
    let placeholder = u32::from_le_bytes(head[40..44].try_into().unwrap());
    assert_eq!(placeholder, u32::MAX - 36, "streamed: placeholder size");
    let pcm24 = Encoder::encode(AudioFormat::Pcm, &pcm, rate).unwrap();
    assert_eq!(pcm24.len() / 2, resample(&pcm, rate, 24_000).unwrap().len());
    assert!(matches!(
        Encoder::new(AudioFormat::Aac, rate, true),
        Err(ferrovox_audio::CodecError::Unsupported("aac"))
    ));
}

/// Found by `codecs_any_input`: LAME aborted the whole process (a C assertion in its
/// psychoacoustic model) on NaN or infinite samples. Every encoder now clips to [-1, 1] and
/// takes NaN as silence.
#[test]
fn encoders_take_nan_and_infinities() {
    let mut bad = vec![0.25f32; 4000];
    bad[10] = f32::NAN;
    bad[200] = f32::INFINITY;
    bad[300] = f32::NEG_INFINITY;
    bad[400] = 1e9;
    for format in AudioFormat::ENCODED {
        let bytes = Encoder::encode(format, &bad, 22_050).unwrap();
        assert!(!bytes.is_empty(), "{format:?}");
    }
    let (samples, _) =
        ferrovox_audio::decode_audio(&Encoder::encode(AudioFormat::Mp3, &bad, 22_050).unwrap())
            .unwrap();
    assert!(samples.iter().all(|s| s.is_finite()));
}
