//! Plain-text sentence splitter for callers that synthesise sentence by sentence (ferrovox's
//! own heuristic; Piper splits inside espeak-ng instead).

/// Abbreviations after which a `.` never ends a sentence (compared case-insensitively, without
/// their final dot). Titles come before a name, so "Dr. Smith" stays one sentence.
const NEVER_FINAL_ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "mx", "dr", "prof", "st", "sr", "jr", "rev", "hon", "gen", "col", "capt",
    "lt", "sgt", "gov", "sen", "rep", "pres", "messrs", "mt", "ft", "vs", "e.g", "i.e", "cf",
    "approx",
];

/// Abbreviations that do not end a sentence when a number follows ("No. 5", "Fig. 3").
const BEFORE_NUMBER_ABBREVIATIONS: &[&str] = &["no", "nos", "fig", "vol", "pp", "p", "ch", "sec"];

/// Splits plain text into sentences, returned as trimmed slices of `text`.
///
/// - A sentence ends after a run of `.`, `!`, `?` or `…` (with any closing quotes or brackets
///   after it) that is followed by whitespace or the end of the text, so `3.14`, `e.g.x` and
///   `example.com` never split.
/// - It does not end when the next word starts with a lowercase letter (`"Wait..." she said`,
///   `approx. five`), after a title or common abbreviation (`Mr.`, `Mrs.`, `Dr.`, `St.`,
///   `e.g.`, `i.e.`, `vs.`, …), after `No.`/`Fig.`/`Vol.`/`pp.` when a number follows, after
///   a single-capital initial (`J. R. R. Tolkien`; `I` is not an initial) or after a list
///   number at the start of a sentence (`1. First`).
///   `etc.` and other abbreviations end a sentence only when a capitalised word follows.
/// - A blank line (paragraph break) always ends a sentence; a single line break is a space, as
///   in hard-wrapped prose.
/// - A fragment without any letter or digit (e.g. a lone `...`) is not a sentence: it stays
///   with the sentence before it in the same paragraph, or with the one after it; a paragraph
///   with no letter or digit at all yields nothing.
///
/// ```
/// let text = "Dr. Smith paid $3.50. Was it worth it?! Maybe... not.\n\nNew paragraph";
/// assert_eq!(
///     ferrovox_text::split_sentences(text),
///     ["Dr. Smith paid $3.50.", "Was it worth it?!", "Maybe... not.", "New paragraph"]
/// );
/// ```
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    for paragraph in paragraphs(text) {
        split_paragraph(paragraph, &mut sentences);
    }
    sentences
}

/// Splits `text` at blank lines (a line break, optional spaces or tabs, another line break).
/// Empty and whitespace-only paragraphs are skipped.
pub(crate) fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (paragraph, tail) = match paragraph_break(rest) {
            Some((start, end)) => (&rest[..start], &rest[end..]),
            None => (rest, ""),
        };
        rest = tail;
        if !paragraph.trim().is_empty() {
            return Some(paragraph);
        }
    })
}

