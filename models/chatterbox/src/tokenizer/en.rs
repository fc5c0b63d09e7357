//! Mirrors `EnTokenizer` (`models/tokenizers/tokenizer.py`): spaces become `[SPACE]`, then the
//! released `tokenizer.json` (a BPE model) through the `tokenizers` crate.

use std::path::Path;

use crate::{Error, Result};

pub const SOT: &str = "[START]";
pub const EOT: &str = "[STOP]";
pub const UNK: &str = "[UNK]";
pub const SPACE: &str = "[SPACE]";

/// The English text tokenizer.
#[derive(Debug, Clone)]
pub struct EnTokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
}

impl EnTokenizer {
    /// Loads `tokenizer.json`; a file that does not parse, or lacks `[START]` / `[STOP]` (as
    /// upstream checks), is an error naming it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = load_vocabulary(path)?;
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self { inner, vocab_size })
    }

    /// Ids of `text` (after [`super::punc_norm`]), without start or stop tokens, as
    /// `EnTokenizer.encode` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        ids_of(&self.inner, &text.replace(' ', SPACE))
    }

    /// The id of a special token.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids the vocabulary holds (the largest id + 1 at most).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// Reads a tokenizers JSON file; a missing file, one that does not parse, or a vocabulary
/// without `[START]` / `[STOP]` (as upstream checks) is an error naming it.
pub(super) fn load_vocabulary(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("file not found".into()));
    }
    let inner = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| bad(format!("not a tokenizers JSON file: {e}")))?;
    for special in [SOT, EOT] {
        if inner.token_to_id(special).is_none() {
            return Err(bad(format!("the vocabulary has no `{special}` token")));
        }
    }
    Ok(inner)
}

/// The ids `tokenizer` gives `text`, special tokens added to nothing.
pub(super) fn ids_of(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Input(format!("tokenizing: {e}")))?;
    Ok(encoding.get_ids().to_vec())
}
