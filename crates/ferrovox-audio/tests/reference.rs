//! The reference-clip front end on committed clips of every supported format (written by
//! tests/fixtures/make_reference_clips.py) and on WAV made here for the refusals.

use std::f64::consts::TAU;
use std::path::PathBuf;

use ferrovox_audio::{write_wav, ReferenceClip, ReferenceError, ReferenceLimits};

/// What make_reference_clips.py wrote into every format clip.
const TONE_HZ: f32 = 440.0;
const TONE_AMP: f32 = 0.5;
const TONE_S: f64 = 0.5;
const PCM_RATE: u32 = 8000;
const LOSSY_RATE: u32 = 44100;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The format clips are 0.5 s, under the 2 s default minimum.
fn short_ok() -> ReferenceLimits {
    ReferenceLimits {
        min_s: 0.1,
        ..ReferenceLimits::default()
    }
}

/// Computed in f64: in f32 the phase of a late sample is off by ~1e-4 rad, more than a
/// 16-bit step.
fn sine(rate: u32, hz: f32, amp: f32, seconds: f64) -> Vec<f32> {
    let n = (seconds * rate as f64).round() as usize;
    (0..n)
        .map(|i| amp * (TAU * hz as f64 * i as f64 / rate as f64).sin() as f32)
        .collect()
}

fn wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let mut out = Vec::new();
    write_wav(&mut out, samples, rate).unwrap();
    out
}

/// A mono 32-bit float WAV, which can carry values no integer format can.
fn float_wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let data_len = 4 * samples.len() as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&3u16.to_le_bytes()); // WAVE_FORMAT_IEEE_FLOAT
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(4 * rate).to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Frequency of a pure tone from its rising zero crossings (linearly interpolated), over the
/// middle of the signal where codec and filter edges have settled.
fn tone_hz(samples: &[f32], rate: u32) -> f64 {
    let skip = samples.len() / 10;
    let x = &samples[skip..samples.len() - skip];
    let crossings: Vec<f64> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + (-w[0] / (w[1] - w[0])) as f64)
        .collect();
    assert!(
        crossings.len() > 10,
        "too few crossings: {}",
        crossings.len()
    );
    let span = crossings[crossings.len() - 1] - crossings[0];
    (crossings.len() - 1) as f64 / span * rate as f64
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// How one format clip must decode.
struct Case {
    file: &'static str,
    container: &'static str,
    rate: u32,
    /// Largest difference from the written sine, for the lossless formats.
    exact: Option<f32>,
    /// Allowed error in Hz of the tone and in dB of its peak.
    hz_tol: f64,
    peak_tol: f64,
}

const fn lossless(file: &'static str, container: &'static str, lsb: f32) -> Case {
    Case {
        file,
        container,
        rate: PCM_RATE,
        exact: Some(lsb),
        hz_tol: 0.5,
        peak_tol: 0.2,
    }
}

const fn lossy(file: &'static str, container: &'static str, rate: u32) -> Case {
    Case {
        file,
        container,
        rate,
        exact: None,
        hz_tol: 2.0,
        peak_tol: 1.0,
    }
}

/// Two steps of each integer format (scaling by 32767 on write and 32768 on read, then
/// rounding), and f32 precision for the float formats.
const CASES: &[Case] = &[
    lossless("tone440_u8.wav", "wave", 2.0 / 128.0),
    lossless("tone440_s16.wav", "wave", 2.0 / 32768.0),
    lossless("tone440_s24.wav", "wave", 2.0 / 8388608.0),
    lossless("tone440_s32.wav", "wave", 1e-6),
    lossless("tone440_f32.wav", "wave", 1e-6),
    lossless("tone440_f64.wav", "wave", 1e-6),
    lossless("tone440_s16.aiff", "aiff", 2.0 / 32768.0),
    lossless("tone440_s16.flac", "flac", 2.0 / 32768.0),
    lossless("tone440_s24.flac", "flac", 2.0 / 8388608.0),
    lossless("tone440_alac.m4a", "isomp4", 2.0 / 32768.0),
    lossy("tone440_ima_adpcm.wav", "wave", PCM_RATE),
    lossy("tone440.mp3", "mp3", LOSSY_RATE),
    lossy("tone440_id3.mp3", "mp3", LOSSY_RATE),
    lossy("tone440.ogg", "ogg", LOSSY_RATE),
    lossy("tone440_aac.m4a", "isomp4", LOSSY_RATE),
];

