//! The multilingual text front end against upstream's `mtl_tts.punc_norm` + `MTLTokenizer` on
//! the synthetic files of `gen_mtl_tokenizer.py`, sentences in all 23 languages: identical
//! normalized text, BPE input and ids, except where ferrovox is degraded (Japanese kanji, kept
//! as upstream keeps them without pykakasi; listed).

mod common;

use ferrovox_chatterbox::tokenizer::{mtl_punc_norm, Language, MtlTokenizer, LANGUAGES};

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
        // Japanese: ferrovox is upstream without pykakasi.
        let (input_key, ids_key) = if code == "ja" {
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
        if code == "ja" && case["ids"] != case["ids_without_kakasi"] {
            kanji_differ.push(text.to_string());
        }
    }
    assert_eq!(languages.len(), LANGUAGES.len(), "every language has cases");
    eprintln!(
        "{} cases in {} languages: identical; Japanese with kanji differs from upstream with \
         pykakasi: {kanji_differ:?}",
        cases.len(),
        languages.len()
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
