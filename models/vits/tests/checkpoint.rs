//! Loading checkpoints from disk, and the errors bad ones give.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ferrovox_vits::{SeededNoise, SynthesisParams, TokenBatch, VitsModel};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovox-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_checkpoint(dir: &std::path::Path, tensors: &HashMap<String, Tensor>) {
    let fixtures = common::fixtures();
    std::fs::copy(
        fixtures.join("tiny_sdp.config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::copy(fixtures.join("vocab.json"), dir.join("vocab.json")).unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
}

fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixtures().join("tiny_sdp.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .into_iter()
    .filter(|(k, _)| !k.starts_with("io."))
    .collect()
}

#[test]
fn a_transformers_directory_loads_and_speaks() {
    let dir = temp_dir("ok");
    write_checkpoint(&dir, &weights());
    let ckpt = VitsModel::from_transformers_dir(&dir, &Device::Cpu).unwrap();
    let tokenizer = ckpt.tokenizer.expect("vocab.json is present");
    let ids = tokenizer.encode_checked("hello there").unwrap();
    let batch = TokenBatch::new(&[ids], 0, &Device::Cpu).unwrap();
    let params = SynthesisParams::from_config(ckpt.model.config());
    let out = ckpt
        .model
        .forward(&batch, None, &params, &mut SeededNoise::new(1))
        .unwrap();
    let audio = out.audio(0).unwrap();
    assert!(!audio.is_empty() && audio.iter().all(|v| v.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = temp_dir("missing");
    let mut w = weights();
    w.remove("flow.flows.2.conv_post.weight").unwrap();
    write_checkpoint(&dir, &w);
    let err = VitsModel::from_transformers_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("flow.flows.2.conv_post.weight"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named() {
    let dir = temp_dir("shape");
    let mut w = weights();
    w.insert(
        "decoder.conv_pre.weight".into(),
        Tensor::zeros((3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_checkpoint(&dir, &w);
    let err = VitsModel::from_transformers_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder.conv_pre.weight") && err.contains("shape"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_or_absent_checkpoint_is_an_error() {
    let dir = temp_dir("corrupt");
    std::fs::copy(
        common::fixtures().join("tiny_sdp.config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let err = VitsModel::from_transformers_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("not found"),
        "{err}"
    );
    std::fs::write(
        dir.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!",
    )
    .unwrap();
    let err = VitsModel::from_transformers_dir(&dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let err = VitsModel::from_transformers_dir(&dir.join("nope"), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_of_vocabulary_ids_and_bad_speakers_are_refused_before_compute() {
    let case = common::Case::load("tiny_dp_spk");
    let model = VitsModel::new(&case.cfg, case.vb()).unwrap();
    let params = SynthesisParams::from_config(&case.cfg);
    let dev = common::device();
    let batch = TokenBatch::new(&[vec![1, 2, 999]], 0, &dev).unwrap();
    let err = model
        .forward(&batch, Some(&[0]), &params, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(err.to_string().contains("token id 999"), "{err}");
    let batch = TokenBatch::new(&[vec![1, 2, 3]], 0, &dev).unwrap();
    let err = model
        .forward(&batch, Some(&[7]), &params, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(err.to_string().contains("speaker id 7"), "{err}");
    assert!(TokenBatch::new(&[vec![]], 0, &dev).is_err());
    assert!(TokenBatch::new(&[], 0, &dev).is_err());
}
