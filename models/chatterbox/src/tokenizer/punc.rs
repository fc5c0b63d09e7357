//! Mirrors `punc_norm` of `chatterbox/tts.py`, step for step (its quirks included: spaces are
//! collapsed before `...` becomes `, `, so "a... b" keeps two spaces).

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

/// Normalizes punctuation the way upstream does before tokenizing: a capital first letter,
/// single spaces, uncommon punctuation replaced, and a full stop added where the text does not
/// end like a sentence.
pub fn punc_norm(text: &str) -> String {
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
    // `" ".join(text.split())`: Python splits on Unicode whitespace.
    t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    for (old, new) in REPLACEMENTS {
        t = t.replace(old, new);
    }
    let mut t = t.trim_end_matches(' ').to_string();
    if ![".", "!", "?", "-", ","].iter().any(|e| t.ends_with(e)) {
        t.push('.');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::punc_norm;

    #[test]
    fn keeps_upstreams_quirks() {
        assert_eq!(punc_norm("hello there: 2 foxes!"), "Hello there, 2 foxes!");
        assert_eq!(punc_norm("Wait... what?"), "Wait,  what?");
        assert_eq!(punc_norm("“It’s fine.”"), "\"It's fine.\".");
        assert_eq!(punc_norm(""), "You need to add some text for me to talk.");
        assert_eq!(punc_norm("a  b\tc"), "A b c.");
    }
}
