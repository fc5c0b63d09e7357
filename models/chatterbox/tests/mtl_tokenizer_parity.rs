//! The multilingual text front end against upstream's `mtl_tts.punc_norm` + `MTLTokenizer` on
//! the synthetic files of `gen_mtl_tokenizer.py`, sentences in all 23 languages: identical
//! normalized text, BPE input and ids, except where ferrovox is degraded (Japanese kanji, kept
//! as upstream keeps them without pykakasi; listed). Chinese is upstream with jieba segmenting
//! in pkuseg's place, and ferrovox's segmenter reproduces jieba's words on a set of sentences.

mod common;

use ferrovox_chatterbox::tokenizer::{
    mtl_punc_norm, Language, MtlTokenizer, LANGUAGES, READS_KANJI,
};

fn fixture() -> (MtlTokenizer, Vec<serde_json::Value>) {
    let dir = common::fixtures();
    let tok = MtlTokenizer::from_files(
        &dir.join("mtl_tokenizer_vocab.json"),
        Some(&dir.join("mtl_cangjie.json")),
    )
    .unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("mtl_tokenizer.json")).unwrap()).unwrap();
    (tok, doc["cases"].as_array().unwrap().clone())
}

#[test]
fn ids_match_upstream_in_every_language() {
    let (tok, cases) = fixture();
    let mut languages = std::collections::BTreeSet::new();
    let mut kanji_differ = Vec::new();
    let mut segmented_differ = 0;
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let code = case["language"].as_str().unwrap();
        let language = Language::parse(code).unwrap();
        languages.insert(code);
        let norm = mtl_punc_norm(text);
        assert_eq!(
            norm,
            case["punc_norm"].as_str().unwrap(),
            "punc_norm of {text:?}"
        );
        // Japanese: ferrovox is upstream with pykakasi where it reads kanji, else without.
        let (input_key, ids_key) = if code == "ja" && !READS_KANJI {
            ("encode_input_without_kakasi", "ids_without_kakasi")
        } else {
            ("encode_input", "ids")
        };
        assert_eq!(
            tok.preprocess(&norm, language),
            case[input_key].as_str().unwrap(),
            "{code}: BPE input of {norm:?}"
        );
        let want: Vec<u32> = serde_json::from_value(case[ids_key].clone()).unwrap();
        let got = tok.encode(&norm, language).unwrap();
        assert_eq!(got, want, "{code}: ids of {norm:?}");
        if code == "zh" && case["ids"] != case["ids_without_segmenter"] {
            segmented_differ += 1;
        }
        if code == "ja" && case["ids"] != case["ids_without_kakasi"] {
            kanji_differ.push(text.to_string());
        }
    }
    assert_eq!(languages.len(), LANGUAGES.len(), "every language has cases");
    eprintln!(
        "{} cases in {} languages: identical (kanji read: {READS_KANJI}); the Japanese \
         sentences whose ids pykakasi changes: {kanji_differ:?}",
        cases.len(),
        languages.len()
    );
    // Segmentation puts a `[SPACE]` into every Chinese sentence of more than one word.
    let zh_cases = cases.iter().filter(|c| c["language"] == "zh").count();
    assert_eq!(
        segmented_differ, zh_cases,
        "segmentation changed {segmented_differ} of {zh_cases}"
    );
    // The two fixture sentences with kanji, and only those.
    assert_eq!(kanji_differ.len(), 2, "{kanji_differ:?}");
    assert!(kanji_differ
        .iter()
        .all(|t| t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))));
}

#[test]
fn chinese_glyphs_become_cangjie_codes_only_with_the_table() {
    let dir = common::fixtures();
    let without = MtlTokenizer::from_files(&dir.join("mtl_tokenizer_vocab.json"), None).unwrap();
    let zh = Language::parse("zh").unwrap();
    assert_eq!(without.preprocess("火车", zh), "[zh]火车");
    let (with, _) = fixture();
    assert!(with.preprocess("火车", zh).starts_with("[zh][cj_"));
    let e = MtlTokenizer::from_files(
        &dir.join("mtl_tokenizer_vocab.json"),
        Some(&dir.join("mtl_tokenizer.json")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mtl_tokenizer.json") && e.contains("glyph"),
        "{e}"
    );
}

#[test]
fn chinese_words_match_jieba() {
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("zh_segmentation.json")).unwrap(),
    )
    .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<String> = serde_json::from_value(case["words"].clone()).unwrap();
        assert_eq!(ferrovox_text::chinese_words(text), want, "{text}");
    }
}

/// ferrovox's kanji reading (kakasi's dictionary) against upstream's with pykakasi, BPE input
/// compared sentence by sentence; the differing ones are listed.
#[cfg(feature = "japanese")]
#[test]
fn kanji_readings_agree_with_pykakasi() {
    let (tok, _) = fixture();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::fixtures().join("ja_kana.json")).unwrap())
            .unwrap();
    let ja = Language::parse("ja").unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let mut differ = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = tok.preprocess(&mtl_punc_norm(text), ja);
        let want = case["encode_input"].as_str().unwrap();
        if got != want {
            differ.push(format!("{text}: {got} against {want}"));
        }
    }
    eprintln!(
        "kanji readings: {} of {} sentences identical to pykakasi's; differing: {differ:#?}",
        cases.len() - differ.len(),
        cases.len()
    );
    assert!(differ.len() * 5 <= cases.len(), "{differ:#?}");
}
