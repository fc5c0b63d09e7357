//! Mirrors upstream's text front ends: `punc_norm` (`chatterbox/tts.py`, `mtl_tts.py`),
//! `EnTokenizer` over the released `tokenizer.json` and `MTLTokenizer` over
//! `grapheme_mtl_merged_expanded_v1.json` (`models/tokenizers/tokenizer.py`), and Turbo's GPT-2
//! BPE with its paralinguistic tags (`AutoTokenizer` in `tts_turbo.py`).

mod en;
mod mtl;
mod punc;
mod turbo;

pub use en::{EnTokenizer, EOT, SOT, SPACE, UNK};
pub use mtl::{Language, MtlTokenizer, LANGUAGES, READS_KANJI};
pub use punc::{mtl_punc_norm, punc_norm, turbo_punc_norm};
pub use turbo::TurboTokenizer;
