//! Chatterbox's text front ends on whatever a client sends, in every language: normalizing and
//! tokenizing never panic, every id is inside the vocabulary, and a language code is either one
//! of the 23 or refused with the list.

mod common;

use ferrovox_chatterbox::tokenizer::{
    mtl_punc_norm, punc_norm, EnTokenizer, Language, MtlTokenizer, LANGUAGES,
};
use proptest::prelude::*;

/// Text in the scripts the languages use, with the characters their steps look at.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-zA-Z]{1,10}",
        2 => Just(" ".to_string()),
        2 => prop::sample::select(vec![
            "火车八点到", "你好", "안녕하세요", "\u{d7a4}\u{d7af}", "日本語", "ひらがな", "カタカナ",
            "שָׁלוֹם", "Привет", "Καλημέρα ΟΔΥΣΣΕΥΣ", "İstanbul", "straße", "नमस्ते", "مرحبا",
            "。", "，", "？", "！", "、", "...", "…", " - ", ";", ":", "“", "”",
        ])
        .prop_map(str::to_string),
        1 => prop::sample::select(vec!["\u{0}", "\u{1c}", "\u{1f}", "\u{200b}", "\u{feff}", "\r\n", "\t", "😀"])
            .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn tokenizers() -> (MtlTokenizer, EnTokenizer) {
    let dir = common::fixtures();
    (
        MtlTokenizer::from_files(
            &dir.join("mtl_tokenizer_vocab.json"),
            Some(&dir.join("mtl_cangjie.json")),
        )
        .unwrap(),
        EnTokenizer::from_file(&dir.join("t3_tokenizer_vocab.json")).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_in_any_language_tokenizes(t in text(), lang in 0..LANGUAGES.len()) {
        let (mtl, en) = tokenizers();
        let language = Language::parse(LANGUAGES[lang].0).unwrap();
        let ids = mtl.encode(&mtl_punc_norm(&t), language).unwrap();
        prop_assert!(ids.iter().all(|&i| (i as usize) < mtl.vocab_size()));
        let ids = en.encode(&punc_norm(&t)).unwrap();
        prop_assert!(ids.iter().all(|&i| (i as usize) < en.vocab_size()));
    }

    #[test]
    fn any_language_code_is_known_or_refused(code in any::<String>()) {
        match Language::parse(&code) {
            Ok(l) => prop_assert!(LANGUAGES.iter().any(|(c, _)| *c == l.code())),
            Err(e) => prop_assert!(e.to_string().contains("supported: ar")),
        }
    }
}
