//! The one place that knows the model families: how each declares itself on disk and on the
//! Hugging Face Hub, and the files it needs. Nothing else guesses a family from file names.

use std::path::{Path, PathBuf};

use crate::{io_err, VoiceError, VoiceFiles};

/// A model family ferrovox serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Piper voices (`<name>.onnx` + `<name>.onnx.json`).
    Piper,
    /// transformers' `VitsModel` checkpoints (MMS-TTS): `config.json` says `"model_type":
    /// "vits"`.
    MmsVits,
    /// Chatterbox (Resemble AI): the `ResembleAI/chatterbox` repository's English files, or its
    /// multilingual ones (`grapheme_mtl_merged_expanded_v1.json` and the multilingual T3).
    Chatterbox,
}

/// Which of the `ResembleAI/chatterbox` repository's models a Chatterbox voice is: the two
/// share a repository (and so a hub snapshot) and a family, their files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatterboxModel {
    /// `t3_cfg.safetensors`, `tokenizer.json`: English only.
    #[default]
    English,
    /// `t3_mtl23ls_v3` (or v2), `grapheme_mtl_merged_expanded_v1.json`: 23 languages.
    Multilingual,
    /// Chatterbox Turbo (`ResembleAI/chatterbox-turbo`): `t3_turbo_v1.safetensors`,
    /// `s3gen_meanflow.safetensors`, GPT-2's tokenizer files.
    Turbo,
    /// Chatterbox Nano (`ResembleAI/chatterbox-nano`): Turbo's files with
    /// `t3_nano_v1.safetensors` (GPT-2 small) as T3.
    Nano,
}

/// The marker a directory may hold to declare its family: `{"family": "chatterbox"}`.
pub const MARKER: &str = "ferrovox-voice.json";

/// Files of the `ResembleAI/chatterbox` layout that synthesis needs (`ve.safetensors`, the
/// voice encoder, is fetched too: cloning reads it).
pub const CHATTERBOX_FILES: &[&str] = &[
    "t3_cfg.safetensors",
    "s3gen.safetensors",
    "tokenizer.json",
    "conds.pt",
];
const CHATTERBOX_OPTIONAL: &[&str] = &["ve.safetensors"];
/// The multilingual model's files in the same repository: each entry is satisfied by any of
/// its names (T3 v3 or v2, S3Gen and the voice as `.pt` or safetensors); on the hub the first
/// name of each is fetched when the repository has it, else the next.
pub const CHATTERBOX_MULTILINGUAL: &[&[&str]] = &[
    &["grapheme_mtl_merged_expanded_v1.json"],
    &["t3_mtl23ls_v3.safetensors", "t3_mtl23ls_v2.safetensors"],
    &["s3gen.pt", "s3gen.safetensors"],
    &["conds.pt", "conds.safetensors"],
];
/// The built-in voice may also be saved as safetensors (`Conditionals::save`).
const CHATTERBOX_VOICE_ALTERNATIVE: &str = "conds.safetensors";

/// Chatterbox Turbo's files (`ResembleAI/chatterbox-turbo`): each entry satisfied by any of its
/// names, on the hub the first the repository has.
pub const CHATTERBOX_TURBO: &[&[&str]] = &[
    &["t3_turbo_v1.safetensors"],
    &["s3gen_meanflow.safetensors"],
    &["conds.pt", "conds.safetensors"],
    &["tokenizer.json", "vocab.json"],
];
/// Chatterbox Nano's files (`ResembleAI/chatterbox-nano`): Turbo's, with Nano's T3.
pub const CHATTERBOX_NANO: &[&[&str]] = &[
    &["t3_nano_v1.safetensors"],
    &["s3gen_meanflow.safetensors"],
    &["conds.pt", "conds.safetensors"],
    &["tokenizer.json", "vocab.json"],
];

/// Fetched from Turbo's (and Nano's) repository when present: the rest of the tokenizer's files and the voice
/// encoder (for cloning).
const CHATTERBOX_TURBO_OPTIONAL: &[&str] = &[
    "merges.txt",
    "tokenizer_config.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "ve.safetensors",
];

/// Fetched from the multilingual model's repository when present: the Chinese Cangjie table and
/// the voice encoder (for cloning).
const CHATTERBOX_MULTILINGUAL_OPTIONAL: &[&str] = &["Cangjie5_TC.json", "ve.pt"];

/// A hub repository of a known family, and the short id that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRepo {
    /// The short id (`chatterbox`).
    pub short: &'static str,
    /// The repository (`owner/name`).
    pub repo: &'static str,
    pub family: Family,
    /// For Chatterbox, which of the repository's models.
    pub chatterbox: ChatterboxModel,
}

/// Hub repositories of a known family, by short id; a repository named by itself is its first
/// entry here.
pub const KNOWN_REPOS: &[KnownRepo] = &[
    KnownRepo {
        short: "chatterbox",
        repo: "ResembleAI/chatterbox",
        family: Family::Chatterbox,
        chatterbox: ChatterboxModel::English,
    },
    KnownRepo {
        short: "chatterbox-multilingual",
        repo: "ResembleAI/chatterbox",
        family: Family::Chatterbox,
        chatterbox: ChatterboxModel::Multilingual,
    },
    KnownRepo {
        short: "chatterbox-turbo",
        repo: "ResembleAI/chatterbox-turbo",
        family: Family::Chatterbox,
        chatterbox: ChatterboxModel::Turbo,
    },
    KnownRepo {
        short: "chatterbox-nano",
        repo: "ResembleAI/chatterbox-nano",
        family: Family::Chatterbox,
        chatterbox: ChatterboxModel::Nano,
    },
];

