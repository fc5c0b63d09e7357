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

/// Identifies the encoders' weights: the voice encoder's bytes, and S3Gen's tensor index (for
/// `s3gen.safetensors` its header: the tokenizer's and CAMPPlus's names, shapes and offsets;
/// for `s3gen.pt` its archive's entries with their sizes and CRC-32s), without reading its
/// gigabyte.
pub(crate) fn encoders_version(model: &str, dir: &Path) -> Result<String, CloneError> {
    let (ve, s3gen) = VoiceCloner::encoder_files(dir)?;
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| CloneError::Io {
            model: model.to_string(),
            what,
            source,
        }
    };
    let mut h = Sha256::new();
    h.update(std::fs::read(&ve).map_err(io(&ve))?);
    let index = if s3gen.extension().is_some_and(|e| e == "pt") {
        archive_index(&s3gen)
    } else {
        safetensors_header(&s3gen)
    };
    h.update(index.map_err(io(&s3gen))?);
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

fn safetensors_header(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len)?;
    let n = u64::from_le_bytes(len).min(64 << 20) as usize;
    let mut header = vec![0u8; n];
    std::io::Read::read_exact(&mut file, &mut header)?;
    Ok(header)
}

fn archive_index(path: &Path) -> std::io::Result<Vec<u8>> {
    let invalid =
        |e: zip::result::ZipError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path)?).map_err(invalid)?;
    let mut index = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(invalid)?;
        index.extend_from_slice(entry.name().map_err(invalid)?.as_bytes());
        index.extend_from_slice(&entry.size().to_le_bytes());
        index.extend_from_slice(&entry.crc32().to_le_bytes());
    }
    Ok(index)
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
    let rule = cloner.rule();
    let mut params = serde_json::json!({
        "rate": CLONE_RATE,
        "exaggeration": STORED_EXAGGERATION,
        "t3_prompt_s": rule.t3_prompt_s,
        "s3gen_prompt_s": 10,
    });
    if let Some(lufs) = rule.target_lufs {
        params["loudness_lufs"] = lufs.into();
    }
    Ok((conditionals.to_safetensors()?, params))
}

/// Stored conditionals as the engine's prompt.
pub(crate) fn prompt(
    payload: &[u8],
    device: &Device,
) -> Result<Arc<dyn Any + Send + Sync>, CloneError> {
    Ok(Arc::new(Conditionals::from_safetensors(payload, device)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A directory with a voice encoder file and an `s3gen.pt` archive of one storage.
    fn model_dir(tag: &str, storage: &[u8]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferrovox-version-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ve.pt"), b"voice encoder").unwrap();
        let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join("s3gen.pt")).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data/0", stored).unwrap();
        zip.write_all(storage).unwrap();
        zip.finish().unwrap();
        dir
    }

    /// The version of PyTorch encoder files follows their weights: another storage with the
    /// same length is another version, the same bytes the same one.
    #[test]
    fn the_version_of_pytorch_encoders_follows_their_weights() {
        let a = model_dir("a", &[1, 2, 3, 4]);
        let b = model_dir("b", &[1, 2, 3, 5]);
        let c = model_dir("c", &[1, 2, 3, 4]);
        let version = |dir: &Path| encoders_version("m", dir).unwrap();
        assert_ne!(version(&a), version(&b));
        assert_eq!(version(&a), version(&c));
        std::fs::write(c.join("s3gen.pt"), b"not an archive").unwrap();
        let err = encoders_version("m", &c).unwrap_err().to_string();
        assert!(err.contains("s3gen.pt"), "{err}");
        for d in [a, b, c] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
