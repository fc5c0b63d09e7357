//! Loading a transformers `VitsModel` checkpoint directory (MMS-TTS): `config.json`,
//! `model.safetensors` and, for the tokenizer, `vocab.json`.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::tokenizer::MmsTokenizer;
use crate::{Config, Error, Result, VitsModel};

/// A model and its tokenizer, loaded from one directory.
#[derive(Debug)]
pub struct TransformersCheckpoint {
    pub model: VitsModel,
    /// `None` when the directory has no `vocab.json`.
    pub tokenizer: Option<MmsTokenizer>,
}

impl VitsModel {
    /// Loads `config.json` + `model.safetensors` from `dir` onto `device`; a missing tensor or
    /// one of the wrong shape is an error that names it.
    pub fn from_transformers_dir(dir: &Path, device: &Device) -> Result<TransformersCheckpoint> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.display().to_string(),
            source,
        })?;
        let cfg = Config::from_json(&text)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::Checkpoint {
                path: weights.display().to_string(),
                reason: "file not found".into(),
            });
        }
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| Error::Checkpoint {
                path: weights.display().to_string(),
                reason: e.to_string(),
            })?;
        let model = VitsModel::new(&cfg, vb).map_err(|e| match e {
            Error::Checkpoint { reason, .. } => Error::Checkpoint {
                path: weights.display().to_string(),
                reason,
            },
            other => other,
        })?;
        let tokenizer = if dir.join("vocab.json").is_file() {
            Some(MmsTokenizer::from_dir(dir)?)
        } else {
            None
        };
        Ok(TransformersCheckpoint { model, tokenizer })
    }
}
