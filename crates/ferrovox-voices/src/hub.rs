//! Hugging Face Hub repositories (MMS-TTS checkpoints such as `facebook/mms-tts-eng`, and the
//! known repositories of [`crate::KNOWN_REPOS`]): the hub cache first (`HF_HOME`), then a
//! download through `hf-hub` unless offline. A repository of no known family declares itself
//! through its `config.json` (`model_type`).

use std::path::PathBuf;

use hf_hub::{Cache, Repo};

use crate::{offline, voice_in_dir, ChatterboxModel, Family, KnownRepo, VoiceError, VoiceFiles};

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

/// Resolves a hub repository from `cache`, downloading what is missing unless offline. A
/// repository of unknown `family` is taken as a transformers checkpoint, whose `config.json`
/// must then declare a family ferrovox serves.
pub fn resolve_repo(
    id: &str,
    family: Option<Family>,
    cache: &Cache,
) -> Result<VoiceFiles, VoiceError> {
    let (required, optional) = family.unwrap_or(Family::MmsVits).hub_files();
    let groups: Vec<&[&str]> = required.iter().map(std::slice::from_ref).collect();
    voice_in_dir(&snapshot(id, id, &groups, optional, cache)?)
}

/// Resolves a known repository as its entry says: Chatterbox's multilingual model and Turbo by
/// their own files (a snapshot of `ResembleAI/chatterbox` may also hold the English model's,
/// which a directory loads by default).
pub fn resolve_known(known: &KnownRepo, cache: &Cache) -> Result<VoiceFiles, VoiceError> {
    if known.family != Family::Chatterbox || known.chatterbox == ChatterboxModel::English {
        return resolve_repo(known.repo, Some(known.family), cache).map(|files| match files {
            VoiceFiles::Chatterbox { dir, .. } => VoiceFiles::Chatterbox {
                dir,
                model: known.chatterbox,
            },
            other => other,
        });
    }
    let (groups, optional) = Family::chatterbox_hub_files(known.chatterbox);
    Ok(VoiceFiles::Chatterbox {
        dir: snapshot(known.short, known.repo, groups, optional, cache)?,
        model: known.chatterbox,
    })
}

/// The snapshot of `repo` holding one file of each of `groups` (the first the repository has,
/// in order) and whichever of `optional` exist: from the cache, else downloaded unless
/// offline. `voice` is what the caller asked for, for the errors.
fn snapshot(
    voice: &str,
    repo: &str,
    groups: &[&[&str]],
    optional: &[&str],
    cache: &Cache,
) -> Result<PathBuf, VoiceError> {
    if let Some(dir) = cached_snapshot(&cache.repo(Repo::model(repo.to_string())), groups) {
        return Ok(dir);
    }
    if offline() {
        return Err(VoiceError::Offline {
            id: voice.to_string(),
            cache: cache.path().display().to_string(),
        });
    }
    fetch(repo, groups, optional, cache)
}

/// The snapshot holding one file of each of `groups`, if the cache has it.
fn cached_snapshot(repo: &hf_hub::CacheRepo, groups: &[&[&str]]) -> Option<PathBuf> {
    let found = groups
        .iter()
        .map(|names| names.iter().find_map(|f| repo.get(f)))
        .collect::<Option<Vec<PathBuf>>>()?;
    found.first()?.parent().map(PathBuf::from)
}

/// Downloads the first of each group's names that the repository has (and whichever of
/// `optional` exist) through `hf-hub`.
#[cfg(feature = "download")]
fn fetch(
    id: &str,
    groups: &[&[&str]],
    optional: &[&str],
    cache: &Cache,
) -> Result<PathBuf, VoiceError> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| download_error(id, cache, e))?
        .model(id.to_string());
    let mut dir = None;
    for names in groups {
        let mut last = None;
        let found = names.iter().find_map(|name| match api.get(name) {
            Ok(path) => Some(path),
            Err(e) => {
                last = Some(e);
                None
            }
        });
        match (found, last) {
            (Some(path), _) => dir = path.parent().map(PathBuf::from),
            (None, Some(e)) => return Err(download_error(id, cache, e)),
            (None, None) => unreachable!("every group names a file"),
        }
    }
    for name in optional {
        // Optional files are absent from some repositories.
        let _ = api.get(name);
    }
    Ok(dir.expect("every family needs files"))
}

#[cfg(not(feature = "download"))]
fn fetch(id: &str, _: &[&[&str]], _: &[&str], cache: &Cache) -> Result<PathBuf, VoiceError> {
    Err(VoiceError::NoDownloads {
        id: id.to_string(),
        cache: cache.path().display().to_string(),
    })
}

