//! The engine with the real joe voice: streaming equals whole synthesis, and batched units
//! equal units synthesized alone (noise off, so both are deterministic).

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use ferrovox_engine::{open_voice, Batcher, BatcherConfig, SynthesisOptions, VitsOptions, Voice};

fn joe() -> Option<Voice> {
    match open_voice("en_US-joe-medium", &Device::Cpu) {
        Ok(v) => Some(Voice::new(v, None)),
        Err(e) if std::env::var("FERROVOX_REQUIRE_VOICES").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: joe voice unavailable: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn quiet() -> SynthesisOptions {
    SynthesisOptions {
        vits: VitsOptions {
            noise_scale: Some(0.0),
            noise_w: Some(0.0),
            ..Default::default()
        },
        unit_silence: 0.1,
        ..Default::default()
    }
}

/// Largest absolute difference of two signals of one length.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The chunks a stream hands to its sink, in order.
fn stream_chunks(voice: &Voice, text: &str) -> Vec<Vec<f32>> {
    let mut chunks = Vec::new();
    voice
        .stream(text, &quiet(), &mut |c| {
            chunks.push(c.to_vec());
            Ok(())
        })
        .unwrap();
    chunks
}

#[test]
fn normalization_is_applied_when_asked() {
    let Some(voice) = joe() else { return };
    let raw = voice.synthesize("It costs $12.50.", &quiet()).unwrap();
    let spelled = voice
        .synthesize("It costs twelve dollars and fifty cents.", &quiet())
        .unwrap();
    let normalized = voice
        .synthesize(
            "It costs $12.50.",
            &SynthesisOptions {
                normalize: true,
                ..quiet()
            },
        )
        .unwrap();
    assert_eq!(normalized.samples, spelled.samples);
    assert_ne!(raw.samples.len(), spelled.samples.len());
}

#[test]
fn streamed_chunks_join_to_the_whole() {
    let Some(voice) = joe() else { return };
    let text = "First sentence here. And a second one!";
    let whole = voice.synthesize(text, &quiet()).unwrap();
    let chunks = stream_chunks(&voice, text);
    // Two sentences; the first, long enough, arrives in pieces (see below).
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    // Each piece's convolutions tile its own window (Winograd tiles start at a window's first
    // sample), so the pieces match the whole to f32 rounding rather than bit for bit.
    let err = max_diff(&chunks.concat(), &whole.samples);
    assert!(err <= 1e-5, "stream vs whole: {err}");
    assert!(whole.seconds() > 1.0);
}

#[test]
fn batched_units_match_units_alone() {
    let Some(voice) = joe() else { return };
    let units = voice
        .prepare(
            "The cat sat on the mat. A much longer sentence follows the first one, with a comma.",
            &quiet(),
        )
        .unwrap();
    let alone: Vec<Vec<f32>> = units
        .iter()
        .map(|u| {
            voice
                .synthesize_units(vec![u.clone()], &quiet())
                .unwrap()
                .remove(0)
        })
        .collect();
    let config = BatcherConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(50),
        queue_capacity: 8,
    };
    let batcher = Arc::new(Batcher::new(voice.model().clone(), config));
    let handles: Vec<_> = units
        .iter()
        .cloned()
        .map(|u| {
            let b = batcher.clone();
            std::thread::spawn(move || b.synthesize_units(vec![u], quiet()).unwrap().remove(0))
        })
        .collect();
    let batched: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(batcher.stats().largest_batch > 1, "{:?}", batcher.stats());
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(a.len(), b.len(), "unit {i} length");
        // As upstream, the decoder runs over the padded batch, so the shorter unit's last
        // frames may see the padding; everything before matches to f32 rounding.
        let reach = 8 * 256;
        let head = a.len().saturating_sub(reach);
        let err = a[..head]
            .iter()
            .zip(&b[..head])
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("unit {i}: batched vs alone max abs error {err:.2e} over {head} samples");
        // The padded batch also masks the text encoder (alone, an unpadded unit skips those
        // passes), and the flow and decoder amplify that rounding: 4.2e-5 with the direct
        // convolutions, 1.2e-4 with Winograd's, on audio peaking near 0.5.
        assert!(err < 3e-4, "unit {i}: {err}");
    }
}

/// The first unit of a stream comes in pieces (its first 16 frames, then up to frame 64,
/// then the rest), and the pieces are the whole-unit audio: each decode sees the flow's and
/// the decoder's receptive fields.
#[test]
fn the_early_first_piece_and_the_rest_are_the_whole_unit() {
    let Some(voice) = joe() else { return };
    let text =
        "This sentence is long enough that its first frames are decoded before the rest of it.";
    let units = voice.prepare(text, &quiet()).unwrap();
    assert_eq!(units.len(), 1);
    let whole = voice
        .synthesize_units(units.clone(), &quiet())
        .unwrap()
        .remove(0);
    let mut pieces = Vec::new();
    voice
        .model()
        .stream_unit(&units[0], &quiet(), &mut |p| {
            pieces.push(p);
            Ok(())
        })
        .unwrap();
    assert_eq!(pieces.len(), 3, "a long unit is split twice");
    assert_eq!(pieces[0].len(), 16 * 256, "16 frames of 256 samples first");
    assert_eq!(pieces[1].len(), 48 * 256, "then up to frame 64");
    let err = max_diff(&pieces.concat(), &whole);
    eprintln!("early pieces vs whole unit: max abs diff {err:.2e} (bound 1e-5)");
    assert!(err <= 1e-5, "max abs diff {err}");

    // Streamed, the first piece goes out before the rest of the unit is decoded, and the
    // stream joins to the whole synthesis.
    let whole = voice.synthesize(text, &quiet()).unwrap();
    let chunks = stream_chunks(&voice, text);
    // The two early pieces, the rest, and the last 40 ms held for the unit's closing fade.
    assert_eq!(chunks.len(), 4);
    assert!(
        chunks[0].len() < 16 * 256,
        "the first chunk is the early piece"
    );
    let err = max_diff(&chunks.concat(), &whole.samples);
    assert!(err <= 1e-5, "stream vs whole: {err}");

    // A short unit stays whole.
    let short = voice.prepare("Hi.", &quiet()).unwrap();
    let mut count = 0;
    voice
        .model()
        .stream_unit(&short[0], &quiet(), &mut |_| {
            count += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 1);
}
