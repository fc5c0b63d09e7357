//! The text front end on whatever a client sends: any Unicode, runs of punctuation, digits,
//! currency, emoji, control characters. Normalizing never panics; sentences and chunks are
//! pieces of the text in order, none longer than asked, and together they keep every letter
//! and digit (a piece with neither, only punctuation or symbols, may be dropped: nothing in it
//! is spoken).

use ferrovox_text::{chunk_text, normalize_english, split_sentences};
use proptest::prelude::*;

/// Text a client could send: mostly words and the characters the splitters look at.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z]{1,12}",
        2 => Just(" ".to_string()),
        2 => prop::sample::select(vec![".", "!", "?", "...", ",", ";", ":", "—", "\u{2026}", "\n\n", "\n", "\t"]).prop_map(str::to_string),
        1 => "[0-9]{1,8}([.,][0-9]{1,3})?",
        1 => prop::sample::select(vec!["$", "€", "£", "%", "Dr.", "Mr.", "e.g.", "U.S.", "3.50", "1st", "#"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["😀", "🙂", "日本語", "Ünïcödé", "\u{0}", "\u{200b}", "\u{feff}", "\r"]).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

/// What must not be lost: the letters and digits.
fn spoken(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// Where `piece` (a slice of `text`) starts in `text`.
fn offset(text: &str, piece: &str) -> usize {
    piece.as_ptr() as usize - text.as_ptr() as usize
}

proptest! {
    // No regression files: a failure is turned into a named test instead.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn normalizing_takes_any_text(t in text()) {
        let _ = normalize_english(&t);
    }

    #[test]
    fn sentences_are_the_text_in_order(t in text()) {
        let sentences = split_sentences(&t);
        let mut at = 0;
        for s in &sentences {
            let start = offset(&t, s);
            prop_assert!(start >= at, "{s:?} is out of order");
            prop_assert!(!s.trim().is_empty(), "an empty sentence");
            at = start + s.len();
        }
        let kept: String = sentences.iter().map(|s| spoken(s)).collect();
        prop_assert_eq!(kept, spoken(&t));
    }

    #[test]
    fn chunks_fit_and_keep_the_text(t in text(), max in 1usize..120) {
        let chunks = chunk_text(&t, max);
        let mut at = 0;
        for c in &chunks {
            prop_assert!(c.text.chars().count() <= max, "{:?} is over {max} characters", c.text);
            prop_assert!(!c.text.trim().is_empty(), "an empty chunk");
            let start = offset(&t, c.text);
            prop_assert!(start >= at, "{:?} is out of order", c.text);
            at = start + c.text.len();
        }
        let kept: String = chunks.iter().map(|c| spoken(c.text)).collect();
        prop_assert_eq!(kept, spoken(&t));
    }
}
