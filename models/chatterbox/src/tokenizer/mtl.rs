//! Mirrors `MTLTokenizer` (`models/tokenizers/tokenizer.py`): lowercase, NFKD, the language's
//! own step, the `[lang]` tag in front, spaces as `[SPACE]`, then the released
//! `grapheme_mtl_merged_expanded_v1.json` (tokenizers BPE).
//!
//! The language steps, and where ferrovox stands on each:
//! * `zh`: words segmented and joined with spaces (`[SPACE]` tokens between words), then every
//!   glyph of category Lo with a Cangjie code (`Cangjie5_TC.json`) becomes `[cj_x]…[cj_.]`, the
//!   glyph's index among glyphs sharing its code appended. Upstream segments with pkuseg, whose
//!   model is a download; ferrovox segments with jieba's dictionary
//!   ([`ferrovox_text::chinese_words`]), so a `[SPACE]` lands where jieba puts a word boundary
//!   and pkuseg may not.
//! * `ja`: upstream turns kanji into hiragana with pykakasi. With the feature `japanese`
//!   (GPL-3.0, on in the `ferrovox` binary) ferrovox reads them with kakasi's dictionary, a
//!   Rust port of pykakasi's ([`ferrovox_text::kanji_as_hiragana`] states where the two part);
//!   without it kanji stay as upstream keeps them without pykakasi (kana-only text is
//!   identical either way).
//! * `ko`: Hangul syllables to conjoining Jamo (arithmetic) and surrounding whitespace trimmed,
//!   as upstream.
//! * `he`, `ru`: upstream adds diacritics (dicta) or stress marks only when those optional
//!   packages are installed; ferrovox leaves the text as upstream does without them.

use std::collections::HashMap;
use std::path::Path;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use super::en::{ids_of, load_vocabulary, SPACE};
use crate::{Error, Result};

/// The 23 languages of the multilingual model (`mtl_tts.SUPPORTED_LANGUAGES`).
pub const LANGUAGES: [(&str, &str); 23] = [
    ("ar", "Arabic"),
    ("da", "Danish"),
    ("de", "German"),
    ("el", "Greek"),
    ("en", "English"),
    ("es", "Spanish"),
    ("fi", "Finnish"),
    ("fr", "French"),
    ("he", "Hebrew"),
    ("hi", "Hindi"),
    ("it", "Italian"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("ms", "Malay"),
    ("nl", "Dutch"),
    ("no", "Norwegian"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("ru", "Russian"),
    ("sv", "Swedish"),
    ("sw", "Swahili"),
    ("tr", "Turkish"),
    ("zh", "Chinese"),
];

/// One of [`LANGUAGES`], by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Language(&'static str);

impl Language {
    /// The language of `code` (any case, as upstream lowercases it); an unsupported code is an
    /// [`Error::Input`] listing the supported ones.
    pub fn parse(code: &str) -> Result<Self> {
        let lower = code.trim().to_lowercase();
        LANGUAGES
            .iter()
            .find(|(c, _)| *c == lower)
            .map(|(c, _)| Self(c))
            .ok_or_else(|| {
                Error::Input(format!(
                    "unsupported language `{code}`; supported: {}",
                    LANGUAGES.map(|(c, _)| c).join(", ")
                ))
            })
    }

    /// The two-letter code.
    pub fn code(&self) -> &'static str {
        self.0
    }

    /// The English name.
    pub fn name(&self) -> &'static str {
        LANGUAGES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map_or("", |(_, n)| n)
    }
}

/// The Cangjie table: each glyph's code with upstream's index suffix (its position among the
/// glyphs sharing that code, from the second on).
#[derive(Debug, Clone, Default)]
struct Cangjie {
    codes: HashMap<char, String>,
}

impl Cangjie {
    /// Reads `Cangjie5_TC.json`: a list of `"glyph\tcode…"` strings.
    fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let entries: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "not a JSON list of \"glyph<TAB>code\" strings: {e}"
            ))
        })?;
        // Upstream keeps the last code of a glyph listed twice, and counts every listing in the
        // code's glyph list (its index is the glyph's first position there).
        let mut code_of: HashMap<String, String> = HashMap::new();
        let mut glyphs_of: HashMap<String, Vec<String>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let mut parts = entry.split('\t');
            let (Some(word), Some(code)) = (parts.next(), parts.next()) else {
                return Err(bad(format!("entry {i} has no tab: {entry:?}")));
            };
            code_of.insert(word.to_string(), code.to_string());
            glyphs_of
                .entry(code.to_string())
                .or_default()
                .push(word.to_string());
        }
        let mut codes = HashMap::new();
        for (word, code) in &code_of {
            let mut chars = word.chars();
            let (Some(glyph), None) = (chars.next(), chars.next()) else {
                continue; // Multi-character words are never looked up (one glyph at a time).
            };
            let index = glyphs_of[code].iter().position(|w| w == word).unwrap_or(0);
            let suffix = if index > 0 {
                index.to_string()
            } else {
                String::new()
            };
            codes.insert(glyph, format!("{code}{suffix}"));
        }
        Ok(Self { codes })
    }

    /// `ChineseCangjieConverter.__call__` after its segmentation.
    fn convert(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 4);
        for c in text.chars() {
            match self.codes.get(&c).filter(|_| c.is_letter_other()) {
                Some(code) => {
                    for letter in code.chars() {
                        out.push_str("[cj_");
                        out.push(letter);
                        out.push(']');
                    }
                    out.push_str("[cj_.]");
                }
                None => out.push(c),
            }
        }
        out
    }
}

