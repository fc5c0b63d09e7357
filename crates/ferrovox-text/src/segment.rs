//! Chinese word segmentation, for front-ends whose models were trained on segmented text
//! (Chatterbox's multilingual tokenizer puts a `[SPACE]` between words).
//!
//! Segments with jieba's dictionary and its HMM for unknown words (`jieba-rs`, the dictionary
//! of Python's jieba 0.42). Chatterbox's upstream segments with pkuseg instead, whose model is
//! a separate download from GitHub; a segmenter's choice moves a `[SPACE]` between glyphs,
//! never a glyph.

use std::sync::OnceLock;

use jieba_rs::Jieba;

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Builds the segmenter's dictionary now (about 30 MB, a fraction of a second) rather than in
/// the first call of [`chinese_words`].
pub fn load_chinese_segmenter() {
    jieba();
}

/// The words of `text` in order; whitespace is dropped (it separates words already), every
/// other character lands in exactly one word.
pub fn chinese_words(text: &str) -> Vec<&str> {
    jieba()
        .cut(text, true)
        .into_iter()
        .map(|t| t.word)
        .filter(|w| !w.chars().all(char::is_whitespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_keeps_every_glyph() {
        let text = "我爱北京天安门，今天天气很好。 Hello 世界";
        let words = chinese_words(text);
        assert_eq!(
            words,
            [
                "我",
                "爱",
                "北京",
                "天安门",
                "，",
                "今天天气",
                "很",
                "好",
                "。",
                "Hello",
                "世界"
            ]
        );
        let joined: String = words.concat();
        let no_space: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(joined, no_space);
        assert!(chinese_words("").is_empty());
        assert!(chinese_words("   ").is_empty());
    }
}