#[test]
fn every_format_decodes_to_the_tone_it_holds() {
    for case in CASES {
        let bytes = read(case.file);
        let clip = ReferenceClip::from_bytes(&bytes, case.rate, &short_ok())
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let what = format!("{}: {clip:?}", case.file);
        assert_eq!(clip.container, case.container, "{what}");
        assert_eq!(clip.source_rate, case.rate, "{what}");
        assert_eq!(clip.sample_rate, case.rate, "{what}");
        assert_eq!(clip.source_channels, 1, "{what}");
        assert_eq!(clip.skipped_packets, 0, "{what}");
        assert!(!clip.used.truncated, "{what}");
        assert!(
            (clip.duration_s - TONE_S).abs() < 0.06,
            "{what}: {} s",
            clip.duration_s
        );
        let hz = tone_hz(&clip.samples, clip.sample_rate);
        assert!((hz - TONE_HZ as f64).abs() < case.hz_tol, "{what}: {hz} Hz");
        let peak = 20.0 * (TONE_AMP as f64).log10();
        assert!(
            (clip.peak_dbfs - peak).abs() < case.peak_tol,
            "{what}: peak {} dBFS",
            clip.peak_dbfs
        );
        if let Some(tol) = case.exact {
            // Nothing to trim in a tone that fills the file.
            assert_eq!(clip.trimmed, (0.0, TONE_S), "{what}");
            let expected = sine(case.rate, TONE_HZ, TONE_AMP, TONE_S);
            let err = max_abs_diff(&clip.samples, &expected);
            assert!(err <= tol, "{what}: max error {err} > {tol}");
        }

        // A path decodes the same, with the extension as a hint.
        let from_path = ReferenceClip::from_path(fixture(case.file), case.rate, &short_ok())
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_eq!(from_path.hash, clip.hash, "{}", case.file);
    }
}

