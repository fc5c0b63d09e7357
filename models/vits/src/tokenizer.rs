//! Mirrors transformers' `VitsTokenizer` (`tokenization_vits.py`) for MMS-TTS checkpoints:
//! characters to ids, with MMS normalisation (lowercasing except exact vocabulary matches,
//! dropping characters outside the vocabulary, trimming) and the blank id interleaved.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The fields of `tokenizer_config.json` the tokenizer uses.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default = "default_pad")]
    pub pad_token: String,
    #[serde(default = "default_unk")]
    pub unk_token: String,
    #[serde(default = "yes")]
    pub add_blank: bool,
    #[serde(default = "yes")]
    pub normalize: bool,
    #[serde(default)]
    pub phonemize: bool,
    #[serde(default)]
    pub is_uroman: bool,
    #[serde(default)]
    pub language: Option<String>,
}

fn default_pad() -> String {
    "<pad>".into()
}
fn default_unk() -> String {
    "<unk>".into()
}
fn yes() -> bool {
    true
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields default")
    }
}

/// The MMS character tokenizer.
#[derive(Debug, Clone)]
pub struct MmsTokenizer {
    vocab: HashMap<String, u32>,
    /// Vocabulary then added tokens, in the order upstream tries them while normalising.
    match_order: Vec<String>,
    /// Special tokens emitted whole, without blanks: `(text, id)`, longest first.
    specials: Vec<(String, u32)>,
    unk_id: u32,
    cfg: TokenizerConfig,
}

impl MmsTokenizer {
    /// Builds the tokenizer from the contents of `vocab.json` and its config.
    pub fn new(vocab_json: &str, cfg: TokenizerConfig) -> Result<Self> {
        if cfg.phonemize || cfg.is_uroman {
            return Err(Error::Config(
                "this MMS tokenizer needs phonemize/uroman preprocessing, which ferrovox does not run; use a checkpoint with phonemize=false and is_uroman=false".into(),
            ));
        }
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|e| Error::Config(format!("vocab.json: {e}")))?;
        if vocab.is_empty() {
            return Err(Error::Config("vocab.json is empty".into()));
        }
        // transformers writes vocab.json with sorted keys; added tokens follow in id order.
        let mut match_order: Vec<String> = vocab.keys().cloned().collect();
        match_order.sort();
        let mut next_id = vocab.len() as u32;
        let mut specials = Vec::new();
        for token in [&cfg.pad_token, &cfg.unk_token] {
            let id = match vocab.get(token) {
                Some(&id) => id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            if !specials.iter().any(|(t, _)| t == token) {
                specials.push((token.clone(), id));
                if !match_order.contains(token) {
                    match_order.push(token.clone());
                }
            }
        }
        let unk_id = specials
            .iter()
            .find(|(t, _)| *t == cfg.unk_token)
            .map(|s| s.1)
            .unwrap_or(0);
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(Self {
            vocab,
            match_order,
            specials,
            unk_id,
            cfg,
        })
    }

    /// Reads `vocab.json` and, when present beside it, `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let vocab = read("vocab.json")?;
        let cfg = if dir.join("tokenizer_config.json").is_file() {
            serde_json::from_str(&read("tokenizer_config.json")?)
                .map_err(|e| Error::Config(format!("tokenizer_config.json: {e}")))?
        } else {
            TokenizerConfig::default()
        };
        Self::new(&vocab, cfg)
    }

    /// The normalised text (`VitsTokenizer.prepare_for_tokenization`).
    pub fn normalize(&self, text: &str) -> String {
        if !self.cfg.normalize {
            return text.to_string();
        }
        let mut kept = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match self
                .match_order
                .iter()
                .find(|w| rest.starts_with(w.as_str()))
            {
                Some(word) => {
                    kept.push_str(word);
                    rest = &rest[word.len()..];
                }
                None => {
                    kept.extend(c.to_lowercase());
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        let specials = &self.specials;
        let filtered: String = kept
            .chars()
            .filter(|c| {
                let mut buf = [0u8; 4];
                let s = c.encode_utf8(&mut buf);
                self.vocab.contains_key(s as &str) || specials.iter().any(|(t, _)| t == s)
            })
            .collect();
        filtered.trim().to_string()
    }

    /// Token ids for `text`; empty when nothing in it is in the vocabulary.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let mut ids = Vec::with_capacity(2 * normalized.len() + 1);
        let mut chunk = String::new();
        let mut rest = normalized.as_str();
        while !rest.is_empty() {
            if let Some((token, id)) = self
                .specials
                .iter()
                .find(|(t, _)| rest.starts_with(t.as_str()))
            {
                self.push_chunk(&chunk, &mut ids);
                chunk.clear();
                ids.push(*id);
                rest = &rest[token.len()..];
            } else {
                let c = rest.chars().next().expect("non-empty");
                chunk.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        self.push_chunk(&chunk, &mut ids);
        ids
    }

    fn push_chunk(&self, chunk: &str, ids: &mut Vec<u32>) {
        if chunk.is_empty() {
            return;
        }
        for c in chunk.chars() {
            if self.cfg.add_blank {
                ids.push(0);
            }
            let mut buf = [0u8; 4];
            ids.push(
                *self
                    .vocab
                    .get(c.encode_utf8(&mut buf) as &str)
                    .unwrap_or(&self.unk_id),
            );
        }
        if self.cfg.add_blank {
            ids.push(0);
        }
    }

    /// Like [`MmsTokenizer::encode`], but empty output is an error naming the text.
    pub fn encode_checked(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text);
        if ids.is_empty() {
            let shown: String = text.chars().take(40).collect();
            return Err(Error::Input(format!(
                "nothing speakable in {shown:?}: no character is in this voice's vocabulary"
            )));
        }
        Ok(ids)
    }
}
