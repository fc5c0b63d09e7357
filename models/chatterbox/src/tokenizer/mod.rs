//! Mirrors upstream's English text front end: `punc_norm` (`chatterbox/tts.py`) and
//! `EnTokenizer` (`models/tokenizers/tokenizer.py`) over the released `tokenizer.json`.

mod en;
mod punc;

pub use en::{EnTokenizer, EOT, SOT, SPACE, UNK};
pub use punc::punc_norm;
