//! Text front end for ferrovox: Piper-compatible phonemization, phoneme ids and sentence
//! splitting.
//!
//! The pieces mirror piper-tts 1.8.0 (`piper/phonemize_espeak.py`, `piper/voice.py`,
//! `piper/phoneme_ids.py`):
//!
//! - [`PhonemeIdMap`] reads a Piper voice's `phoneme_id_map` (from its `.onnx.json`) and turns
//!   a sentence's phonemes into model input ids laid out as `^ _ (p _)* $`.
//! - `EspeakPhonemizer` (feature `espeak`, on by default) turns text into per-sentence
//!   phoneme lists the way Piper does, on the pure-Rust `espeak-ng` port.
//! - [`chinese_words`] segments Chinese text into words (jieba's dictionary);
//!   `kanji_as_hiragana` (feature `japanese`, GPL-3.0) reads Japanese kanji as hiragana.
//! - [`split_sentences`] is a plain-text sentence splitter for callers that stream sentence by
//!   sentence; it needs no phonemizer.
//!
//! ```no_run
//! # #[cfg(feature = "espeak")]
//! # fn main() -> Result<(), ferrovox_text::TextError> {
//! use ferrovox_text::{EspeakPhonemizer, PhonemeIdMap};
//!
//! let ids_map = PhonemeIdMap::from_voice_config_file("en_US-joe-medium.onnx.json")?;
//! let phonemizer = EspeakPhonemizer::new("en-us")?;
//! for sentence in phonemizer.phonemize("Hello world. How are you?")? {
//!     let ids = ids_map.ids(&sentence.phonemes)?;
//!     println!("{} -> {} ids", sentence.ipa, ids.len());
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "espeak"))]
//! # fn main() {}
//! ```
//!
//! # Licence of the `espeak` feature
//!
//! This crate is MIT OR Apache-2.0, but the feature `espeak` (default) links the `espeak-ng`
//! crate and its data crates, which are **GPL-3.0-or-later**. A binary built with the feature
//! falls under GPL-3.0-or-later. Build with `default-features = false` for a permissively
//! licensed binary; [`PhonemeIdMap`], [`Sentence`] and [`split_sentences`] stay available
//! (phonemes then have to come from elsewhere, e.g. Piper's `[[ raw phonemes ]]` blocks
//! produced upstream).
//!
//! The feature `japanese` (off by default) links the `kakasi` crate, **GPL-3.0**, likewise.
//!
//! # Differences from Piper
//!
//! The `espeak-ng` port (0.2.0) does not reproduce Piper's C espeak-ng everywhere; see
//! `EspeakPhonemizer` for the known differences.

mod chunk;
#[cfg(feature = "espeak")]
mod espeak;
#[cfg(feature = "japanese")]
mod japanese;
pub mod normalize;
mod phoneme_ids;
mod segment;
mod sentences;

use std::path::PathBuf;

pub use chunk::{chunk_text, TextChunk};
#[cfg(feature = "espeak")]
pub use espeak::{default_cache_dir, ensure_bundled_data, EspeakPhonemizer};
#[cfg(feature = "japanese")]
pub use japanese::kanji_as_hiragana;
pub use normalize::normalize_english;
pub use phoneme_ids::{PhonemeIdMap, BOS, EOS, PAD};
pub use segment::{chinese_words, load_chinese_segmenter};
pub use sentences::split_sentences;

/// One sentence of phonemes, as Piper synthesises it (each sentence is run through the model
/// on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    /// Piper's phoneme list: the NFD-decomposed codepoints of espeak-ng's IPA, with each
    /// clause's terminator (`. ? ! , : ;`) kept, plus a space after `, : ;`.
    pub phonemes: Vec<String>,
    /// The phonemes joined into one string (NFD, so combining marks stay separate).
    pub ipa: String,
}

impl Sentence {
    /// Builds a sentence from its phoneme list; [`Sentence::ipa`] is their concatenation.
    pub fn from_phonemes(phonemes: Vec<String>) -> Self {
        let ipa = phonemes.concat();
        Self { phonemes, ipa }
    }
}

/// Errors of the text front end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// A phoneme has no entry in the voice's `phoneme_id_map` (strict [`PhonemeIdMap::ids`]).
    #[error("phoneme {phoneme:?} at position {position} is not in the voice's phoneme_id_map")]
    UnknownPhoneme {
        /// The phoneme that has no id.
        phoneme: String,
        /// Its index in the phoneme list.
        position: usize,
    },
    /// The `phoneme_id_map` lacks one of Piper's special symbols.
    #[error("phoneme_id_map has no entry for the {role} symbol {symbol:?}")]
    MissingSpecialSymbol {
        /// `"BOS"`, `"EOS"` or `"PAD"`.
        role: &'static str,
        /// The symbol Piper uses for it (`^`, `$`, `_`).
        symbol: &'static str,
    },
    /// A voice config file could not be read.
    #[error("reading voice config {path}: {source}")]
    VoiceConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A voice config is not JSON with a `phoneme_id_map` object of phoneme → list of ints.
    #[error("invalid voice config (expected a `phoneme_id_map` of phoneme -> [int]): {0}")]
    VoiceConfigParse(#[source] serde_json::Error),
    /// The text has nothing speakable: it is empty, whitespace or punctuation only.
    #[error("nothing to speak: the text is empty or has no words")]
    NothingToSpeak,
    /// espeak-ng has no voice of this name.
    #[error("unknown espeak-ng voice {voice:?}")]
    UnknownVoice {
        /// The voice name as given.
        voice: String,
    },
    /// The voice exists in espeak-ng, but its dictionary is not in the data directory (the
    /// bundled data holds English only).
    #[error("espeak-ng voice {voice:?} is known but its dictionary is not installed (the bundled data is English only)")]
    VoiceNotBundled {
        /// The voice name as given.
        voice: String,
    },
    /// A directory given as espeak-ng data has no phoneme table (`phontab`).
    #[error("{path} is not an espeak-ng data directory (no phontab)")]
    InvalidDataDir {
        /// The directory.
        path: PathBuf,
    },
    /// No cache directory could be determined from the environment.
    #[error("no cache directory: set FERROVOX_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// Writing the bundled espeak-ng data failed.
    #[error("installing espeak-ng data into {path}: {source}")]
    DataInstall {
        /// The directory being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `espeak-ng` crate returned an error.
    #[cfg(feature = "espeak")]
    #[error("espeak-ng: {0}")]
    Espeak(#[from] espeak_ng::Error),
    /// The `espeak-ng` crate panicked on this input; the panic was caught.
    #[error("espeak-ng failed on this input (internal panic: {message})")]
    EspeakPanic {
        /// The panic message.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_values_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<TextError>();
        assert_send_sync::<Sentence>();
        assert_send_sync::<PhonemeIdMap>();
    }

    #[test]
    fn sentence_ipa_is_the_joined_phonemes() {
        let sentence =
            Sentence::from_phonemes(vec!["h".into(), "ə".into(), ",".into(), " ".into()]);
        assert_eq!(sentence.ipa, "hə, ");
    }
}