impl Family {
    /// The name the server reports as a voice's `model` and a marker file declares.
    pub fn name(self) -> &'static str {
        match self {
            Self::Piper => "piper",
            Self::MmsVits => "mms-vits",
            Self::Chatterbox => "chatterbox",
        }
    }

    /// Every family.
    pub const ALL: [Family; 3] = [Self::Piper, Self::MmsVits, Self::Chatterbox];

    /// The family a name (a marker's `family`) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// A Chatterbox model's files on the hub beyond the English ones: each entry's names in
    /// the order they are tried, and the ones fetched when present.
    pub fn chatterbox_hub_files(
        model: ChatterboxModel,
    ) -> (&'static [&'static [&'static str]], &'static [&'static str]) {
        match model {
            ChatterboxModel::Turbo => (CHATTERBOX_TURBO, CHATTERBOX_TURBO_OPTIONAL),
            ChatterboxModel::Nano => (CHATTERBOX_NANO, CHATTERBOX_TURBO_OPTIONAL),
            _ => (CHATTERBOX_MULTILINGUAL, CHATTERBOX_MULTILINGUAL_OPTIONAL),
        }
    }

    /// Files a hub repository of this family must have, and ones fetched when present.
    pub fn hub_files(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::Piper => (&[], &[]),
            Self::MmsVits => (
                &["config.json", "model.safetensors", "vocab.json"],
                &["tokenizer_config.json"],
            ),
            Self::Chatterbox => (CHATTERBOX_FILES, CHATTERBOX_OPTIONAL),
        }
    }

    /// The known repository `id` names (a short id, or the repository itself).
    pub fn known_repo(id: &str) -> Option<&'static KnownRepo> {
        KNOWN_REPOS
            .iter()
            .find(|k| k.short == id)
            .or_else(|| KNOWN_REPOS.iter().find(|k| k.repo.eq_ignore_ascii_case(id)))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The family `dir` declares: its marker file; a Piper config beside its model; a
/// transformers `config.json` whose `model_type` is `vits`; the Chatterbox repository's
/// layout. Anything else is refused with what was looked for.
pub fn declared_family(dir: &Path) -> Result<(Family, VoiceFiles), VoiceError> {
    let not_a_voice = || VoiceError::NotAVoice {
        path: dir.display().to_string(),
    };
    let marker = dir.join(MARKER);
    if marker.is_file() {
        let text = std::fs::read_to_string(&marker).map_err(io_err(&marker))?;
        let name = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["family"].as_str().map(String::from))
            .ok_or_else(|| VoiceError::BadMarker {
                path: marker.display().to_string(),
                reason: "expected {\"family\": \"piper\" | \"mms-vits\" | \"chatterbox\"}".into(),
            })?;
        let family = Family::from_name(&name).ok_or_else(|| VoiceError::BadMarker {
            path: marker.display().to_string(),
            reason: format!("unknown family `{name}` (known: piper, mms-vits, chatterbox)"),
        })?;
        return files_of(family, dir)
            .ok_or_else(not_a_voice)
            .map(|f| (family, f));
    }
    if let Some(files) = files_of(Family::Piper, dir) {
        return Ok((Family::Piper, files));
    }
    let config = dir.join("config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(io_err(&config))?;
        let model_type = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["model_type"].as_str().map(String::from));
        if model_type.as_deref() == Some("vits") {
            return files_of(Family::MmsVits, dir)
                .ok_or_else(not_a_voice)
                .map(|f| (Family::MmsVits, f));
        }
    }
    if let Some(files) = files_of(Family::Chatterbox, dir) {
        return Ok((Family::Chatterbox, files));
    }
    Err(not_a_voice())
}

/// `family`'s files in `dir`, when they are all there.
fn files_of(family: Family, dir: &Path) -> Option<VoiceFiles> {
    match family {
        Family::Piper => {
            let mut onnx: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect();
            onnx.sort();
            onnx.into_iter().find_map(|model| {
                let config = PathBuf::from(format!("{}.json", model.display()));
                config.is_file().then_some(VoiceFiles::Piper {
                    onnx: model,
                    config,
                })
            })
        }
        Family::MmsVits => {
            let (weights, config) = (dir.join("model.safetensors"), dir.join("config.json"));
            let vocab = dir.join("vocab.json");
            (weights.is_file() && config.is_file()).then(|| VoiceFiles::Transformers {
                weights,
                config,
                vocab: vocab.is_file().then_some(vocab),
            })
        }
        Family::Chatterbox => {
            let english = CHATTERBOX_FILES.iter().all(|&f| {
                dir.join(f).is_file()
                    || (f == "conds.pt" && dir.join(CHATTERBOX_VOICE_ALTERNATIVE).is_file())
            });
            let has = |groups: &[&[&str]]| {
                groups
                    .iter()
                    .all(|names| names.iter().any(|f| dir.join(f).is_file()))
            };
            // Both in one directory (a whole snapshot of the repository): English, as the
            // loader reads it; the hub id `chatterbox-multilingual` asks for the other.
            let model = if english {
                ChatterboxModel::English
            } else if has(CHATTERBOX_MULTILINGUAL) {
                ChatterboxModel::Multilingual
            } else if has(CHATTERBOX_TURBO) {
                ChatterboxModel::Turbo
            } else if has(CHATTERBOX_NANO) {
                ChatterboxModel::Nano
            } else {
                return None;
            };
            Some(VoiceFiles::Chatterbox {
                dir: dir.to_path_buf(),
                model,
            })
        }
    }
}