/// The multilingual text tokenizer.
#[derive(Debug, Clone)]
pub struct MtlTokenizer {
    inner: tokenizers::Tokenizer,
    cangjie: Cangjie,
    vocab_size: usize,
}

impl MtlTokenizer {
    /// Loads `grapheme_mtl_merged_expanded_v1.json` and, for Chinese, `Cangjie5_TC.json`
    /// (without it Chinese glyphs stay as they are, as upstream does when its download fails).
    /// A file that does not parse, or a vocabulary without `[START]` / `[STOP]`, is an error
    /// naming it.
    pub fn from_files(vocab: &Path, cangjie: Option<&Path>) -> Result<Self> {
        let inner = load_vocabulary(vocab)?;
        let cangjie = cangjie
            .map(Cangjie::from_file)
            .transpose()?
            .unwrap_or_default();
        let vocab_size = inner.get_vocab_size(true);
        // The segmenter's dictionary with the model, not inside the first Chinese request.
        ferrovox_text::load_chinese_segmenter();
        Ok(Self {
            inner,
            cangjie,
            vocab_size,
        })
    }

    /// The string upstream hands its BPE for `text` (after [`super::mtl_punc_norm`]) in
    /// `language`: `[lang]` + the preprocessed text, spaces as `[SPACE]`.
    pub fn preprocess(&self, text: &str, language: Language) -> String {
        let text: String = text.to_lowercase().nfkd().collect();
        let text = match language.code() {
            "zh" => self
                .cangjie
                .convert(&ferrovox_text::chinese_words(&text).join(" ")),
            "ko" => python_strip(&korean_jamo(&text)).to_string(),
            "ja" => japanese(&text),
            _ => text,
        };
        format!("[{}]{}", language.code(), text).replace(' ', SPACE)
    }

    /// Ids of `text` (after [`super::mtl_punc_norm`]) in `language`, without start or stop
    /// tokens, as `MTLTokenizer.encode` gives them.
    pub fn encode(&self, text: &str, language: Language) -> Result<Vec<u32>> {
        ids_of(&self.inner, &self.preprocess(text, language))
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

/// `hiragana_normalize`: kanji read as hiragana, then NFKD again.
#[cfg(feature = "japanese")]
fn japanese(text: &str) -> String {
    ferrovox_text::kanji_as_hiragana(text).nfkd().collect()
}

/// As upstream runs without pykakasi: the text as it is.
#[cfg(not(feature = "japanese"))]
fn japanese(text: &str) -> String {
    text.to_string()
}

/// Whether this build reads Japanese kanji (feature `japanese`).
pub const READS_KANJI: bool = cfg!(feature = "japanese");

/// `korean_normalize`'s syllable decomposition (its range, U+AC00..=U+D7AF, as upstream).
fn korean_jamo(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if !('\u{ac00}'..='\u{d7af}').contains(&c) {
            out.push(c);
            continue;
        }
        let base = c as u32 - 0xac00;
        let jamo = [
            0x1100 + base / (21 * 28),
            0x1161 + (base % (21 * 28)) / 28,
            if base.is_multiple_of(28) {
                0
            } else {
                0x11a7 + base % 28
            },
        ];
        out.extend(
            jamo.iter()
                .filter(|&&j| j != 0)
                .filter_map(|&j| char::from_u32(j)),
        );
    }
    out
}

/// Python's `str.isspace`: Unicode White_Space plus the separators U+001C..U+001F.
pub(crate) fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn python_strip(text: &str) -> &str {
    text.trim_matches(python_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangul_syllables_become_conjoining_jamo() {
        // 한 = ᄒ + ᅡ + ᆫ; 가 has no final.
        assert_eq!(
            korean_jamo("한가"),
            "\u{1112}\u{1161}\u{11ab}\u{1100}\u{1161}"
        );
        assert_eq!(python_strip("\u{1f} a \u{3000}"), "a");
    }

    #[test]
    fn an_unsupported_language_names_the_supported_ones() {
        assert_eq!(Language::parse("ZH").unwrap().name(), "Chinese");
        let e = Language::parse("xx").unwrap_err().to_string();
        assert!(
            e.contains("`xx`") && e.contains("ar, da, de") && e.contains("zh"),
            "{e}"
        );
    }
}
