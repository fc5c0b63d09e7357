//! Piper's espeak-ng phonemizer on the pure-Rust `espeak-ng` port, mirroring
//! `piper/phonemize_espeak.py` and `PiperVoice.phonemize` in `piper/voice.py` (piper-tts 1.8.0).
//!
//! Licence: the `espeak-ng` crate and its data are GPL-3.0-or-later; a binary built with this
//! module (feature `espeak`) falls under GPL-3.0-or-later.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use espeak_ng::phoneme::PhonemeData;
use espeak_ng::translate::{self, phoneme_ipa, CodeMarker, Translator};
use unicode_normalization::UnicodeNormalization;

use crate::sentences::paragraphs;
use crate::{Sentence, TextError};

/// Version of the `espeak-ng` crate whose bundled data this build installs; it names the data
/// directory, so a new version never reads an older version's files. A unit test checks it
/// against `Cargo.lock`.
const ESPEAK_NG_VERSION: &str = "0.2.0";

/// The language whose dictionary is bundled (feature `bundled-data-en` of `espeak-ng`).
const BUNDLED_LANGUAGE: &str = "en";

/// Files without which a data directory is incomplete.
const REQUIRED_DATA_FILES: &[&str] = &["phontab", "phonindex", "intonations", "en_dict"];

/// Clause terminators espeak-ng reports, and those that end a sentence.
const CLAUSE_TERMINATORS: &[char] = &['.', ',', '?', '!', ';', ':'];
const SENTENCE_TERMINATORS: &[char] = &['.', '?', '!'];

/// Text → per-sentence phonemes, as Piper's `PiperVoice.phonemize` with an espeak voice.
///
/// Created once per voice: construction installs the bundled English data into the cache
/// directory if needed, checks the voice and loads the phoneme tables. [`phonemize`] then
/// follows Piper:
///
/// 1. `[[ raw phonemes ]]` blocks (on one line) are taken as phoneme codepoints, joined to the
///    neighbouring sentence as in `voice.py`;
/// 2. the rest goes through espeak-ng clause by clause (`(ipa, terminator)` per clause);
/// 3. per clause, `(lang)` switch flags are removed, the terminator is appended (plus a space
///    after `, : ;`), the result is NFD-normalised and split into codepoints;
/// 4. a clause ending in `. ? !` closes a sentence, as does a paragraph break (blank line) and
///    the end of the text.
///
/// # Differences from Piper
///
/// Piper runs upstream's C espeak-ng 1.52; the port (`espeak-ng` 0.2.0) differs in places:
/// - multi-word dictionary entries such as `(on the)`, `(of a)`, `(was a)`, `(for the)` are
///   not applied (`ɔnðə` comes out as `ˌɔn ðə`);
/// - upstream ends a sentence after `Dr.`/`Mr.` before a capitalised word and reads `$12.50`
///   as "dollar twelve point five zero"; the port keeps one sentence and reads "twelve dollars
///   fifty cents";
/// - an ellipsis or a dash is a clause boundary upstream, not in the port; `e.g.` is read as
///   "for example" upstream, as letters in the port;
/// - clauses with no phonemes (e.g. the second `!` of `?!`) are dropped here, matching
///   upstream, which merges punctuation runs;
/// - a `[[` without a closing `]]` on the same line is plain text here (Piper would cut its
///   last two characters off and take the rest as phonemes).
///
/// The parity test `tests/piper_parity.rs` lists the differences found on Piper's fixtures.
///
/// Each call reads the dictionary from disk again (the port keeps no loaded dictionary), which
/// costs a few milliseconds per paragraph whatever its length.
///
/// [`phonemize`]: EspeakPhonemizer::phonemize
pub struct EspeakPhonemizer {
    /// The voice as given (e.g. `en-us`).
    voice: String,
    data_dir: PathBuf,
    translator: Translator,
    phoneme_data: PhonemeData,
}

impl fmt::Debug for EspeakPhonemizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspeakPhonemizer")
            .field("voice", &self.voice)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// One clause as espeak-ng reports it.
struct Clause<'a> {
    ipa: &'a str,
    terminator: Option<char>,
}

impl EspeakPhonemizer {
    /// Phonemizer for an espeak-ng voice (Piper's `espeak.voice`, e.g. `"en-us"`), with the
    /// bundled data installed under [`default_cache_dir`].
    pub fn new(voice: &str) -> Result<Self, TextError> {
        Self::with_cache_dir(voice, default_cache_dir()?)
    }

    /// As [`EspeakPhonemizer::new`], with the bundled data installed under `cache_dir`
    /// (see [`ensure_bundled_data`]).
    pub fn with_cache_dir(voice: &str, cache_dir: impl AsRef<Path>) -> Result<Self, TextError> {
        let data_dir = ensure_bundled_data(cache_dir.as_ref())?;
        Self::with_data_dir(voice, data_dir)
    }