/// A failed hub download; one that the cache refused (a full disk, a read-only directory) names
/// the repository's folder in the cache. What hf-hub wrote before it failed stays as its
/// `.part` blob, outside every snapshot, and resumes the next fetch.
#[cfg(feature = "download")]
fn download_error(id: &str, cache: &Cache, e: hf_hub::api::sync::ApiError) -> VoiceError {
    if let hf_hub::api::sync::ApiError::IoError(source) = e {
        let folder = Repo::model(id.to_string()).folder_name();
        return VoiceError::Io {
            path: cache.path().join(folder).display().to_string(),
            source,
        };
    }
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

    /// A hub cache in a fresh temporary root with one snapshot of `models--{repo}` holding
    /// `files`: the root, the snapshot and the cache.
    fn snapshot_cache(tag: &str, repo: &str, files: &[&str]) -> (PathBuf, PathBuf, Cache) {
        let root = std::env::temp_dir().join(format!("ferrovox-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let repo = root.join(format!("models--{repo}"));
        let snapshot = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in files {
            std::fs::write(snapshot.join(f), b"x").unwrap();
        }
        (root.clone(), snapshot, Cache::new(root))
    }

    fn fake_cache(tag: &str, files: &[&str]) -> (PathBuf, Cache) {
        let (root, snapshot, cache) = snapshot_cache(tag, "facebook--mms-tts-tiny", files);
        if files.contains(&"config.json") {
            std::fs::write(snapshot.join("config.json"), br#"{"model_type": "vits"}"#).unwrap();
        }
        (root, cache)
    }

    #[test]
    fn a_cached_snapshot_resolves_without_network() {
        let (required, _) = Family::MmsVits.hub_files();
        let (root, cache) = fake_cache("full", required);
        let files = resolve_repo("facebook/mms-tts-tiny", None, &cache).unwrap();
        let VoiceFiles::Transformers { weights, vocab, .. } = files else {
            panic!("{files:?}")
        };
        assert!(weights.ends_with("snapshots/0123abcd/model.safetensors"));
        assert!(vocab.is_some());
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A snapshot holding both of the repository's models: the short ids pick theirs, and the
    /// multilingual one takes whichever T3 the snapshot has.
    #[test]
    fn the_multilingual_short_id_picks_its_model_from_a_shared_snapshot() {
        let files: Vec<&str> = crate::CHATTERBOX_FILES
            .iter()
            .copied()
            .chain([
                "grapheme_mtl_merged_expanded_v1.json",
                "t3_mtl23ls_v2.safetensors",
                "s3gen.pt",
            ])
            .collect();
        let (root, snapshot, cache) = snapshot_cache("cb", "ResembleAI--chatterbox", &files);
        let resolve = |id: &str| resolve_known(Family::known_repo(id).unwrap(), &cache).unwrap();
        for (id, model) in [
            ("chatterbox", ChatterboxModel::English),
            ("chatterbox-multilingual", ChatterboxModel::Multilingual),
        ] {
            let VoiceFiles::Chatterbox { dir, model: got } = resolve(id) else {
                panic!("{id}")
            };
            assert!(dir.ends_with("snapshots/0123abcd"), "{}", dir.display());
            assert_eq!(got, model, "{id}");
        }
        // Without its vocabulary the multilingual model is not in the cache (and offline,
        // nothing is fetched).
        std::fs::remove_file(snapshot.join("grapheme_mtl_merged_expanded_v1.json")).unwrap();
        assert!(cached_snapshot(
            &cache.repo(Repo::model("ResembleAI/chatterbox".into())),
            crate::CHATTERBOX_MULTILINGUAL
        )
        .is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    /// `chatterbox-nano` resolves a cached snapshot of Nano's repository (Turbo's files with
    /// Nano's T3) as Nano, and the same files in a directory are found as Nano.
    #[test]
    fn the_nano_short_id_resolves_nanos_snapshot() {
        let files: Vec<&str> = crate::CHATTERBOX_NANO.iter().map(|n| n[0]).collect();
        let (root, snapshot, cache) = snapshot_cache("nano", "ResembleAI--chatterbox-nano", &files);
        let known = Family::known_repo("chatterbox-nano").unwrap();
        let files = resolve_known(known, &cache).unwrap();
        let expected = VoiceFiles::Chatterbox {
            dir: snapshot.clone(),
            model: ChatterboxModel::Nano,
        };
        assert_eq!(files, expected);
        assert_eq!(crate::voice_in_dir(&snapshot).unwrap(), expected);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_partial_snapshot_is_not_taken_for_a_voice() {
        let (root, cache) = fake_cache("partial", &["config.json"]);
        let groups: Vec<&[&str]> = Family::MmsVits
            .hub_files()
            .0
            .iter()
            .map(std::slice::from_ref)
            .collect();
        assert!(cached_snapshot(
            &cache.repo(Repo::model("facebook/mms-tts-tiny".into())),
            &groups
        )
        .is_none());
        std::fs::remove_dir_all(root).unwrap();
    }
}
