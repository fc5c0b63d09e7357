//! Parity with Piper 1.8.0 (`en_US-joe-medium`) on the fixtures written by
//! `xtask/fixtures/vits/gen_piper.py`.

use ferrovox_text::PhonemeIdMap;
use serde::Deserialize;

const PIPER_PHONEMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/vits/tests/fixtures/piper_phonemes.json"
);
const VOICE_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/en_US-joe-medium.onnx.json"
);

#[derive(Deserialize)]
struct Fixture {
    espeak_voice: String,
    bos: String,
    eos: String,
    pad: String,
    texts: Vec<FixtureText>,
}

#[derive(Deserialize)]
struct FixtureText {
    text: String,
    sentences: Vec<FixtureSentence>,
}

#[derive(Deserialize)]
struct FixtureSentence {
    phonemes: Vec<String>,
    ipa: String,
    phoneme_ids: Vec<i64>,
    missing_from_id_map: Vec<String>,
}

fn fixture() -> Fixture {
    let json = std::fs::read_to_string(PIPER_PHONEMES).expect("Piper phoneme fixture");
    serde_json::from_str(&json).expect("fixture JSON")
}

fn id_map() -> PhonemeIdMap {
    PhonemeIdMap::from_voice_config_file(VOICE_CONFIG).expect("voice config")
}

#[test]
fn piper_phonemes_map_to_piper_ids() {
    let fixture = fixture();
    assert_eq!(
        (
            fixture.bos.as_str(),
            fixture.eos.as_str(),
            fixture.pad.as_str()
        ),
        (ferrovox_text::BOS, ferrovox_text::EOS, ferrovox_text::PAD)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VOICE_CONFIG).unwrap()).unwrap();
    assert_eq!(config["espeak"]["voice"], fixture.espeak_voice.as_str());
    let map = id_map();
    let mut n_sentences = 0;
    for text in &fixture.texts {
        for (i, sentence) in text.sentences.iter().enumerate() {
            let context = format!("{:?} sentence {i}", text.text);
            assert_eq!(sentence.ipa, sentence.phonemes.concat(), "{context}");
            let (lenient, missing) = map.ids_lenient(&sentence.phonemes);
            assert_eq!(lenient, sentence.phoneme_ids, "{context}");
            assert_eq!(missing, sentence.missing_from_id_map, "{context}");
            if missing.is_empty() {
                let strict = map.ids(&sentence.phonemes).expect(&context);
                assert_eq!(strict, sentence.phoneme_ids, "{context}");
            }
            n_sentences += 1;
        }
    }
    assert!(n_sentences > 0, "fixture has no sentences");
}

#[cfg(feature = "espeak")]
mod espeak {
    use super::*;
    use ferrovox_text::{EspeakPhonemizer, Sentence, TextError};
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Instant;

