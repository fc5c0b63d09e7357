//! Voice and checkpoint readers on damaged files: upstream's `conds.pt` (a torch zip archive
//! read through Candle's pickle reader) and ferrovox's safetensors voice, truncated or with
//! bytes overwritten anywhere. Each read ends in a voice or a named error, never a panic, and
//! within a time bound.

mod common;

use std::time::{Duration, Instant};

use candle_core::Device;
use ferrovox_chatterbox::Conditionals;
use proptest::prelude::*;

/// A damaged copy of `bytes`: cut at `cut` (a fraction), then `edits` bytes overwritten.
fn damaged(bytes: &[u8], cut: f64, edits: &[(f64, u8)]) -> Vec<u8> {
    let mut out = bytes[..((bytes.len() as f64 * cut) as usize).max(1)].to_vec();
    let n = out.len();
    for &(at, value) in edits {
        out[((n as f64 * at) as usize).min(n - 1)] = value;
    }
    out
}

fn edits() -> impl Strategy<Value = (f64, Vec<(f64, u8)>)> {
    (
        prop_oneof![3 => Just(1.0), 1 => 0.0f64..1.0],
        prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_conds_pt_is_a_voice_or_a_named_error((cut, edits) in edits()) {
        let original = std::fs::read(common::fixtures().join("conds_small.pt")).unwrap();
        let dir = std::env::temp_dir().join(format!("ferrovox-conds-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("conds-{:x}.pt", rand_name(&edits, cut)));
        std::fs::write(&path, damaged(&original, cut, &edits)).unwrap();
        let start = Instant::now();
        let read = std::panic::catch_unwind(|| Conditionals::load_pt(&path, &Device::Cpu));
        std::fs::remove_file(&path).ok();
        prop_assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => prop_assert!(e.to_string().contains("conds-"), "unnamed: {e}"),
            Err(_) => prop_assert!(false, "panicked on a damaged conds.pt"),
        }
    }

    #[test]
    fn a_damaged_safetensors_voice_is_a_voice_or_an_error((cut, edits) in edits()) {
        let original = std::fs::read(common::fixtures().join("conds_small.safetensors")).unwrap();
        let bytes = damaged(&original, cut, &edits);
        let read = std::panic::catch_unwind(|| Conditionals::from_safetensors(&bytes, &Device::Cpu));
        prop_assert!(read.is_ok(), "panicked on a damaged voice file");
    }
}

/// Found by the property test above: a byte at 3.1 % of the small `conds.pt` set to 138 makes
/// Candle's pickle reader shift a `LONG1` integer past 64 bits (a panic in debug builds).
#[test]
fn a_pickle_integer_too_long_is_a_named_error() {
    let original = std::fs::read(common::fixtures().join("conds_small.pt")).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrovox-conds-long1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("conds.pt");
    std::fs::write(
        &path,
        damaged(&original, 1.0, &[(0.031413680816904266, 138)]),
    )
    .unwrap();
    let read = std::panic::catch_unwind(|| Conditionals::load_pt(&path, &Device::Cpu));
    std::fs::remove_dir_all(&dir).ok();
    let err = read.expect("a panic escaped").unwrap_err().to_string();
    assert!(
        err.contains("conds.pt") && err.contains("torch archive"),
        "{err}"
    );
}

/// A file name for one case (cases may run in parallel with other tests' files).
fn rand_name(edits: &[(f64, u8)], cut: f64) -> u64 {
    edits.iter().fold(cut.to_bits(), |h, (a, b)| {
        h.rotate_left(7) ^ a.to_bits() ^ u64::from(*b)
    })
}

/// A `conds.pt` whose pickle claims a 2³²-element `prompt_token` over the 48 bytes its archive
/// holds: Candle would allocate the claimed 32 GiB before reading, so the claim is checked
/// against the archive entry first and refused by name.
#[test]
fn a_pickle_claiming_a_huge_tensor_is_refused_before_reading() {
    let path = common::fixtures().join("conds_huge_shape.pt");
    let err = Conditionals::load_pt(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conds_huge_shape.pt")
            && err.contains("prompt_token")
            && err.contains("[65536, 65536]"),
        "{err}"
    );
}

/// Found by `cargo xtask fuzz conds-pt` (`crates/ferrovox-fuzz/regressions/conds-pt/
/// long_string.pt`): two bytes of the small `conds.pt`'s pickle set to `7f ff` make a string
/// claim 2 GB, which Candle's reader allocated before reading (the process aborted). Here the
/// same pickle in a well-formed archive (its checksum right, so only the walk of the pickle's
/// lengths can catch it).
#[test]
fn a_pickle_string_longer_than_its_archive_is_refused_before_reading() {
    let path = common::fixtures().join("conds_long_string.pt");
    let err = Conditionals::load_pt(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conds_long_string.pt") && err.contains("claims 2130706435 bytes"),
        "{err}"
    );
}