#[test]
fn opus_is_refused_as_an_unsupported_codec() {
    for (file, container) in [
        ("tone440_opus.ogg", "ogg"),
        ("tone440_opus.webm", "matroska"),
    ] {
        match ReferenceClip::from_bytes(&read(file), 24000, &short_ok()) {
            Err(e @ ReferenceError::UnsupportedCodec { .. }) => {
                let ReferenceError::UnsupportedCodec {
                    container: c,
                    codec,
                    ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(c, container, "{file}");
                assert_eq!(codec, "Opus", "{file}");
                assert!(e.to_string().contains("Opus audio"), "{file}: {e}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn stereo_is_the_average_of_its_channels() {
    let clip =
        ReferenceClip::from_bytes(&read("stereo_440_660_s16.wav"), PCM_RATE, &short_ok()).unwrap();
    assert_eq!(clip.source_channels, 2);
    let left = sine(PCM_RATE, 440.0, 0.5, TONE_S);
    let right = sine(PCM_RATE, 660.0, 0.3, TONE_S);
    let mono: Vec<f32> = left
        .iter()
        .zip(&right)
        .map(|(l, r)| (l + r) / 2.0)
        .collect();
    let err = max_abs_diff(&clip.samples, &mono);
    assert!(err <= 2.0 / 32768.0, "max error {err}");
}

#[test]
fn resampling_keeps_length_frequency_and_phase() {
    let bytes = read("tone1k_22050_s16.wav");
    let clip = ReferenceClip::from_bytes(&bytes, 16000, &short_ok()).unwrap();
    assert_eq!(clip.source_rate, 22050);
    assert_eq!(clip.source_samples().len(), 11025);
    let at_24k = clip.at_rate(24000).unwrap();
    for (c, rate, len) in [(&clip, 16000, 8000), (&at_24k, 24000, 12000)] {
        assert_eq!(c.sample_rate, rate);
        assert_eq!(c.samples.len(), len, "{rate} Hz");
        assert!(
            (c.duration_s - 0.5).abs() < 1e-9,
            "{rate} Hz: {}",
            c.duration_s
        );
        let hz = tone_hz(&c.samples, rate);
        assert!((hz - 1000.0).abs() < 0.5, "{rate} Hz: {hz} Hz");
        // Away from the edges, where the filter sees zeros outside the signal.
        let expected = sine(rate, 1000.0, TONE_AMP, 0.5);
        let edge = rate as usize / 20;
        let err = max_abs_diff(&c.samples[edge..len - edge], &expected[edge..len - edge]);
        assert!(err < 3e-3, "{rate} Hz: max error {err}");
        assert_eq!(c.hash, clip.hash, "the hash is of the source-rate clip");
    }
    let both = clip.at_rates(&[24000, 16000]).unwrap();
    assert_eq!(both[0].samples, at_24k.samples);
    assert_eq!(both[1].samples, clip.samples);
}

#[test]
fn silent_margins_are_trimmed_by_level() {
    let bytes = read("padded_tone_s16.wav");
    let clip = ReferenceClip::from_bytes(&bytes, PCM_RATE, &short_ok()).unwrap();
    let (start, end) = clip.trimmed;
    // 25 ms windows: a window partly over the tone counts as loud.
    assert!((0.274..=0.3).contains(&start), "start {start}");
    assert!((0.8..=0.826).contains(&end), "end {end}");
    assert!((clip.used.read_s - 1.2).abs() < 1e-9, "{:?}", clip.used);
    assert!(
        (clip.duration_s - 0.5).abs() < 0.05,
        "{} s",
        clip.duration_s
    );
    assert_eq!(clip.samples.len(), clip.source_samples().len());

    // The noise lies about 62 dB under the tone's RMS: an 80 dB range keeps it.
    let wide = ReferenceLimits {
        trim_top_db: 80.0,
        ..short_ok()
    };
    let kept = ReferenceClip::from_bytes(&bytes, PCM_RATE, &wide).unwrap();
    assert_eq!(kept.trimmed.0, 0.0);
    assert!((kept.trimmed.1 - 1.2).abs() < 1e-9, "{:?}", kept.trimmed);
    assert_ne!(kept.hash, clip.hash);
}

#[test]
fn a_full_scale_1k_sine_reads_minus_3_01_lufs() {
    let bytes = wav(&sine(48000, 1000.0, 1.0, 3.0), 48000);
    // A full-scale sine has its crests at |x| >= 0.999, over the default 1% share.
    let allow_peaks = ReferenceLimits {
        clip_share: 1.0,
        ..ReferenceLimits::default()
    };
    let clip = ReferenceClip::from_bytes(&bytes, 48000, &allow_peaks).unwrap();
    assert!(
        (clip.loudness_lufs + 3.01).abs() < 0.1,
        "{} LUFS",
        clip.loudness_lufs
    );
    assert!(clip.peak_dbfs.abs() < 0.01, "{} dBFS", clip.peak_dbfs);
    assert!(
        (clip.rms_dbfs + 3.01).abs() < 0.01,
        "{} dBFS",
        clip.rms_dbfs
    );
    // 48 samples a period, of which the two crests reach the clip level.
    assert!(
        (clip.clipped_share - 2.0 / 48.0).abs() < 1e-3,
        "{}",
        clip.clipped_share
    );
    assert!(matches!(
        ReferenceClip::from_bytes(&bytes, 48000, &ReferenceLimits::default()),
        Err(ReferenceError::Clipped { .. })
    ));

    // 20 dB down reads 20 LU lower.
    let quieter = wav(&sine(48000, 1000.0, 0.1, 3.0), 48000);
    let clip = ReferenceClip::from_bytes(&quieter, 48000, &ReferenceLimits::default()).unwrap();
    assert!(
        (clip.loudness_lufs + 23.01).abs() < 0.1,
        "{} LUFS",
        clip.loudness_lufs
    );
}

#[test]
fn refusals_name_their_reason_and_figures() {
    let limits = ReferenceLimits::default();
    let rate = 16000;

    // 1 s of tone between two 0.5 s silences: 2 s read, 1 s after trimming.
    let mut padded = vec![0.0; 8000];
    padded.extend(sine(rate, 300.0, 0.5, 1.0));
    padded.extend(vec![0.0; 8000]);
    match ReferenceClip::from_bytes(&wav(&padded, rate), rate, &limits) {
        Err(
            e @ ReferenceError::TooShort {
                duration_s,
                read_s,
                min_s,
            },
        ) => {
            assert!((duration_s - 1.0).abs() < 0.05, "{duration_s}");
            assert!((read_s - 2.0).abs() < 1e-9, "{read_s}");
            assert_eq!(min_s, 2.0);
            let msg = e.to_string();
            assert!(msg.contains("under the 2.00 s minimum"), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    match ReferenceClip::from_bytes(&wav(&[0.0; 48000], rate), rate, &limits) {
        Err(e @ ReferenceError::Silent { peak_dbfs, .. }) => {
            assert_eq!(peak_dbfs, f64::NEG_INFINITY);
            assert!(e.to_string().contains("silent"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Hiss at about −80 dBFS is silence too.
    let hiss: Vec<f32> = (0..48000)
        .map(|i| if i % 2 == 0 { 1e-4 } else { -1e-4 })
        .collect();
    match ReferenceClip::from_bytes(&wav(&hiss, rate), rate, &limits) {
        Err(ReferenceError::Silent {
            peak_dbfs,
            silence_dbfs,
        }) => {
            assert!((peak_dbfs + 80.0).abs() < 1.0, "{peak_dbfs}");
            assert_eq!(silence_dbfs, -50.0);
        }
        other => panic!("{other:?}"),
    }

    // Sparse clicks reach −40 dBFS but carry almost no energy.
    let clicks: Vec<f32> = (0..48000)
        .map(|i| if i % 1600 == 0 { 0.01 } else { 0.0 })
        .collect();
    match ReferenceClip::from_bytes(&wav(&clicks, rate), rate, &limits) {
        Err(e @ ReferenceError::TooQuiet { loudness_lufs, .. }) => {
            assert!(loudness_lufs < -60.0, "{loudness_lufs}");
            assert!(e.to_string().contains("-60.0 LUFS floor"), "{e}");
        }
        other => panic!("{other:?}"),
    }

    // A sine driven to three times full scale: most samples sit at the rails.
    match ReferenceClip::from_bytes(&wav(&sine(rate, 300.0, 3.0, 3.0), rate), rate, &limits) {
        Err(
            e @ ReferenceError::Clipped {
                share, max_share, ..
            },
        ) => {
            assert!(share > 0.5, "{share}");
            assert_eq!(max_share, 0.01);
            assert!(e.to_string().contains("over the 1.00% limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }

    let mut poisoned = sine(rate, 300.0, 0.5, 3.0);
    poisoned[1000] = f32::NAN;
    match ReferenceClip::from_bytes(&float_wav(&poisoned, rate), rate, &limits) {
        Err(e @ ReferenceError::Malformed { .. }) => {
            assert!(e.to_string().contains("NaN or infinite"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The float path itself is sound: the same clip without the NaN passes.
    poisoned[1000] = 0.0;
    assert!(ReferenceClip::from_bytes(&float_wav(&poisoned, rate), rate, &limits).is_ok());

    let garbage = b"this is certainly not audio data; ".repeat(100);
    match ReferenceClip::from_bytes(&garbage, rate, &limits) {
        Err(e @ ReferenceError::Unrecognized { .. }) => {
            assert!(e.to_string().contains("not in a recognised format"), "{e}");
        }
        other => panic!("{other:?}"),
    }

    match ReferenceClip::from_bytes(&[], rate, &limits) {
        Err(e @ ReferenceError::Empty) => assert!(e.to_string().contains("empty"), "{e}"),
        other => panic!("{other:?}"),
    }
    match ReferenceClip::from_bytes(&wav(&[], rate), rate, &limits) {
        Err(ReferenceError::NoAudio { container }) => assert_eq!(container, "wave"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_bytes_are_refused() {
    // A fixed LCG: the bytes hold MPEG sync patterns now and then, which a prober may chase.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..20000)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let err = ReferenceClip::from_bytes(&noise, 16000, &ReferenceLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ReferenceError::Unrecognized { .. }
                | ReferenceError::Malformed { .. }
                | ReferenceError::NoAudio { .. }
                | ReferenceError::NoAudioTrack { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn size_and_length_caps() {
    let bytes = read("tone440_s16.wav");
    let tiny = ReferenceLimits {
        max_bytes: 100,
        ..short_ok()
    };
    match ReferenceClip::from_bytes(&bytes, PCM_RATE, &tiny) {
        Err(ReferenceError::TooLarge { bytes, max_bytes }) => {
            assert_eq!((bytes, max_bytes), (8044, 100));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ReferenceClip::from_path(fixture("tone440_s16.wav"), PCM_RATE, &tiny),
        Err(ReferenceError::TooLarge { bytes: 8044, .. })
    ));

    // A source past max_s is read up to it and used, not refused.
    let long = wav(&sine(16000, 300.0, 0.5, 3.0), 16000);
    let capped = ReferenceLimits {
        min_s: 1.0,
        max_s: 2.5,
        ..ReferenceLimits::default()
    };
    let clip = ReferenceClip::from_bytes(&long, 16000, &capped).unwrap();
    assert!(clip.used.truncated);
    assert_eq!(clip.used.read_s, 2.5);
    assert_eq!(clip.used.declared_s, Some(3.0));
    assert_eq!(clip.samples.len(), 40000);
    assert_eq!(
        clip.used.to_string(),
        "0.00–2.50 s of 3.00 s (the rest is not used)"
    );
    let whole = ReferenceClip::from_bytes(&long, 16000, &ReferenceLimits::default()).unwrap();
    assert!(!whole.used.truncated);
    assert_eq!(whole.samples.len(), 48000);
}

#[test]
fn bad_requests_and_unreadable_paths() {
    let bytes = read("tone440_s16.wav");
    assert!(matches!(
        ReferenceClip::from_bytes(&bytes, 0, &short_ok()),
        Err(ReferenceError::InvalidRequest { .. })
    ));
    let backwards = ReferenceLimits {
        min_s: 5.0,
        max_s: 1.0,
        ..ReferenceLimits::default()
    };
    match ReferenceClip::from_bytes(&bytes, 16000, &backwards) {
        Err(e @ ReferenceError::InvalidRequest { .. }) => {
            assert!(
                e.to_string().contains("min_s (5 s) is over max_s (1 s)"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    match ReferenceClip::from_path(fixture("no_such_clip.wav"), 16000, &short_ok()) {
        Err(e @ ReferenceError::Read { .. }) => {
            assert!(e.to_string().contains("no_such_clip.wav"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_hash_follows_the_samples() {
    let a = ReferenceClip::from_bytes(&read("tone440_s16.wav"), PCM_RATE, &short_ok()).unwrap();
    let again = ReferenceClip::from_bytes(&read("tone440_s16.wav"), 16000, &short_ok()).unwrap();
    assert_eq!(a.hash, again.hash);
    assert_eq!(a.hash.to_hex().len(), 64);
    assert_eq!(a.hash.to_string(), a.hash.to_hex());

    // The same 16-bit samples in other lossless containers: same audio, same key.
    for same in ["tone440_s16.flac", "tone440_s16.aiff", "tone440_alac.m4a"] {
        let b = ReferenceClip::from_bytes(&read(same), PCM_RATE, &short_ok()).unwrap();
        assert_eq!(a.hash, b.hash, "{same}");
    }

    for other in ["tone440_s24.wav", "stereo_440_660_s16.wav", "tone440.mp3"] {
        let b = ReferenceClip::from_bytes(&read(other), 16000, &short_ok()).unwrap();
        assert_ne!(a.hash, b.hash, "{other}");
    }
}

#[test]
fn head_takes_the_prefix_an_encoder_conditions_on() {
    let clip = ReferenceClip::from_bytes(
        &wav(&sine(16000, 300.0, 0.5, 3.0), 16000),
        24000,
        &ReferenceLimits::chatterbox(),
    )
    .unwrap();
    assert_eq!(clip.samples.len(), 72000);
    assert_eq!(clip.head(1.0).len(), 24000);
    assert_eq!(clip.head(1.0), &clip.samples[..24000]);
    assert_eq!(clip.head(10.0).len(), 72000);
    assert!(clip.head(-1.0).is_empty());
}