    /// Phonemizer reading an existing espeak-ng data directory (one written by
    /// [`ensure_bundled_data`], or another `espeak-ng-data` layout the port accepts).
    pub fn with_data_dir(voice: &str, data_dir: impl Into<PathBuf>) -> Result<Self, TextError> {
        let data_dir = data_dir.into();
        if !data_dir.join("phontab").is_file() {
            return Err(TextError::InvalidDataDir { path: data_dir });
        }
        let unknown = || TextError::UnknownVoice {
            voice: voice.to_owned(),
        };
        let tag = translate::normalize_voice_tag(voice);
        let (base, _variant) = translate::split_voice_variant(&tag);
        if base.is_empty() || !voice_file_exists(&data_dir, base) {
            return Err(unknown());
        }
        if translate::resolve_dict_stem(&data_dir, base).is_none() {
            return Err(TextError::VoiceNotBundled {
                voice: voice.to_owned(),
            });
        }
        let mut phoneme_data = PhonemeData::load(&data_dir)?;
        translate::select_phoneme_table(&mut phoneme_data, &data_dir, base)?;
        let translator = Translator::new(&tag, Some(&data_dir))?;
        Ok(Self {
            voice: voice.to_owned(),
            data_dir,
            translator,
            phoneme_data,
        })
    }

    /// The voice name as given.
    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// The espeak-ng data directory in use.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Text → sentences of phonemes, as Piper's `PiperVoice.phonemize`.
    ///
    /// Returns [`TextError::NothingToSpeak`] when no sentence has a phoneme (empty,
    /// whitespace-only or punctuation-only text), never an empty `Vec`.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Sentence>, TextError> {
        let mut sentences: Vec<Vec<String>> = Vec::new();
        let mut after_raw_block = false;
        for part in split_raw_phoneme_blocks(text) {
            match part {
                TextPart::Raw {
                    phonemes,
                    space_before,
                    space_after,
                } => {
                    if sentences.is_empty() {
                        sentences.push(Vec::new());
                    }
                    if let Some(sentence) = sentences.last_mut() {
                        if space_before {
                            sentence.push(" ".to_owned());
                        }
                        sentence.extend(phonemes.trim().chars().map(String::from));
                        if space_after {
                            sentence.push(" ".to_owned());
                        }
                    }
                    after_raw_block = true;
                }
                TextPart::Text(text) => {
                    let mut part_sentences = self.espeak_sentences(text)?.into_iter();
                    if after_raw_block {
                        // The first sentence continues the raw block's sentence.
                        if let (Some(first), Some(last)) =
                            (part_sentences.next(), sentences.last_mut())
                        {
                            last.extend(first);
                        }
                    }
                    sentences.extend(part_sentences);
                    after_raw_block = false;
                }
            }
        }
        let sentences: Vec<Sentence> = sentences
            .into_iter()
            .filter(|phonemes| phonemes.iter().any(|p| !p.trim().is_empty()))
            .map(Sentence::from_phonemes)
            .collect();
        if sentences.is_empty() {
            return Err(TextError::NothingToSpeak);
        }
        Ok(sentences)
    }

    /// Piper's `EspeakPhonemizer.phonemize` for text without raw blocks: sentences of phoneme
    /// codepoints, the last possibly without a terminator.
    fn espeak_sentences(&self, text: &str) -> Result<Vec<Vec<String>>, TextError> {
        let mut sentences = Vec::new();
        for paragraph in paragraphs(text) {
            let clauses_ipa = self.clauses_ipa(paragraph)?;
            let mut sentence: Vec<String> = Vec::new();
            for clause in parse_clauses(&clauses_ipa) {
                let mut phonemes = strip_language_flags(clause.ipa);
                if phonemes.trim().is_empty() {
                    continue; // a punctuation run ("?!", "!!") adds an empty clause
                }
                if let Some(terminator) = clause.terminator {
                    phonemes.push(terminator);
                    if matches!(terminator, ',' | ':' | ';') {
                        phonemes.push(' ');
                    }
                }
                sentence.extend(phonemes.nfd().map(String::from));
                if clause
                    .terminator
                    .is_some_and(|t| SENTENCE_TERMINATORS.contains(&t))
                {
                    sentences.push(std::mem::take(&mut sentence));
                }
            }
            if !sentence.is_empty() {
                sentences.push(sentence);
            }
        }
        Ok(sentences)
    }

    /// The port's IPA for one paragraph: one line per clause, each ending in its terminator
    /// when it has one (`clause<term>\n...`).
    fn clauses_ipa(&self, text: &str) -> Result<String, TextError> {
        // The port holds no interior mutability; a panic leaves nothing half-updated.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut codes = self.translator.translate_to_codes(text)?;
            // Echoed punctuation (quotes, brackets, dashes) is not a clause terminator.
            codes.retain(|code| !matches!(code.marker, Some(CodeMarker::Punctuation(_))));
            Ok::<_, espeak_ng::Error>(phoneme_ipa::codes_to_ipa(
                &codes,
                &self.phoneme_data,
                &self.data_dir,
                &self.translator.options.lang,
                true,
            ))
        }));
        match outcome {
            Ok(result) => Ok(result?),
            Err(payload) => Err(TextError::EspeakPanic {
                message: panic_message(payload.as_ref()),
            }),
        }
    }
}

