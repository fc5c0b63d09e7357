//! Hugging Face Hub repositories (MMS-TTS checkpoints such as `facebook/mms-tts-eng`):
//! the hub cache first (`HF_HOME`), then a download through `hf-hub` unless offline.

use std::path::PathBuf;

use hf_hub::{Cache, Repo};

use crate::{offline, voice_in_dir, VoiceError, VoiceFiles};

/// Files a transformers `VitsModel` repository needs; `vocab.json` feeds the tokenizer and
/// `tokenizer_config.json` its options.
const REQUIRED: &[&str] = &["config.json", "model.safetensors", "vocab.json"];
const OPTIONAL: &[&str] = &["tokenizer_config.json"];

/// Whether `id` looks like a hub repository (`owner/name`).
pub fn is_repo_id(id: &str) -> bool {
    let mut parts = id.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Resolves a hub repository from `cache`, downloading what is missing unless offline.
pub fn resolve_repo(id: &str, cache: &Cache) -> Result<VoiceFiles, VoiceError> {
    let repo = cache.repo(Repo::model(id.to_string()));
    if let Some(dir) = cached_snapshot(&repo) {
        return voice_in_dir(&dir);
    }
    if offline() {
        return Err(VoiceError::Offline {
            id: id.to_string(),
            cache: cache.path().display().to_string(),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| download_error(id, e))?
        .model(id.to_string());
    let mut dir = None;
    for name in REQUIRED {
        let path = api.get(name).map_err(|e| download_error(id, e))?;
        dir = path.parent().map(PathBuf::from);
    }
    for name in OPTIONAL {
        // Absent on many MMS repositories; the tokenizer then uses its defaults.
        let _ = api.get(name);
    }
    voice_in_dir(&dir.expect("REQUIRED is not empty"))
}

fn cached_snapshot(repo: &hf_hub::CacheRepo) -> Option<PathBuf> {
    let paths: Vec<PathBuf> = REQUIRED
        .iter()
        .map(|f| repo.get(f))
        .collect::<Option<_>>()?;
    paths[0].parent().map(PathBuf::from)
}

fn download_error(id: &str, e: hf_hub::api::sync::ApiError) -> VoiceError {
    VoiceError::Download {
        url: format!("https://huggingface.co/{id}"),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("facebook/mms-tts-eng"));
        assert!(!is_repo_id("en_US-joe-medium"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("/abs"));
        assert!(!is_repo_id("bad name/x"));
    }

    fn fake_cache(tag: &str, files: &[&str]) -> (PathBuf, Cache) {
        let root = std::env::temp_dir().join(format!("ferrovox-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let repo = root.join("models--facebook--mms-tts-tiny");
        let snapshot = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in files {
            std::fs::write(snapshot.join(f), b"x").unwrap();
        }
        (root.clone(), Cache::new(root))
    }

    #[test]
    fn a_cached_snapshot_resolves_without_network() {
        let (root, cache) = fake_cache("full", REQUIRED);
        let files = resolve_repo("facebook/mms-tts-tiny", &cache).unwrap();
        let VoiceFiles::Transformers { weights, vocab, .. } = files else {
            panic!("{files:?}")
        };
        assert!(weights.ends_with("snapshots/0123abcd/model.safetensors"));
        assert!(vocab.is_some());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_partial_snapshot_is_not_taken_for_a_voice() {
        let (root, cache) = fake_cache("partial", &["config.json"]);
        assert!(
            cached_snapshot(&cache.repo(Repo::model("facebook/mms-tts-tiny".into()))).is_none()
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
