//! The MMS tokenizer against transformers' `VitsTokenizer` outputs (fixture cases).

mod common;

use ferrovox_vits::tokenizer::{MmsTokenizer, TokenizerConfig};

#[test]
fn mms_tokenizer_matches_transformers_on_every_case() {
    let dir = common::fixtures();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_cases.json")).unwrap())
            .unwrap();
    let cfg: TokenizerConfig = serde_json::from_value(cases["tokenizer_config"].clone()).unwrap();
    let vocab = std::fs::read_to_string(dir.join("vocab.json")).unwrap();
    let tok = MmsTokenizer::new(&vocab, cfg).unwrap();
    let all = cases["cases"].as_array().unwrap();
    assert!(all.len() >= 12);
    for case in all {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(
            tok.normalize(text),
            case["normalized"].as_str().unwrap(),
            "normalize {text:?}"
        );
        assert_eq!(tok.encode(text), expected, "ids of {text:?}");
    }
    eprintln!(
        "{} of {} tokenizer cases identical to transformers",
        all.len(),
        all.len()
    );
}

#[test]
fn unspeakable_text_is_an_error() {
    let vocab = std::fs::read_to_string(common::fixtures().join("vocab.json")).unwrap();
    let tok = MmsTokenizer::new(&vocab, TokenizerConfig::default()).unwrap();
    let err = tok.encode_checked("日本語 !!!").unwrap_err().to_string();
    assert!(err.contains("nothing speakable"), "{err}");
    let uroman = TokenizerConfig {
        is_uroman: true,
        ..TokenizerConfig::default()
    };
    assert!(MmsTokenizer::new(&vocab, uroman).is_err());
    assert!(MmsTokenizer::new("{broken", TokenizerConfig::default()).is_err());
}