    /// A fixture text whose phonemes from the `espeak-ng` port differ from Piper's today.
    /// `port_ipa` pins the port's current output sentence by sentence, so any change to it,
    /// better or worse, fails the test and has to be reviewed here.
    struct KnownDivergence {
        text: &'static str,
        port_ipa: &'static [&'static str],
        reason: &'static str,
    }

    const KNOWN_DIVERGENCES: &[KnownDivergence] = &[
        KnownDivergence {
            text: "It was a cold morning. The birds were silent, and the river ran slow. \
                   We waited for the sun.",
            port_ipa: &[
                "ɪt wʌz ɐ kˈoʊld mˈɔːɹnɪŋ.",
                "ðə bˈɜːdz wɜː sˈaɪlənt, ænd ðə ɹˈɪvɚ ɹˈæn slˈoʊ.",
                "wiː wˈeɪɾᵻd fɔːɹ ðə sˈʌn.",
            ],
            reason: "sentences 1 and 3: upstream's multi-word dictionary entries are not applied \
                     by the port (`was a` -> `wʌzɐ`, `for the` -> `fɚðə` in Piper); sentence 2 agrees",
        },
        KnownDivergence {
            text: "Dr. Smith paid $3.50 for 2 coffees, didn't he?",
            port_ipa: &["dˈɑːktɚ smˈɪθ pˈeɪd θɹˈiː dˈɑːlɚz fˈɪfti sˈɛnts fɔːɹ tˈuː kˈɔfiz, dˈɪdnt hiː?"],
            reason: "sentence split and currency: upstream ends a sentence at `Dr.` before a \
                     capitalised word and reads `$3.50` as `dollar three point five zero`; the \
                     port keeps one sentence and reads `three dollars fifty cents`",
        },
    ];

    fn cache_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ferrovox-text-cache")
    }

    fn phonemizer() -> &'static EspeakPhonemizer {
        static PHONEMIZER: OnceLock<EspeakPhonemizer> = OnceLock::new();
        PHONEMIZER.get_or_init(|| {
            EspeakPhonemizer::with_cache_dir(&fixture().espeak_voice, cache_dir())
                .expect("phonemizer")
        })
    }

    #[test]
    fn espeak_phonemes_match_piper_except_known_divergences() {
        let fixture = fixture();
        let map = id_map();
        let phonemizer = phonemizer();
        let (mut agreeing, mut total) = (0, 0);
        let mut failures = Vec::new();
        for text in &fixture.texts {
            let port = phonemizer.phonemize(&text.text).expect(&text.text);
            total += text.sentences.len();
            let mut text_agrees = port.len() == text.sentences.len();
            for (i, piper) in text.sentences.iter().enumerate() {
                let Some(ours) = port.get(i).filter(|_| port.len() == text.sentences.len()) else {
                    continue;
                };
                let ids = map
                    .ids(&ours.phonemes)
                    .expect("port phonemes are in the map");
                if ours.phonemes == piper.phonemes && ids == piper.phoneme_ids {
                    assert_eq!(ours.ipa, piper.ipa);
                    agreeing += 1;
                } else {
                    text_agrees = false;
                }
            }
            let port_ipa: Vec<&str> = port.iter().map(|s| s.ipa.as_str()).collect();
            match KNOWN_DIVERGENCES.iter().find(|d| d.text == text.text) {
                None if !text_agrees => failures.push(format!(
                    "NEW divergence on {:?}:\n  piper: {:?}\n  port:  {port_ipa:?}",
                    text.text,
                    text.sentences.iter().map(|s| &s.ipa).collect::<Vec<_>>()
                )),
                Some(known) if text_agrees => failures.push(format!(
                    "{:?} now agrees with Piper: remove it from KNOWN_DIVERGENCES",
                    known.text
                )),
                Some(known) if port_ipa != known.port_ipa => failures.push(format!(
                    "port output changed on known divergence {:?} ({}):\n  pinned: {:?}\n  now:    {port_ipa:?}",
                    known.text, known.reason, known.port_ipa
                )),
                _ => {}
            }
        }
        for known in KNOWN_DIVERGENCES {
            if !fixture.texts.iter().any(|t| t.text == known.text) {
                failures.push(format!(
                    "known divergence {:?} is not a fixture text",
                    known.text
                ));
            }
        }
        eprintln!("phoneme agreement with Piper: {agreeing}/{total} sentences");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn empty_and_punctuation_only_text_is_nothing_to_speak() {
        for text in [
            "", "   \n\t ", ".", "?!", "...", ";,:", "\"()\"", "[[ ]]", "[[]]",
        ] {
            match phonemizer().phonemize(text) {
                Err(TextError::NothingToSpeak) => {}
                other => panic!("{text:?}: expected NothingToSpeak, got {other:?}"),
            }
        }
    }

    #[test]
    fn phonemizer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EspeakPhonemizer>();
    }

    #[test]
    fn missing_data_dir_is_an_error() {
        let err =
            EspeakPhonemizer::with_data_dir("en-us", "/nonexistent/espeak-ng-data").unwrap_err();
        assert!(matches!(err, TextError::InvalidDataDir { .. }), "{err:?}");
    }

    #[test]
    fn unknown_voice_is_an_error_naming_it() {
        let err = EspeakPhonemizer::with_cache_dir("xx-nonexistent", cache_dir()).unwrap_err();
        assert!(matches!(&err, TextError::UnknownVoice { voice } if voice == "xx-nonexistent"));
        assert!(err.to_string().contains("xx-nonexistent"), "{err}");
        let err = EspeakPhonemizer::with_cache_dir("", cache_dir()).unwrap_err();
        assert!(matches!(&err, TextError::UnknownVoice { .. }), "{err:?}");
        // A real espeak-ng voice whose dictionary is not bundled.
        let err = EspeakPhonemizer::with_cache_dir("fr", cache_dir()).unwrap_err();
        assert!(
            matches!(&err, TextError::VoiceNotBundled { voice } if voice == "fr"),
            "{err:?}"
        );
    }

    #[test]
    fn sentences_clauses_and_raw_phonemes() {
        let ipa = |text: &str| -> Vec<String> {
            phonemizer()
                .phonemize(text)
                .expect(text)
                .into_iter()
                .map(|s| s.ipa)
                .collect()
        };
        // Clause terminators are kept, with a space after , : ; and a sentence per . ? !
        assert_eq!(ipa("Hello, world. Bye!"), ["həlˈoʊ, wˈɜːld.", "bˈaɪ!"]);
        // A punctuation run adds no empty clause.
        assert_eq!(ipa("Hi!! There?!"), ["hˈaɪ!", "ðˈɛɹ?"]);
        // A paragraph break ends a sentence, as upstream.
        assert_eq!(ipa("Hello world\n\nbye"), ["həlˈoʊ wˈɜːld", "bˈaɪ"]);
        // Raw phonemes join the neighbouring sentence, as in Piper's voice.py.
        assert_eq!(ipa("[[ hɛloʊ ]]"), ["hɛloʊ"]);
        assert_eq!(ipa("Say [[ hɛloʊ ]] now."), ["sˈeɪ hɛloʊ nˈaʊ."]);
        // Phonemes are NFD codepoints.
        let sentence: Sentence = phonemizer().phonemize("Hello.").unwrap().remove(0);
        assert!(sentence.phonemes.iter().all(|p| p.chars().count() == 1));
        assert_eq!(sentence.ipa, sentence.phonemes.concat());
    }

    #[test]
    fn hostile_input_returns_a_result() {
        // Very long words trip a debug assertion inside the port; that must come back as an
        // error, not a panic.
        let long_word = "a".repeat(5000);
        for text in [
            long_word.as_str(),
            "\u{0}\u{1}\u{7f}",
            "😀 🚀",
            "日本語のテキスト",
            "9999999999999999999999999999999999999999",
            "[[ unclosed",
            "((((",
        ] {
            match phonemizer().phonemize(text) {
                Ok(_) | Err(TextError::NothingToSpeak | TextError::EspeakPanic { .. }) => {}
                Err(other) => panic!("{text:?}: unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn concurrent_installs_are_safe() {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ferrovox-text-install-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || ferrovox_text::ensure_bundled_data(&dir))
            })
            .collect();
        let data_dirs: Vec<PathBuf> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("install"))
            .collect();
        assert!(data_dirs.windows(2).all(|w| w[0] == w[1]));
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("espeak-ng-data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary directories left: {leftovers:?}"
        );
        let phonemizer = EspeakPhonemizer::with_data_dir("en-us", &data_dirs[0]).unwrap();
        assert_eq!(phonemizer.phonemize("Hello.").unwrap()[0].ipa, "həlˈoʊ.");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn phonemize_timing_300_words() {
        let fixture = fixture();
        let mut text = String::new();
        while text.split_whitespace().count() < 300 {
            for t in &fixture.texts {
                text.push_str(&t.text);
                text.push(' ');
            }
        }
        let words = text.split_whitespace().count();
        let phonemizer = phonemizer();
        for _ in 0..2 {
            phonemizer.phonemize(&text).unwrap();
        }
        let runs = 10;
        let start = Instant::now();
        for _ in 0..runs {
            phonemizer.phonemize(&text).unwrap();
        }
        let per_call = start.elapsed() / runs;
        let start = Instant::now();
        for _ in 0..runs {
            phonemizer.phonemize("Hello.").unwrap();
        }
        let short = start.elapsed() / runs;
        eprintln!(
            "phonemize: {words} words in {per_call:.2?} per call; \"Hello.\" in {short:.2?} \
             (test profile, after warm-up, {runs} runs)"
        );
    }
}
