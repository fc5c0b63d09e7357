//! The voice catalog: resolves a voice id to files on disk. An id is a local directory, a
//! catalog voice (`en_US-joe-medium`: the cache, then its published package, downloaded, its
//! hash verified and unpacked into the cache), or a Hugging Face Hub repository
//! (`facebook/mms-tts-eng`: the hub cache, then `hf-hub`). `FERROVOX_OFFLINE=1` (or
//! `HF_HUB_OFFLINE=1`) stops at the caches.

mod cache;
mod catalog;
mod download;
mod hub;

use std::path::{Path, PathBuf};

pub use cache::cache_dir;
pub use catalog::{VoiceEntry, VoiceFamily, CATALOG, DEFAULT_VOICE};
pub use hub::is_repo_id;

/// Errors of voice resolution.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// An id that is neither in the catalog nor a directory.
    #[error("unknown voice `{id}`: not a directory, not a hub repository (owner/name) and not in the catalog (known: {known})")]
    Unknown { id: String, known: String },
    /// A directory that holds no recognisable voice files.
    #[error("{path} holds no voice: expected <name>.onnx with <name>.onnx.json, or config.json with model.safetensors")]
    NotAVoice { path: String },
    /// Offline mode with a voice that is not cached.
    #[error("voice `{id}` is not in the cache ({cache}) and offline mode is on (FERROVOX_OFFLINE / HF_HUB_OFFLINE)")]
    Offline { id: String, cache: String },
    /// A download failed.
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    /// The downloaded file's hash differs from the catalog's.
    #[error("{url}: sha256 {actual} does not match the published {expected}")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// A package that lacks a file the catalog names.
    #[error("package {package} lacks {member}")]
    MissingMember { package: String, member: String },
    /// A file system error.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VoiceError + '_ {
    move |source| VoiceError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The files of a resolved voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceFiles {
    /// A Piper voice.
    Piper { onnx: PathBuf, config: PathBuf },
    /// A transformers `VitsModel` checkpoint (MMS-TTS).
    Transformers {
        weights: PathBuf,
        config: PathBuf,
        vocab: Option<PathBuf>,
    },
}

/// Whether downloads are disabled.
pub fn offline() -> bool {
    let on = |k: &str| {
        std::env::var(k)
            .map(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false)
    };
    on("FERROVOX_OFFLINE") || on("HF_HUB_OFFLINE")
}

/// Finds voice files in `dir`.
pub fn voice_in_dir(dir: &Path) -> Result<VoiceFiles, VoiceError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut onnx = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "onnx") {
            onnx.push(path);
        }
    }
    onnx.sort();
    for model in onnx {
        let config = PathBuf::from(format!("{}.json", model.display()));
        if config.is_file() {
            return Ok(VoiceFiles::Piper {
                onnx: model,
                config,
            });
        }
    }
    let (weights, config) = (dir.join("model.safetensors"), dir.join("config.json"));
    if weights.is_file() && config.is_file() {
        let vocab = dir.join("vocab.json");
        return Ok(VoiceFiles::Transformers {
            weights,
            config,
            vocab: vocab.is_file().then_some(vocab),
        });
    }
    Err(VoiceError::NotAVoice {
        path: dir.display().to_string(),
    })
}

/// Resolves `id`: a local directory, a catalog voice (cache, then its package), or a hub
/// repository (hub cache, then `hf-hub`).
pub fn resolve(id: &str) -> Result<VoiceFiles, VoiceError> {
    let as_path = Path::new(id);
    if as_path.is_dir() {
        return voice_in_dir(as_path);
    }
    if catalog::find(id).is_none() && hub::is_repo_id(id) {
        return hub::resolve_repo(id, &hf_hub::Cache::from_env());
    }
    let entry = catalog::find(id).ok_or_else(|| VoiceError::Unknown {
        id: id.to_string(),
        known: CATALOG.iter().map(|e| e.id).collect::<Vec<_>>().join(", "),
    })?;
    let dir = cache_dir().join("voices").join(entry.id);
    if cache::is_complete(&dir) {
        return voice_in_dir(&dir);
    }
    if offline() {
        return Err(VoiceError::Offline {
            id: id.to_string(),
            cache: dir.display().to_string(),
        });
    }
    download::fetch_into(entry, &dir)?;
    voice_in_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_voice_names_the_id_and_the_known_ones() {
        let err = resolve("xx_XX-nobody-low").unwrap_err().to_string();
        assert!(
            err.contains("xx_XX-nobody-low") && err.contains(DEFAULT_VOICE),
            "{err}"
        );
    }

    #[test]
    fn a_directory_without_voice_files_is_rejected() {
        let dir = std::env::temp_dir().join(format!("ferrovox-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = resolve(dir.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, VoiceError::NotAVoice { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_with_piper_files_resolves() {
        let dir = std::env::temp_dir().join(format!("ferrovox-piper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("v.onnx"), b"x").unwrap();
        std::fs::write(dir.join("v.onnx.json"), b"{}").unwrap();
        let files = resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!(
            files,
            VoiceFiles::Piper {
                onnx: dir.join("v.onnx"),
                config: dir.join("v.onnx.json")
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
