//! The targets, by the kind of input they read.

mod files;
mod server;
mod store;
mod text;

use crate::Target;

const MIB: usize = 1 << 20;

pub(crate) fn all() -> Vec<Target> {
    vec![
        Target {
            name: "text",
            about: "English normalizer, sentence splitter and chunker",
            run: text::normalize_split_chunk,
            warm: || {},
            base_bytes: 4 * MIB,
            bytes_per_input_byte: 256,
        },
        Target {
            name: "phonemizer",
            about: "espeak-ng phonemizer input (en-us)",
            run: text::phonemize,
            warm: || {},
            base_bytes: 32 * MIB,
            bytes_per_input_byte: 1024,
        },
        Target {
            name: "chatterbox-text",
            about: "Chatterbox's English, multilingual and Turbo tokenizers, any language",
            run: text::chatterbox_tokenizers,
            warm: text::load_chatterbox_tokenizers,
            base_bytes: 8 * MIB,
            bytes_per_input_byte: 512,
        },
        Target {
            name: "piper-onnx",
            about: "a Piper .onnx voice: protobuf, weight names, inferred config, model",
            run: files::piper_onnx,
            warm: || {},
            base_bytes: 32 * MIB,
            bytes_per_input_byte: 64,
        },
        Target {
            name: "vits-config",
            about: "a transformers VITS config.json and a Piper .onnx.json",
            run: files::vits_configs,
            warm: || {},
            base_bytes: 4 * MIB,
            bytes_per_input_byte: 64,
        },
        Target {
            name: "voice-safetensors",
            about: "a ferrovox Chatterbox voice (safetensors)",
            run: files::voice_safetensors,
            warm: || {},
            base_bytes: 8 * MIB,
            bytes_per_input_byte: 16,
        },
        Target {
            name: "conds-pt",
            about: "upstream Chatterbox's conds.pt (a torch zip archive with a pickle)",
            run: files::conds_pt,
            warm: || {},
            base_bytes: 16 * MIB,
            bytes_per_input_byte: 16,
        },
        Target {
            name: "reference-audio",
            about: "a reference clip upload (WAV, FLAC, MP3, OGG), decoded and checked",
            run: files::reference_audio,
            warm: || {},
            // 30 s of 48 kHz stereo and its resampled copies, whatever the file's size.
            base_bytes: 64 * MIB,
            bytes_per_input_byte: 64,
        },
        Target {
            name: "voice-meta",
            about: "a cloned voice's metadata (voice.json) read through the voice store",
            run: store::voice_meta,
            warm: || {},
            base_bytes: 4 * MIB,
            bytes_per_input_byte: 64,
        },
        Target {
            name: "speech-request",
            about: "the body of POST /v1/audio/speech, through the server's router",
            run: server::speech_request,
            warm: || {},
            base_bytes: 16 * MIB,
            bytes_per_input_byte: 1024,
        },
        Target {
            name: "voice-upload",
            about: "the multipart body of POST /v1/audio/voices, through the server's router",
            run: server::voice_upload,
            warm: || {},
            base_bytes: 16 * MIB,
            bytes_per_input_byte: 256,
        },
        Target {
            name: "wyoming",
            about: "Wyoming protocol framing (header line, data and payload)",
            run: server::wyoming,
            warm: || {},
            base_bytes: 4 * MIB,
            bytes_per_input_byte: 64,
        },
    ]
}

/// A file holding `bytes` for readers that take a path, removed when dropped; its name is
/// unique to the case, so an error that names the file can be checked for it.
pub(crate) struct CaseFile {
    pub path: std::path::PathBuf,
}

impl CaseFile {
    pub fn new(ext: &str, bytes: &[u8]) -> Result<Self, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("ferrovox-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!(
            "case{}.{ext}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// `Ok` when `error` names this file, the defect otherwise.
    pub fn named_in(&self, error: &dyn std::fmt::Display) -> Result<(), String> {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let message = error.to_string();
        if message.contains(name.as_ref()) {
            Ok(())
        } else {
            Err(format!("an error that does not name the file: {message}"))
        }
    }
}

impl Drop for CaseFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
