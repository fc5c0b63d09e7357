//! The released-size `s3gen.safetensors` and `ve.safetensors` key sets, as upstream's own
//! `S3Gen()` and `VoiceEncoder()` write them (`xtask/fixtures/chatterbox/gen_full_keys.py`):
//! every tensor synthesis or cloning needs is read at its released shape, and the few nothing
//! reads are named. (`t3_parity.rs` checks `t3_cfg.safetensors` the same way.)

mod common;

use std::collections::{BTreeMap, HashSet};

use ferrovox_chatterbox::campplus::{CampPlus, CampPlusConfig};
use ferrovox_chatterbox::s3tokenizer::{
    S3Tokenizer, S3TokenizerConfig, BUFFER_KEYS, CHECKPOINT_PREFIX,
};
use ferrovox_chatterbox::voice_encoder::{VoiceEncConfig, VoiceEncoder};
use ferrovox_chatterbox::{S3Gen, S3GenConfig};

/// Per top-level prefix, how many tensors were read.
fn by_prefix(keys: &HashSet<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts
            .entry(k.split('.').next().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// S3Gen (`flow.*`, `mel2wav.*`) for synthesis, the S3 tokenizer (`tokenizer.*`) and CAMPPlus
/// (`speaker_encoder.*`) for cloning, all at their default (released) configs, read every
/// tensor but the tokenizer's two recomputed buffers and CAMPPlus's BatchNorm step counters.
#[test]
fn every_s3gen_tensor_is_read_by_synthesis_or_cloning() {
    let shapes = common::full_size_shapes("s3gen_full_keys.json");
    assert_eq!(shapes.len(), 2490);
    let (vb, read) = common::manifest_vb(&shapes, &candle_core::Device::Cpu);
    S3Gen::new(&S3GenConfig::default(), vb.clone()).expect("synthesis reads released shapes");
    S3Tokenizer::new(&S3TokenizerConfig::default(), vb.pp(CHECKPOINT_PREFIX))
        .expect("the tokenizer reads released shapes");
    CampPlus::new(&CampPlusConfig::default(), vb.pp("speaker_encoder"))
        .expect("CAMPPlus reads released shapes");
    let read: HashSet<String> = read.lock().unwrap().iter().cloned().collect();
    let mut unread: Vec<&String> = shapes.keys().filter(|k| !read.contains(*k)).collect();
    unread.sort();
    eprintln!(
        "s3gen.safetensors: {} tensors, read {:?}; {} not read",
        shapes.len(),
        by_prefix(&read),
        unread.len()
    );
    let (counters, other): (Vec<&String>, Vec<&String>) = unread
        .into_iter()
        .partition(|k| k.starts_with("speaker_encoder.") && k.ends_with(".num_batches_tracked"));
    assert_eq!(counters.len(), 122, "CAMPPlus's BatchNorm step counters");
    assert_eq!(
        other, BUFFER_KEYS,
        "only the tokenizer's mel filters and window"
    );
}

/// The voice encoder reads every tensor of `ve.safetensors` but the similarity scale and
/// bias, which only its training loss uses.
#[test]
fn every_voice_encoder_tensor_is_read_but_the_training_only_ones() {
    let shapes = common::full_size_shapes("ve_full_keys.json");
    let (vb, read) = common::manifest_vb(&shapes, &candle_core::Device::Cpu);
    VoiceEncoder::new(&VoiceEncConfig::default(), vb).expect("released shapes");
    let read: HashSet<String> = read.lock().unwrap().iter().cloned().collect();
    let mut unread: Vec<&String> = shapes.keys().filter(|k| !read.contains(*k)).collect();
    unread.sort();
    eprintln!(
        "ve.safetensors: {} tensors, {} read, not read {unread:?}",
        shapes.len(),
        read.len()
    );
    assert_eq!(unread, ["similarity_bias", "similarity_weight"]);
}

/// A file of another model given as `s3gen.safetensors` is refused naming its foreign tensors.
#[test]
fn another_models_file_is_named_not_loaded_as_s3gen() {
    let t3 = common::fixtures().join("t3.safetensors");
    let err = S3Gen::load(&t3, &S3GenConfig::default(), &candle_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("outside an S3Gen checkpoint") && err.contains("t3.safetensors"),
        "{err}"
    );
}

/// Turbo's `s3gen_meanflow.safetensors` at the released size (`S3Gen(meanflow=True)`, recorded
/// as what it adds to `S3Gen()`'s key set): `S3GenConfig::turbo()` reads every synthesis
/// tensor of it, the time mixer at its shape; the English config is refused it.
#[test]
fn the_meanflow_s3gen_key_set_loads_unchanged() {
    let mut shapes = common::full_size_shapes("s3gen_full_keys.json");
    let diff: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("s3gen_meanflow_full_keys.json")).unwrap(),
    )
    .unwrap();
    assert!(diff["removed"].as_array().unwrap().is_empty());
    assert!(diff["changed"].as_object().unwrap().is_empty());
    for (k, v) in diff["added"].as_object().unwrap() {
        shapes.insert(
            k.clone(),
            serde_json::from_value(v["shape"].clone()).unwrap(),
        );
    }
    let mixer = "flow.decoder.estimator.time_embed_mixer.weight";
    assert_eq!(shapes[mixer], [1024, 2048]);
    let (vb, read) = common::manifest_vb(&shapes, &candle_core::Device::Cpu);
    S3Gen::new(&S3GenConfig::turbo(), vb).expect("Turbo's S3Gen reads the released shapes");
    let read: HashSet<String> = read.lock().unwrap().iter().cloned().collect();
    assert!(read.contains(mixer));
    let synthesis = shapes
        .keys()
        .filter(|k| k.starts_with("flow.") || k.starts_with("mel2wav."))
        .count();
    assert_eq!(
        read.len(),
        synthesis,
        "every flow and vocoder tensor is read"
    );
    let english = common::full_size_shapes("s3gen_full_keys.json");
    let (vb, _) = common::manifest_vb(&english, &candle_core::Device::Cpu);
    let err = S3Gen::new(&S3GenConfig::turbo(), vb)
        .unwrap_err()
        .to_string();
    assert!(err.contains("time_embed_mixer"), "{err}");
}
