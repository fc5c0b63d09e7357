//! Kanji read as hiragana, as Chatterbox's multilingual front end reads them with pykakasi
//! (`hiragana_normalize`): every run of kanji (with the hiragana after it, its okurigana) is
//! replaced by its reading from kakasi's dictionary, a reading that starts with `は` or `へ`
//! gets a space in front, and katakana, kana and everything else stay as they are.
//!
//! The dictionary and the reading are the `kakasi` crate's, a Rust port of pykakasi with its
//! dictionary. pykakasi splits a run of kanji into its dictionary words and applies the
//! `は`/`へ` rule to each; here a run is read whole, so that rule is applied once a run.
//!
//! Feature `japanese`: `kakasi` is **GPL-3.0**, so a binary built with it is GPL-3.0 (as one
//! with `espeak` is GPL-3.0-or-later).

/// Whether `c` is a kanji as upstream tests it (U+4E00–U+9FFF).
fn is_kanji(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// Whether `c` is in the hiragana block (U+3041–U+309F), which holds the voiced and
/// semi-voiced marks NFKD splits off kana (U+3099, U+309A) too.
fn is_hiragana(c: char) -> bool {
    ('\u{3041}'..='\u{309f}').contains(&c)
}

/// `text` with its kanji read as hiragana (see the module's notes).
pub fn kanji_as_hiragana(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    while let Some(start) = rest.find(is_kanji) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let kanji_end = run.find(|c: char| !is_kanji(c)).unwrap_or(run.len());
        let end = run[kanji_end..]
            .find(|c: char| !is_hiragana(c))
            .map_or(run.len(), |e| kanji_end + e);
        let reading = kakasi::convert(&run[..end]).hiragana;
        if reading.starts_with(['は', 'へ']) {
            out.push(' ');
        }
        out.push_str(&reading);
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kanji_are_read_and_kana_kept() {
        assert_eq!(
            kanji_as_hiragana("カタカナとひらがな"),
            "カタカナとひらがな"
        );
        let read = kanji_as_hiragana("東京へ行きます");
        assert!(!read.chars().any(is_kanji), "{read}");
        assert!(read.starts_with("とうきょう"), "{read}");
        assert!(read.ends_with("ます"), "{read}");
        assert_eq!(kanji_as_hiragana(""), "");
        assert_eq!(kanji_as_hiragana("abc 123"), "abc 123");
    }
}
