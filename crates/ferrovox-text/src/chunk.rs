//! Long-input chunking: text of any length becomes pieces of bounded size, cut at sentence
//! ends where possible, else at clause punctuation, else between words. A piece cut inside a
//! sentence says so, so the audio of the pieces can be crossfaded instead of separated by a
//! pause.

use crate::split_sentences;

/// A piece of the input, a slice of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextChunk<'a> {
    /// The text of the piece.
    pub text: &'a str,
    /// Whether the piece ends at a sentence end (false when a long sentence was cut).
    pub ends_sentence: bool,
}

/// Cuts `text` into chunks of at most `max_chars` characters (a single word longer than that
/// is cut between characters). Consecutive whole sentences share a chunk while they fit.
///
/// ```
/// use ferrovox_text::chunk_text;
/// let chunks = chunk_text("One. Two, three four five six.", 12);
/// let texts: Vec<_> = chunks.iter().map(|c| (c.text, c.ends_sentence)).collect();
/// assert_eq!(texts, [("One.", true), ("Two,", false), ("three four", false), ("five six.", true)]);
/// ```
pub fn chunk_text(text: &str, max_chars: usize) -> Vec<TextChunk<'_>> {
    let max_chars = max_chars.max(1);
    let mut chunks = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for sentence in split_sentences(text) {
        let start = offset_in(text, sentence);
        let end = start + sentence.len();
        if let Some((s, _)) = run {
            if chars(&text[s..end]) <= max_chars {
                run = Some((s, end));
                continue;
            }
            flush(text, &mut run, &mut chunks);
        }
        if chars(sentence) <= max_chars {
            run = Some((start, end));
        } else {
            cut_sentence(sentence, max_chars, &mut chunks);
        }
    }
    flush(text, &mut run, &mut chunks);
    chunks
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Byte offset of `part`, a subslice of `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

fn flush<'a>(text: &'a str, run: &mut Option<(usize, usize)>, out: &mut Vec<TextChunk<'a>>) {
    if let Some((s, e)) = run.take() {
        out.push(TextChunk {
            text: &text[s..e],
            ends_sentence: true,
        });
    }
}

/// Cuts one overlong sentence at clause punctuation, then between words, then between chars.
fn cut_sentence<'a>(sentence: &'a str, max_chars: usize, out: &mut Vec<TextChunk<'a>>) {
    let mut pieces = Vec::new();
    for clause in split_after(sentence, |w| w.ends_with([',', ';', ':', '—', '–'])) {
        if chars(clause) <= max_chars {
            pieces.push(clause);
            continue;
        }
        for word_run in pack(split_after(clause, |_| true), max_chars, clause) {
            if chars(word_run) <= max_chars {
                pieces.push(word_run);
            } else {
                pieces.extend(split_chars(word_run, max_chars));
            }
        }
    }
    let packed = pack(pieces, max_chars, sentence);
    let last = packed.len().saturating_sub(1);
    out.extend(packed.into_iter().enumerate().map(|(i, text)| TextChunk {
        text,
        ends_sentence: i == last,
    }));
}

/// Splits at whitespace after words that satisfy `cut`, returning trimmed subslices.
fn split_after(text: &str, cut: impl Fn(&str) -> bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = None;
    let mut word_start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        if c.is_whitespace() {
            if let Some(ws) = word_start.take() {
                if cut(&text[ws..i]) {
                    parts.push(&text[start.take().unwrap_or(ws)..i]);
                }
            }
        } else {
            word_start.get_or_insert(i);
            start.get_or_insert(i);
        }
    }
    if let Some(s) = start {
        parts.push(text[s..].trim_end());
    }
    parts
}

/// Greedily merges consecutive subslices of `whole` while the merged span fits.
fn pack<'a>(parts: Vec<&'a str>, max_chars: usize, whole: &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut span: Option<(usize, usize)> = None;
    for part in parts {
        let (s, e) = (offset_in(whole, part), offset_in(whole, part) + part.len());
        match span {
            Some((ss, _)) if chars(&whole[ss..e]) <= max_chars => span = Some((ss, e)),
            Some((ss, se)) => {
                out.push(&whole[ss..se]);
                span = Some((s, e));
            }
            None => span = Some((s, e)),
        }
    }
    if let Some((s, e)) = span {
        out.push(&whole[s..e]);
    }
    out
}

fn split_chars(word: &str, max_chars: usize) -> Vec<&str> {
    let cuts: Vec<usize> = word
        .char_indices()
        .map(|(i, _)| i)
        .step_by(max_chars)
        .chain(std::iter::once(word.len()))
        .collect();
    cuts.windows(2).map(|w| &word[w[0]..w[1]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(chunks: &[TextChunk<'a>]) -> Vec<(&'a str, bool)> {
        chunks.iter().map(|c| (c.text, c.ends_sentence)).collect()
    }

    #[test]
    fn short_text_is_one_chunk() {
        let text = "Hello there. How are you? Fine.";
        assert_eq!(texts(&chunk_text(text, 500)), [(text, true)]);
    }

    #[test]
    fn sentences_group_up_to_the_limit() {
        let c = chunk_text("Aaaa bbbb. Cccc dddd. Eeee ffff.", 21);
        assert_eq!(
            texts(&c),
            [("Aaaa bbbb. Cccc dddd.", true), ("Eeee ffff.", true)]
        );
    }

    #[test]
    fn an_overlong_sentence_is_cut_at_clauses_then_words() {
        let c = chunk_text("First part, second part; then a much longer tail here.", 16);
        assert_eq!(
            texts(&c),
            [
                ("First part,", false),
                ("second part;", false),
                ("then a much", false),
                ("longer tail", false),
                ("here.", true)
            ]
        );
        assert!(c.iter().all(|c| c.text.chars().count() <= 16));
    }

    #[test]
    fn a_giant_word_is_cut_between_characters_on_char_boundaries() {
        let word = "é".repeat(25);
        let c = chunk_text(&word, 10);
        assert_eq!(c.len(), 3);
        assert_eq!(c.iter().map(|c| c.text).collect::<String>(), word);
        assert_eq!(
            c.iter().map(|c| c.ends_sentence).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn twenty_pages_keep_every_word_in_order() {
        let sentence = "The quick brown fox jumps over the lazy dog, again and again; ";
        let page: String = (0..400)
            .map(|i| format!("{sentence}number {i}. "))
            .collect();
        let chunks = chunk_text(&page, 300);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 300));
        let joined: Vec<&str> = chunks
            .iter()
            .flat_map(|c| c.text.split_whitespace())
            .collect();
        assert_eq!(joined, page.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn empty_text_gives_nothing() {
        assert!(chunk_text("   \n\n ", 100).is_empty());
    }
}