/// Byte range of the first blank-line break in `text`, whitespace around it included.
fn paragraph_break(text: &str) -> Option<(usize, usize)> {
    let mut search_from = 0;
    while let Some(offset) = text[search_from..].find('\n') {
        let first = search_from + offset;
        let after = &text[first + 1..];
        let gap = after.len() - after.trim_start_matches([' ', '\t', '\r']).len();
        if after[gap..].starts_with('\n') {
            let end = first + 1 + gap + 1;
            let tail = &text[end..];
            return Some((first, text.len() - tail.trim_start().len()));
        }
        search_from = first + 1;
    }
    None
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

fn is_opener(c: char) -> bool {
    matches!(c, '"' | '\'' | '(' | '[' | '{' | '“' | '‘' | '«')
}

fn has_word(fragment: &str) -> bool {
    fragment.chars().any(char::is_alphanumeric)
}

fn split_paragraph<'a>(paragraph: &'a str, sentences: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(paragraph.len(), |&(b, _)| b);
    let mut start = 0; // byte offset of the current sentence
    let mut last_start = None; // byte offset of the last sentence pushed from this paragraph
    let mut i = 0;
    while i < chars.len() {
        if !is_terminator(chars[i].1) {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < chars.len() && is_terminator(chars[i].1) {
            i += 1;
        }
        let run = &paragraph[byte_at(run_start)..byte_at(i)];
        while i < chars.len() && is_closer(chars[i].1) {
            i += 1;
        }
        if i < chars.len() && !chars[i].1.is_whitespace() {
            continue; // "3.14", "e.g.x", "example.com"
        }
        let end = byte_at(i);
        let next = paragraph[end..]
            .trim_start()
            .trim_start_matches(is_opener)
            .chars()
            .next();
        let before = &paragraph[start..byte_at(run_start)];
        if ends_sentence(run, before, next) && has_word(&paragraph[start..end]) {
            sentences.push(paragraph[start..end].trim());
            last_start = Some(start);
            start = end;
        }
    }
    let rest = paragraph[start..].trim();
    if has_word(rest) {
        sentences.push(rest);
    } else if let (false, Some(last_start)) = (rest.is_empty(), last_start) {
        // Trailing punctuation stays with the last sentence of this paragraph.
        sentences.pop();
        sentences.push(paragraph[last_start..].trim());
    }
}

/// Whether the terminator `run`, preceded by the sentence text `before` and followed by the
/// word starting with `next`, ends the sentence.
fn ends_sentence(run: &str, before: &str, next: Option<char>) -> bool {
    let Some(next) = next else {
        return true;
    };
    if next.is_lowercase() {
        return false;
    }
    if run != "." {
        return true; // ! ? … and runs of them
    }
    let word = before
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_start_matches(is_opener);
    let lower = word.to_lowercase();
    if NEVER_FINAL_ABBREVIATIONS.contains(&lower.as_str())
        || (next.is_ascii_digit() && BEFORE_NUMBER_ABBREVIATIONS.contains(&lower.as_str()))
    {
        return false;
    }
    let mut letters = word.chars();
    if let (Some(initial), None) = (letters.next(), letters.next()) {
        if initial.is_uppercase() && initial != 'I' {
            return false; // an initial: "J. R. R. Tolkien"
        }
    }
    let list_number =
        before.trim() == word && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit());
    !list_number
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   \n\n  ", &[]),
            ("Hello world", &["Hello world"]),
            ("Hello world.", &["Hello world."]),
            ("One. Two! Three? Four", &["One.", "Two!", "Three?", "Four"]),
            ("Really?! Yes!!! Ok.", &["Really?!", "Yes!!!", "Ok."]),
            (
                "Mr. and Mrs. Smith met Dr. Jones.",
                &["Mr. and Mrs. Smith met Dr. Jones."],
            ),
            (
                "He lives on St. James St. in town.",
                &["He lives on St. James St. in town."],
            ),
            (
                "Fruit, e.g. apples, i.e. food. Next.",
                &["Fruit, e.g. apples, i.e. food.", "Next."],
            ),
            ("Cats vs. Dogs is a film.", &["Cats vs. Dogs is a film."]),
            (
                "Pens, paper, etc. are here.",
                &["Pens, paper, etc. are here."],
            ),
            (
                "Pens, paper, etc. The end.",
                &["Pens, paper, etc.", "The end."],
            ),
            ("Pi is 3.14 roughly. Yes.", &["Pi is 3.14 roughly.", "Yes."]),
            ("It cost $12.50. Cheap.", &["It cost $12.50.", "Cheap."]),
            ("Version 2.0.1 is out.", &["Version 2.0.1 is out."]),
            ("See example.com for more.", &["See example.com for more."]),
            ("Wait... what? No.", &["Wait... what?", "No."]),
            ("I don't know... Maybe.", &["I don't know...", "Maybe."]),
            ("Well… I see.", &["Well…", "I see."]),
            (
                "He said \"Hi.\" Then he left.",
                &["He said \"Hi.\"", "Then he left."],
            ),
            ("\"Really?\" she asked.", &["\"Really?\" she asked."]),
            ("(It was late.) We left.", &["(It was late.)", "We left."]),
            (
                "J. R. R. Tolkien wrote it.",
                &["J. R. R. Tolkien wrote it."],
            ),
            ("So did I. Then we left.", &["So did I.", "Then we left."]),
            ("1. First item", &["1. First item"]),
            (
                "It is 10 a.m. Come early.",
                &["It is 10 a.m.", "Come early."],
            ),
            ("It is 10 a.m. sharp.", &["It is 10 a.m. sharp."]),
            ("Line one\nline two.", &["Line one\nline two."]),
            (
                "First para\n\nSecond para.",
                &["First para", "Second para."],
            ),
            ("End.\r\n \r\nNext.", &["End.", "Next."]),
            ("A.\n\n\n\nB.", &["A.", "B."]),
            ("Hello. ... World.", &["Hello.", "... World."]),
            ("Hello world. ...", &["Hello world. ..."]),
            ("?!...", &[]),
            ("... Hello.", &["... Hello."]),
            ("Go to No. 5 now.", &["Go to No. 5 now."]),
            ("No. I won't.", &["No.", "I won't."]),
            ("See Fig. 3 below.", &["See Fig. 3 below."]),
            ("Ünïcödé. Ça va? Oui.", &["Ünïcödé.", "Ça va?", "Oui."]),
        ];
        for (text, expected) in cases {
            assert_eq!(split_sentences(text), *expected, "text: {text:?}");
        }
    }

    #[test]
    fn paragraphs_split_at_blank_lines_only() {
        let found: Vec<&str> = paragraphs("a\nb\n\n c \n\t\n\nd\n").collect();
        assert_eq!(found, ["a\nb", "c ", "d\n"]);
        assert_eq!(paragraphs("").count(), 0);
        assert_eq!(paragraphs("\n\n\n").count(), 0);
    }
}
