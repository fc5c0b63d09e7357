//! The voice store's metadata object (`<id>/voice.json`), read back through the store's own API
//! as a server reads a cloned voice.

use std::sync::OnceLock;

use ferrovox_voice_store::{BlockingVoiceStore, NewVoice, StoreOptions, META_FILE};

struct Store {
    _dir: std::path::PathBuf,
    store: BlockingVoiceStore,
    id: String,
    meta_path: std::path::PathBuf,
}

/// A directory store holding one voice whose metadata each case overwrites.
fn store() -> Result<&'static Store, String> {
    static STORE: OnceLock<Result<Store, String>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("ferrovox-fuzz-store-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let location = dir
                .to_str()
                .ok_or("a temp dir that is not UTF-8")?
                .to_string();
            let options = StoreOptions {
                cache_bytes: 0,
                s3: None,
            };
            let store = BlockingVoiceStore::open_with(Some(&location), options)
                .map_err(|e| e.to_string())?;
            let (meta, _) = store
                .add(NewVoice {
                    name: "fuzz".into(),
                    family: "chatterbox".into(),
                    model_id: "ResembleAI/chatterbox".into(),
                    model_version: "1.0.0".into(),
                    encoder_params: serde_json::json!({"exaggeration": 0.5}),
                    source_hash: "ab".repeat(32),
                    duration_s: 7.25,
                    loudness_lufs: -23.0,
                    conditionals: vec![7; 64],
                    consent: None,
                })
                .map_err(|e| e.to_string())?;
            let meta_path = dir.join(&meta.id).join(META_FILE);
            if !meta_path.is_file() {
                return Err(format!("no metadata at {}", meta_path.display()));
            }
            Ok(Store {
                _dir: dir,
                store,
                id: meta.id,
                meta_path,
            })
        })
        .as_ref()
        .map_err(|e| format!("the voice store did not open: {e}"))
}

pub(super) fn voice_meta(bytes: &[u8]) -> Result<(), String> {
    let s = store()?;
    // The seed names an id of its own; the stored voice's id goes in its place.
    let text = String::from_utf8_lossy(bytes).replace("{{ID}}", &s.id);
    std::fs::write(&s.meta_path, text.as_bytes()).map_err(|e| e.to_string())?;
    for read in [
        s.store.meta(&s.id).map(drop),
        s.store.get(&s.id).map(drop),
        s.store.list().map(drop),
    ] {
        if let Err(e) = read {
            let message = e.to_string();
            if !message.contains(&s.id) && !message.contains(META_FILE) {
                return Err(format!(
                    "an error that names neither the voice nor its file: {message}"
                ));
            }
        }
    }
    Ok(())
}
