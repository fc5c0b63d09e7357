//! Turbo's text front end against upstream (`tts_turbo.punc_norm`, then
//! `AutoTokenizer.from_pretrained(dir)(text).input_ids`) on a synthetic GPT-2 tokenizer laid out
//! as the released one, the paralinguistic tags added (`turbo_tokenizer/`,
//! `turbo_tokenizer_cases.json`, `xtask/fixtures/chatterbox/gen_turbo_tokenizer.py`).

mod common;

use ferrovox_chatterbox::tokenizer::{turbo_punc_norm, TurboTokenizer};

fn cases() -> serde_json::Value {
    let path = common::fixtures().join("turbo_tokenizer_cases.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check(tokenizer: &TurboTokenizer, doc: &serde_json::Value) {
    for case in doc["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let normed = turbo_punc_norm(text);
        assert_eq!(normed, case["punc_norm"].as_str().unwrap(), "{text:?}");
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(&normed).unwrap(), want, "{normed:?}");
    }
}

/// Every case's normalized text and ids equal upstream's, tags whole, read from `vocab.json`,
/// `merges.txt` and `tokenizer_config.json`'s added tokens (upstream checks that the same
/// tokenizer written as one `tokenizer.json` gives the same ids; ferrovox reads that file with
/// the `tokenizers` crate as it is).
#[test]
fn ids_match_upstreams_tokenizer() {
    let doc = cases();
    let dir = common::fixtures().join("turbo_tokenizer");
    let tokenizer = TurboTokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tokenizer.vocab_size() as u64,
        doc["vocab_size"].as_u64().unwrap()
    );
    check(&tokenizer, &doc);
    // A tag is one token.
    for tag in doc["tags"].as_array().unwrap() {
        let ids = tokenizer.encode(tag.as_str().unwrap()).unwrap();
        assert_eq!(ids.len(), 1, "{tag}: {ids:?}");
    }
}

/// Missing files are named; a tag whose id the vocabulary cannot give is refused.
#[test]
fn bad_tokenizer_directories_are_named() {
    let src = common::fixtures().join("turbo_tokenizer");
    let dir = std::env::temp_dir().join(format!("ferrovox-turbo-tok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vocab.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let err = TurboTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("merges.txt"), "{err}");
    std::fs::copy(src.join("merges.txt"), dir.join("merges.txt")).unwrap();
    let config = std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let decoder = config["added_tokens_decoder"].as_object_mut().unwrap();
    let (id, entry) = decoder
        .iter()
        .find(|(_, v)| v["content"] == "[laugh]")
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    decoder.remove(&id);
    decoder.insert("99999".into(), entry);
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let err = TurboTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("[laugh]") && err.contains("99999"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
