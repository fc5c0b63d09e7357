//! Text front ends.

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrovox_chatterbox::tokenizer::{
    mtl_punc_norm, punc_norm, turbo_punc_norm, EnTokenizer, Language, MtlTokenizer, TurboTokenizer,
    LANGUAGES,
};
use ferrovox_text::{chunk_text, normalize_english, split_sentences, EspeakPhonemizer};

/// The first byte picks a parameter (a chunk size, a language); the rest is the text.
fn split(bytes: &[u8]) -> (u8, String) {
    match bytes.split_first() {
        Some((&first, rest)) => (first, String::from_utf8_lossy(rest).into_owned()),
        None => (0, String::new()),
    }
}

pub(super) fn normalize_split_chunk(bytes: &[u8]) -> Result<(), String> {
    let (first, text) = split(bytes);
    let _ = normalize_english(&text);
    let _ = split_sentences(&text);
    let max = 1 + first as usize;
    for chunk in chunk_text(&text, max) {
        let n = chunk.text.chars().count();
        if n > max {
            return Err(format!("a chunk of {n} characters, over {max}"));
        }
    }
    Ok(())
}

pub(super) fn phonemize(bytes: &[u8]) -> Result<(), String> {
    static PHONEMIZER: OnceLock<Result<EspeakPhonemizer, String>> = OnceLock::new();
    let phonemizer = PHONEMIZER
        .get_or_init(|| EspeakPhonemizer::new("en-us").map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("the phonemizer did not load: {e}"))?;
    let (_, text) = split(bytes);
    let _ = phonemizer.phonemize(&text);
    Ok(())
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/chatterbox/tests/fixtures")
}

type Tokenizers = (EnTokenizer, MtlTokenizer, TurboTokenizer);
static TOKENIZERS: OnceLock<Result<Tokenizers, String>> = OnceLock::new();

/// The tokenizers' files and the Chinese segmenter's dictionary (tens of MB), loaded once.
pub(super) fn load_chatterbox_tokenizers() {
    let _ = tokenizers();
    ferrovox_text::load_chinese_segmenter();
}

fn tokenizers() -> &'static Result<Tokenizers, String> {
    TOKENIZERS.get_or_init(|| {
        let dir = fixtures();
        let en = EnTokenizer::from_file(&dir.join("t3_tokenizer_vocab.json"));
        let mtl = MtlTokenizer::from_files(
            &dir.join("mtl_tokenizer_vocab.json"),
            Some(&dir.join("mtl_cangjie.json")),
        );
        let turbo = TurboTokenizer::from_dir(&dir.join("turbo_tokenizer"));
        Ok((
            en.map_err(|e| e.to_string())?,
            mtl.map_err(|e| e.to_string())?,
            turbo.map_err(|e| e.to_string())?,
        ))
    })
}

pub(super) fn chatterbox_tokenizers(bytes: &[u8]) -> Result<(), String> {
    let (en, mtl, turbo) = tokenizers()
        .as_ref()
        .map_err(|e| format!("the tokenizers did not load: {e}"))?;
    let (first, text) = split(bytes);
    let code = LANGUAGES[first as usize % LANGUAGES.len()].0;
    let language = Language::parse(code).map_err(|e| e.to_string())?;
    let ids = mtl
        .encode(&mtl_punc_norm(&text), language)
        .map_err(|e| e.to_string())?;
    if let Some(id) = ids.iter().find(|&&i| i as usize >= mtl.vocab_size()) {
        return Err(format!("multilingual id {id} outside the vocabulary"));
    }
    let ids = en.encode(&punc_norm(&text)).map_err(|e| e.to_string())?;
    if let Some(id) = ids.iter().find(|&&i| i as usize >= en.vocab_size()) {
        return Err(format!("English id {id} outside the vocabulary"));
    }
    let ids = turbo
        .encode(&turbo_punc_norm(&text))
        .map_err(|e| e.to_string())?;
    if let Some(id) = ids.iter().find(|&&i| i as usize >= turbo.vocab_size()) {
        return Err(format!("Turbo id {id} outside the vocabulary"));
    }
    // A language code from the text itself: known, or refused with the supported list.
    let code: String = text.chars().take(8).collect();
    if let Err(e) = Language::parse(&code) {
        if !e.to_string().contains("supported") {
            return Err(format!("an unknown language refused without the list: {e}"));
        }
    }
    Ok(())
}
