//! Files: voices, checkpoints, configs, reference audio.

use std::path::PathBuf;

use candle_core::Device;
use ferrovox_audio::{ReferenceClip, ReferenceLimits};
use ferrovox_chatterbox::Conditionals;

use super::CaseFile;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

pub(super) fn piper_onnx(bytes: &[u8]) -> Result<(), String> {
    let file = CaseFile::new("onnx", bytes)?;
    match ferrovox_vits::piper::load_voice(&file.path, &data("piper.onnx.json"), &Device::Cpu) {
        Ok(_) => Ok(()),
        Err(e) => file.named_in(&e),
    }
}

pub(super) fn vits_configs(bytes: &[u8]) -> Result<(), String> {
    if let Ok(config) = serde_json::from_slice::<ferrovox_vits::Config>(bytes) {
        let _ = config.validate();
    }
    let file = CaseFile::new("onnx.json", bytes)?;
    match ferrovox_vits::piper::PiperVoiceConfig::from_file(&file.path) {
        Ok(_) => Ok(()),
        Err(e) => file.named_in(&e),
    }
}

pub(super) fn voice_safetensors(bytes: &[u8]) -> Result<(), String> {
    let _ = Conditionals::from_safetensors(bytes, &Device::Cpu);
    Ok(())
}

pub(super) fn conds_pt(bytes: &[u8]) -> Result<(), String> {
    let file = CaseFile::new("pt", bytes)?;
    match Conditionals::load_pt(&file.path, &Device::Cpu) {
        Ok(_) => Ok(()),
        Err(e) => file.named_in(&e),
    }
}

pub(super) fn reference_audio(bytes: &[u8]) -> Result<(), String> {
    let limits = ReferenceLimits::default();
    if let Ok(clip) = ReferenceClip::from_bytes(bytes, 16_000, &limits) {
        let _ = clip.at_rates(&[16_000, 24_000]);
    }
    Ok(())
}
