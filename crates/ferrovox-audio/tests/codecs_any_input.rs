//! Every encoder on whatever samples a model could hand it, in pieces of any size: NaN,
//! infinities, values far outside [-1, 1], empty chunks. Each returns bytes or a named error,
//! never panics, and a stream's total is a file its decoder reads.

use ferrovox_audio::{AudioFormat, Encoder};
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.0f32..1.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => -1e6f32..1e6,
    ]
}

proptest! {
    // No regression files: a failure is turned into a named test instead.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encoders_take_any_samples(
        chunks in proptest::collection::vec(proptest::collection::vec(sample(), 0..3000), 0..6),
        rate in prop_oneof![Just(16_000u32), Just(22_050), Just(24_000)],
    ) {
        for format in AudioFormat::ENCODED {
            let mut e = Encoder::new(format, rate, true).unwrap();
            let mut out = Vec::new();
            for c in &chunks {
                out.extend(e.chunk(c).unwrap());
            }
            out.extend(e.finish().unwrap());
            let n: usize = chunks.iter().map(Vec::len).sum();
            match format {
                AudioFormat::Mp3 if n > 0 => {
                    let (_, r) = ferrovox_audio::decode_audio(&out).unwrap();
                    prop_assert_eq!(r, rate);
                }
                AudioFormat::Opus => prop_assert_eq!(&out[..4], b"OggS"),
                _ => {}
            }
        }
    }
}
