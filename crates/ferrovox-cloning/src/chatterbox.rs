//! Chatterbox's part of the service: its encoders make `Conditionals`, stored as
//! `Conditionals::to_safetensors` bytes.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use ferrovox_audio::ReferenceClip;
use ferrovox_chatterbox::{Conditionals, VoiceCloner};
use sha2::{Digest, Sha256};

use crate::CloneError;

/// The rate Chatterbox's cloning reads a clip at (S3Gen's; the 16 kHz copies the voice encoder
/// and the S3 tokenizer read are made from the source).
pub(crate) const CLONE_RATE: u32 = 24_000;

/// Exaggeration stored with a cloned voice (upstream's default); a request may override it.
const STORED_EXAGGERATION: f32 = 0.5;

/// Identifies the encoders' weights: the voice encoder's bytes and the tensor index of
/// `s3gen.safetensors` (the tokenizer's and CAMPPlus's names, shapes and offsets), without
/// reading its gigabyte.
pub(crate) fn encoders_version(model: &str, dir: &Path) -> Result<String, CloneError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| CloneError::Io {
            model: model.to_string(),
            what,
            source,
        }
    };
    let mut h = Sha256::new();
    let ve = dir.join("ve.safetensors");
    h.update(std::fs::read(&ve).map_err(io(&ve))?);
    let s3gen = dir.join("s3gen.safetensors");
    let mut file = std::fs::File::open(&s3gen).map_err(io(&s3gen))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).map_err(io(&s3gen))?;
    let n = u64::from_le_bytes(len).min(64 << 20) as usize;
    let mut header = vec![0u8; n];
    std::io::Read::read_exact(&mut file, &mut header).map_err(io(&s3gen))?;
    h.update(&header);
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

/// `clip`'s conditionals.
pub(crate) fn conditionals(
    cloner: &VoiceCloner,
    clip: &ReferenceClip,
) -> Result<Conditionals, CloneError> {
    Ok(cloner.from_clip(clip, STORED_EXAGGERATION)?)
}

/// `clip`'s conditionals as the store keeps them, and the encoder parameters that are part of
/// the voice's key.
pub(crate) fn encode(
    cloner: &VoiceCloner,
    clip: &ReferenceClip,
) -> Result<(Vec<u8>, serde_json::Value), CloneError> {
    let conditionals = conditionals(cloner, clip)?;
    let params = serde_json::json!({
        "rate": CLONE_RATE,
        "exaggeration": STORED_EXAGGERATION,
        "t3_prompt_s": 6,
        "s3gen_prompt_s": 10,
    });
    Ok((conditionals.to_safetensors()?, params))
}

/// Stored conditionals as the engine's prompt.
pub(crate) fn prompt(
    payload: &[u8],
    device: &Device,
) -> Result<Arc<dyn Any + Send + Sync>, CloneError> {
    Ok(Arc::new(Conditionals::from_safetensors(payload, device)?))
}
