//! The reference-clip decoder and the WAV reader on whatever an upload holds: random bytes, and
//! real WAV, FLAC, MP3 and Ogg Opus files truncated, with bytes overwritten, or with their size
//! fields claiming gigabytes. Each gives samples or a named error, never a panic, and never more
//! samples than the input could hold: a small file whose header lies must not make the decoder
//! allocate what the header says.

use ferrovox_audio::{
    decode_audio, encode_flac, read_wav, to_i16, write_wav, AudioFormat, Encoder, ReferenceClip,
    ReferenceLimits,
};
use proptest::prelude::*;

/// Half a second of a tone at 24 kHz.
fn tone() -> Vec<f32> {
    (0..12_000).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect()
}

/// One small file of each format the upload path reads: FLAC both as FFmpeg writes it (a
/// reference fixture) and as ferrovox's own encoder does.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let samples = tone();
    let mut wav = Vec::new();
    write_wav(&mut wav, &samples, 24_000).unwrap();
    let flac = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/tone440_s16.flac"),
    )
    .unwrap();
    let ours = encode_flac(&samples, 24_000).unwrap();
    let mut out = vec![("wav", wav), ("flac", flac), ("flac", ours)];
    for (name, format) in [("mp3", AudioFormat::Mp3), ("opus", AudioFormat::Opus)] {
        let mut e = Encoder::new(format, 24_000, true).unwrap();
        let mut bytes = e.chunk(&samples).unwrap();
        bytes.extend(e.finish().unwrap());
        out.push((name, bytes));
    }
    out
}

/// The most samples `len` input bytes can decode to: an uncompressed file holds one per two
/// bytes; a compressed one is bounded generously (a 320 s stream of silence per kilobyte would
/// still be under it), while a header claiming gigabytes is far over it.
fn most_samples(format: &str, len: usize) -> usize {
    match format {
        "wav" => len / 2,
        _ => 48_000 * 2 + len * 2_000,
    }
}

fn check(format: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((samples, rate)) = decode_audio(bytes) {
        prop_assert!(rate > 0, "{format}: a rate of 0");
        prop_assert!(
            samples.len() <= most_samples(format, bytes.len()),
            "{format}: {} samples from {} bytes",
            samples.len(),
            bytes.len()
        );
    }
    if let Ok(wav) = read_wav(bytes) {
        prop_assert!(wav.samples.len() <= bytes.len() / 2);
    }
    let _ = ReferenceClip::from_bytes(bytes, 16_000, &ReferenceLimits::default());
    Ok(())
}

/// A damage done to a valid file.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Overwrite(usize, Vec<u8>),
    /// A 32-bit field set to a huge value (sizes, counts, rates).
    Huge(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..4096).prop_map(Damage::Truncate),
        (0usize..4096, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Damage::Overwrite(at, b)),
        (0usize..128).prop_map(Damage::Huge),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match d {
        Damage::Truncate(n) => b.truncate(*n % (b.len() + 1)),
        Damage::Overwrite(at, with) => {
            for (i, v) in with.iter().enumerate() {
                let k = (at + i) % b.len();
                b[k] = *v;
            }
        }
        Damage::Huge(at) => {
            let at = at % b.len().saturating_sub(4).max(1);
            let end = (at + 4).min(b.len());
            b[at..end].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f][..end - at]);
        }
    }
    b
}

proptest! {
    // No regression files: a failure is turned into a named test instead.
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused_or_read(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check("random", &bytes)?;
        // The same bytes behind each format's magic, so the parsers go past the first check.
        for magic in [&b"RIFF\x24\x00\x00\x00WAVEfmt "[..], b"fLaC", b"OggS", b"ID3\x03\x00\x00"] {
            let mut b = magic.to_vec();
            b.extend_from_slice(&bytes);
            check("random", &b)?;
        }
    }

    #[test]
    fn damaged_files_are_refused_or_read(which in 0usize..4, damages in prop::collection::vec(damage(), 1..4)) {
        let all = files();
        let (format, bytes) = &all[which];
        let mut b = bytes.clone();
        for d in &damages {
            if b.is_empty() {
                break;
            }
            b = apply(&b, d);
        }
        check(format, &b)?;
    }
}

/// Found by `damaged_files_are_refused_or_read`: symphonia's WAV parser multiplied the channel
/// count by the sample size in 16 bits and panicked on 65535 channels.
#[test]
fn a_wav_claiming_65535_channels_is_refused_not_a_panic() {
    let mut wav = Vec::new();
    write_wav(&mut wav, &tone(), 24_000).unwrap();
    wav[22..24].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(decode_audio(&wav).is_err());
    let err = ReferenceClip::from_bytes(&wav, 16_000, &ReferenceLimits::default()).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// Found by `cargo xtask fuzz reference-audio`: an 8 KB AIFF whose header claims 29697 channels
/// made the decoder size its buffers for them (69 MB held for a file of 8 KB). Channel counts
/// and rates past any clip's are refused from the header.
#[test]
fn an_aiff_claiming_29697_channels_is_refused_from_its_header() {
    let mut aiff = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/tone440_s16.aiff"),
    )
    .unwrap();
    aiff[20..22].copy_from_slice(&29697u16.to_be_bytes());
    let err = ReferenceClip::from_bytes(&aiff, 16_000, &ReferenceLimits::default()).unwrap_err();
    assert!(err.to_string().contains("claims 29697 channels"), "{err}");
}

/// The undamaged files read back (Ogg Opus is refused by name: there is no Opus decoder on the
/// upload path), so the damage above starts from files the decoders accept.
#[test]
fn the_undamaged_files_read_back() {
    for (format, bytes) in files() {
        if format == "opus" {
            let err = decode_audio(&bytes).unwrap_err();
            assert!(err.to_string().contains("Opus"), "{err}");
            continue;
        }
        let (samples, rate) = decode_audio(&bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert!(
            samples.len() >= 1_000,
            "{format}: {} samples",
            samples.len()
        );
        assert!(rate > 0, "{format}: {rate} Hz");
    }
}

/// A clip saved from ferrovox as FLAC can be uploaded again (a voice cloned from it): the
/// upload decoder reads `encode_flac`'s output back to the same 16-bit samples.
#[test]
fn ferrovox_flac_is_read_by_the_upload_decoder() {
    let samples = tone();
    let flac = encode_flac(&samples, 24_000).unwrap();
    let (decoded, rate) = decode_audio(&flac).unwrap();
    assert_eq!(rate, 24_000);
    let want: Vec<i16> = to_i16(&samples);
    let got: Vec<i16> = to_i16(&decoded);
    assert_eq!(got, want);
}
