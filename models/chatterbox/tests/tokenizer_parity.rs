//! The English text front end against upstream's `punc_norm` + `EnTokenizer` on the synthetic
//! `tokenizer.json` of `gen_t3.py` (the wheel ships none): identical normalized text and ids.

mod common;

use ferrovox_chatterbox::tokenizer::{punc_norm, EnTokenizer};

#[test]
fn ids_match_upstream_on_every_case() {
    let dir = common::fixtures();
    let tok = EnTokenizer::from_file(&dir.join("t3_tokenizer_vocab.json")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("t3_tokenizer.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let norm = punc_norm(text);
        assert_eq!(
            norm,
            case["punc_norm"].as_str().unwrap(),
            "punc_norm of {text:?}"
        );
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(&norm).unwrap(), want, "ids of {norm:?}");
    }
    eprintln!("{} cases: identical normalized text and ids", cases.len());
}

#[test]
fn a_bad_tokenizer_file_is_named() {
    let dir = std::env::temp_dir().join(format!("ferrovox-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, b"{ not json").unwrap();
    let e = EnTokenizer::from_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a tokenizers JSON"),
        "{e}"
    );
    assert!(EnTokenizer::from_file(&dir.join("none.json"))
        .unwrap_err()
        .to_string()
        .contains("not found"));
    std::fs::remove_dir_all(&dir).ok();
}