/// Splits the port's per-clause output into clauses.
fn parse_clauses(clauses_ipa: &str) -> impl Iterator<Item = Clause<'_>> {
    clauses_ipa.lines().map(|line| {
        let line = line.trim();
        match line.char_indices().last() {
            Some((at, c)) if CLAUSE_TERMINATORS.contains(&c) => Clause {
                ipa: line[..at].trim_end(),
                terminator: Some(c),
            },
            _ => Clause {
                ipa: line,
                terminator: None,
            },
        }
    })
}

/// Removes espeak-ng's `(lang)` switch flags, as Piper's `re.sub(r"\([^)]+\)", "", ...)`.
fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut rest = ipa;
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close) if close > 0 => rest = &after[close + 1..],
            _ => {
                out.push('(');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text split around Piper's `[[ raw phonemes ]]` blocks.
#[derive(Debug, PartialEq, Eq)]
enum TextPart<'a> {
    Text(&'a str),
    Raw {
        /// Between the brackets, not yet trimmed.
        phonemes: &'a str,
        /// The text before the block ends with a space.
        space_before: bool,
        /// The text after the block starts with a space.
        space_after: bool,
    },
}

/// Piper's `re.split(r"(\[\[.*?\]\])", text)`: text and raw blocks alternate, starting and
/// ending with (possibly empty) text; a block does not span lines.
fn split_raw_phoneme_blocks(text: &str) -> Vec<TextPart<'_>> {
    let mut parts = Vec::new();
    let mut text_start = 0;
    let mut search = 0;
    while let Some(offset) = text[search..].find("[[") {
        let open = search + offset;
        let inner_start = open + 2;
        let line_end = text[inner_start..]
            .find('\n')
            .map_or(text.len(), |n| inner_start + n);
        match text[inner_start..line_end].find("]]") {
            Some(n) => {
                let close = inner_start + n;
                let before = &text[text_start..open];
                let after = &text[close + 2..];
                parts.push(TextPart::Text(before));
                parts.push(TextPart::Raw {
                    phonemes: &text[inner_start..close],
                    space_before: before.ends_with(' '),
                    space_after: after.starts_with(' '),
                });
                text_start = close + 2;
                search = text_start;
            }
            None => search = open + 1,
        }
    }
    parts.push(TextPart::Text(&text[text_start..]));
    parts
}

/// Whether `lang/` has a voice file for this language tag (matched against the file's
/// `language` lines and its file name, case-insensitively).
fn voice_file_exists(data_dir: &Path, tag: &str) -> bool {
    espeak_ng::voices::list_voices(data_dir)
        .iter()
        .any(|voice| {
            voice
                .languages
                .iter()
                .any(|(language, _)| language.eq_ignore_ascii_case(tag))
                || voice
                    .file
                    .rsplit('/')
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case(tag))
        })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// ferrovox's cache directory: `$FERROVOX_CACHE`, else `$XDG_CACHE_HOME/ferrovox`, else
