//! Turbo's text tokenizer: GPT-2's byte-level BPE with the paralinguistic tags (`[laugh]`,
//! `[sigh]`, `[clear throat]`, ...) added as whole tokens, as `AutoTokenizer.from_pretrained`
//! reads the released directory: its `tokenizer.json` when there is one, else `vocab.json` and
//! `merges.txt` with the added tokens of `tokenizer_config.json` (or `added_tokens.json`).
//! No start or stop token is added.

use std::collections::BTreeMap;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result};

/// Turbo's text tokenizer.
#[derive(Debug, Clone)]
pub struct TurboTokenizer {
    inner: Tokenizer,
}

/// An added token as `tokenizer_config.json`'s `added_tokens_decoder` describes it.
#[derive(Debug, serde::Deserialize)]
struct Added {
    content: String,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    single_word: bool,
    #[serde(default = "yes")]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

fn yes() -> bool {
    true
}

impl TurboTokenizer {
    /// Reads the tokenizer files of `dir`; a missing or unreadable one is named.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("tokenizer.json");
        if single.is_file() {
            let inner = Tokenizer::from_file(&single).map_err(|e| bad(&single, e.to_string()))?;
            return Ok(Self { inner });
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        for f in [&vocab, &merges] {
            if !f.is_file() {
                return Err(bad(
                    f,
                    "file not found (Turbo's tokenizer is tokenizer.json, or vocab.json with \
                     merges.txt)"
                        .into(),
                ));
            }
        }
        let (v, m) = (vocab.display().to_string(), merges.display().to_string());
        let bpe = BPE::from_file(&v, &m)
            .build()
            .map_err(|e| bad(&vocab, format!("not a BPE vocabulary with its merges: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        // transformers' GPT-2 conversion: byte-level, no prefix space.
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        for (id, token) in added_tokens(dir)? {
            let added = AddedToken::from(token.content.clone(), token.special)
                .lstrip(token.lstrip)
                .rstrip(token.rstrip)
                .single_word(token.single_word)
                .normalized(token.normalized);
            if inner.token_to_id(&token.content).is_none() {
                let adding = if token.special {
                    inner.add_special_tokens([added])
                } else {
                    inner.add_tokens([added])
                };
                adding.map_err(|e| bad(dir, format!("adding {:?}: {e}", token.content)))?;
            }
            if inner.token_to_id(&token.content) != Some(id) {
                return Err(bad(
                    &dir.join("tokenizer_config.json"),
                    format!(
                        "added token {:?} should be id {id} but the vocabulary puts it at {:?}",
                        token.content,
                        inner.token_to_id(&token.content)
                    ),
                ));
            }
        }
        Ok(Self { inner })
    }

    /// The ids of `text` (already through [`super::turbo_punc_norm`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        super::en::ids_of(&self.inner, text)
    }

    /// Ids in all, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn bad(path: &Path, reason: String) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    }
}

/// The added tokens by id: `tokenizer_config.json`'s `added_tokens_decoder`, else
/// `added_tokens.json` (content to id, none special), else none.
fn added_tokens(dir: &Path) -> Result<BTreeMap<u32, Added>> {
    let read = |path: &Path| -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))
    };
    let config = dir.join("tokenizer_config.json");
    if config.is_file() {
        if let Some(decoder) = read(&config)?.get("added_tokens_decoder") {
            let by_id: BTreeMap<String, Added> = serde_json::from_value(decoder.clone())
                .map_err(|e| bad(&config, format!("added_tokens_decoder: {e}")))?;
            return by_id
                .into_iter()
                .map(|(id, t)| {
                    id.parse::<u32>()
                        .map(|id| (id, t))
                        .map_err(|_| bad(&config, format!("added token id {id:?} is not a number")))
                })
                .collect();
        }
    }
    let listed = dir.join("added_tokens.json");
    if !listed.is_file() {
        return Ok(BTreeMap::new());
    }
    let by_content: BTreeMap<String, u32> = serde_json::from_value(read(&listed)?)
        .map_err(|e| bad(&listed, format!("expected {{\"token\": id}}: {e}")))?;
    Ok(by_content
        .into_iter()
        .map(|(content, id)| {
            let token = Added {
                content,
                lstrip: false,
                rstrip: false,
                single_word: false,
                normalized: true,
                special: false,
            };
            (id, token)
        })
        .collect())
}
