//! Mirrors `punc_norm` of `chatterbox/tts.py` and of `chatterbox/mtl_tts.py`, step for step
//! (their quirks included: spaces are collapsed before `...` becomes `, `, so "a... b" keeps two
//! spaces). The multilingual one also counts CJK sentence ends as ends.

/// What upstream says for empty text; ferrovox refuses empty text before it gets here, but the
/// function keeps upstream's behaviour.
const EMPTY: &str = "You need to add some text for me to talk.";

/// Upstream's replacements, in its order.
const REPLACEMENTS: [(&str, &str); 12] = [
    ("...", ", "),
    ("…", ", "),
    (":", ","),
    (" - ", ", "),
    (";", ", "),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", "\""),
    ("”", "\""),
    ("‘", "'"),
    ("’", "'"),
];

/// What `tts_turbo.py` keeps that `tts.py` replaces.
const TURBO_KEEPS: [&str; 3] = ["...", " - ", ";"];

/// Sentence ends of `tts.py`.
const ENDS: [&str; 5] = [".", "!", "?", "-", ","];

/// Sentence ends of `mtl_tts.py`.
const MTL_ENDS: [&str; 10] = [".", "!", "?", "-", ",", "、", "，", "。", "？", "！"];

/// Normalizes punctuation the way upstream does before tokenizing: a capital first letter,
/// single spaces, uncommon punctuation replaced, and a full stop added where the text does not
/// end like a sentence.
pub fn punc_norm(text: &str) -> String {
    normalize(text, &[], &ENDS)
}

/// [`punc_norm`] of the multilingual model (`mtl_tts.punc_norm`): CJK sentence ends count too.
pub fn mtl_punc_norm(text: &str) -> String {
    normalize(text, &[], &MTL_ENDS)
}

/// [`punc_norm`] of Turbo (`tts_turbo.punc_norm`): `...`, ` - ` and `;` stay as they are.
pub fn turbo_punc_norm(text: &str) -> String {
    normalize(text, &TURBO_KEEPS, &ENDS)
}

/// Upstream's steps, the [`REPLACEMENTS`] but those of `kept`.
fn normalize(text: &str, kept: &[&str], ends: &[&str]) -> String {
    if text.is_empty() {
        return EMPTY.to_string();
    }
    let mut chars = text.chars();
    let first = chars.next().expect("not empty");
    // Python's `str.islower()` on one character; `upper()` may give several characters.
    let mut t = if first.is_lowercase() {
        first.to_uppercase().chain(chars).collect::<String>()
    } else {
        text.to_string()
    };
    // `" ".join(text.split())`: Python splits on its own whitespace set.
    t = t
        .split(super::mtl::python_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for (old, new) in REPLACEMENTS.iter().filter(|(old, _)| !kept.contains(old)) {
        t = t.replace(old, new);
    }
    let mut t = t.trim_end_matches(' ').to_string();
    if !ends.iter().any(|e| t.ends_with(e)) {
        t.push('.');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::{mtl_punc_norm, punc_norm};

    #[test]
    fn keeps_upstreams_quirks() {
        assert_eq!(punc_norm("hello there: 2 foxes!"), "Hello there, 2 foxes!");
        assert_eq!(punc_norm("Wait... what?"), "Wait,  what?");
        assert_eq!(punc_norm("“It’s fine.”"), "\"It's fine.\".");
        assert_eq!(punc_norm(""), "You need to add some text for me to talk.");
        assert_eq!(punc_norm("a  b\tc"), "A b c.");
        assert_eq!(punc_norm("a\u{1f}b"), "A b.");
        assert_eq!(punc_norm("你好。"), "你好。.");
        assert_eq!(mtl_punc_norm("你好。"), "你好。");
    }
}