/// `~/.cache/ferrovox` (from `$HOME`).
pub fn default_cache_dir() -> Result<PathBuf, TextError> {
    cache_dir_from(
        std::env::var_os("FERROVOX_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
    .ok_or(TextError::NoCacheDir)
}

fn cache_dir_from(
    ferrovox_cache: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let non_empty = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(ferrovox_cache) {
        return Some(dir);
    }
    // The XDG spec says to ignore a relative XDG_CACHE_HOME.
    if let Some(dir) = non_empty(xdg_cache_home).filter(|d| d.is_absolute()) {
        return Some(dir.join("ferrovox"));
    }
    non_empty(home).map(|home| home.join(".cache").join("ferrovox"))
}

/// Makes sure the bundled espeak-ng data (phoneme tables, voices and the English dictionary,
/// about 2.7 MB) is installed under `cache_dir` and returns its directory,
/// `<cache_dir>/espeak-ng-data/<espeak-ng crate version>`.
///
/// Safe with concurrent processes: the data is written to a private temporary directory that
/// is then renamed into place, so the directory is either absent or complete. An incomplete
/// directory left by other means is replaced.
pub fn ensure_bundled_data(cache_dir: &Path) -> Result<PathBuf, TextError> {
    let parent = cache_dir.join("espeak-ng-data");
    let data_dir = parent.join(ESPEAK_NG_VERSION);
    if is_complete(&data_dir) {
        return Ok(data_dir);
    }
    let install_error = |source| TextError::DataInstall {
        path: data_dir.clone(),
        source,
    };
    fs::create_dir_all(&parent).map_err(install_error)?;
    let staging = parent.join(format!(".{ESPEAK_NG_VERSION}.{}.tmp", unique_suffix()));
    let installed = fs::create_dir(&staging)
        .and_then(|()| espeak_ng::install_bundled_language(&staging, BUNDLED_LANGUAGE))
        .and_then(|()| move_into_place(&staging, &data_dir));
    // Nothing left after a successful rename; after a failure, our own partial copy.
    let _ = fs::remove_dir_all(&staging);
    installed.map_err(install_error)?;
    Ok(data_dir)
}

/// Renames the complete `staging` directory to `data_dir`, unless another process did first.
fn move_into_place(staging: &Path, data_dir: &Path) -> std::io::Result<()> {
    match fs::rename(staging, data_dir) {
        Ok(()) => Ok(()),
        Err(_) if is_complete(data_dir) => Ok(()), // another process won the race
        Err(error) if data_dir.exists() => {
            // An incomplete directory not written by us: move it aside, then retry once.
            let stale = data_dir.with_extension(format!("{}.stale", unique_suffix()));
            fs::rename(data_dir, &stale).map_err(|_| error)?;
            let result = fs::rename(staging, data_dir);
            let _ = fs::remove_dir_all(&stale);
            match result {
                Err(_) if is_complete(data_dir) => Ok(()),
                other => other,
            }
        }
        Err(error) => Err(error),
    }
}

fn is_complete(data_dir: &Path) -> bool {
    REQUIRED_DATA_FILES
        .iter()
        .all(|file| data_dir.join(file).is_file())
        && data_dir.join("lang").is_dir()
}

/// Process id, time and a per-process counter: unique across processes and threads.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_version_matches_cargo_lock() {
        let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
        let lock = std::fs::read_to_string(lock_path).expect("workspace Cargo.lock");
        let version = lock
            .split("[[package]]")
            .find(|package| package.contains("\nname = \"espeak-ng\"\n"))
            .and_then(|package| package.split("\nversion = \"").nth(1))
            .and_then(|rest| rest.split('"').next());
        assert_eq!(version, Some(ESPEAK_NG_VERSION), "update ESPEAK_NG_VERSION");
    }

    #[test]
    fn cache_dir_resolution_order() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_dir_from(some("/c"), some("/x"), some("/h")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir_from(some(""), some("/x"), some("/h")),
            Some(PathBuf::from("/x/ferrovox"))
        );
        assert_eq!(
            cache_dir_from(None, some("relative"), some("/h")),
            Some(PathBuf::from("/h/.cache/ferrovox"))
        );
        assert_eq!(cache_dir_from(None, None, None), None);
    }

    #[test]
    fn language_flags_are_removed_like_piper() {
        assert_eq!(strip_language_flags("(fr)bɔ̃ʒuʁ(en) wˈɜːld"), "bɔ̃ʒuʁ wˈɜːld");
        assert_eq!(strip_language_flags("a () b ( c"), "a () b ( c");
        assert_eq!(strip_language_flags("plain"), "plain");
    }

    #[test]
    fn clauses_keep_their_terminators() {
        let clauses: Vec<(&str, Option<char>)> = parse_clauses("həlˈoʊ,\nwˈɜːld.\n!\nbaɪ")
            .map(|c| (c.ipa, c.terminator))
            .collect();
        assert_eq!(
            clauses,
            [
                ("həlˈoʊ", Some(',')),
                ("wˈɜːld", Some('.')),
                ("", Some('!')),
                ("baɪ", None)
            ]
        );
    }

    #[test]
    fn raw_blocks_split_like_piper_regex() {
        use TextPart::{Raw, Text};
        assert_eq!(
            split_raw_phoneme_blocks("say [[ hɛloʊ ]] now"),
            [
                Text("say "),
                Raw {
                    phonemes: " hɛloʊ ",
                    space_before: true,
                    space_after: true
                },
                Text(" now")
            ]
        );
        assert_eq!(split_raw_phoneme_blocks("no blocks"), [Text("no blocks")]);
        assert_eq!(
            split_raw_phoneme_blocks("[[a\n]] [[b]]"),
            [
                Text("[[a\n]] "),
                Raw {
                    phonemes: "b",
                    space_before: true,
                    space_after: false
                },
                Text("")
            ]
        );
    }
}
