//! Phoneme → id mapping of a Piper voice, mirroring `piper/phoneme_ids.py` (piper-tts 1.8.0).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::TextError;

/// Piper's beginning-of-sentence symbol.
pub const BOS: &str = "^";
/// Piper's end-of-sentence symbol.
pub const EOS: &str = "$";
/// Piper's padding symbol, placed after BOS and after every phoneme.
pub const PAD: &str = "_";

/// A voice's `phoneme_id_map`: phoneme (a string, usually one codepoint) → list of ids.
///
/// Built from the `phoneme_id_map` object of a Piper voice's `.onnx.json`. The map must
/// contain Piper's [`BOS`], [`EOS`] and [`PAD`] symbols; that is checked once, when it is
/// built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeIdMap {
    map: HashMap<String, Vec<i64>>,
}

/// The part of a Piper voice config (`.onnx.json`) this crate reads.
#[derive(Deserialize)]
struct VoiceConfig {
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

impl PhonemeIdMap {
    /// Wraps a phoneme → ids map, checking that it has Piper's special symbols.
    pub fn new(map: HashMap<String, Vec<i64>>) -> Result<Self, TextError> {
        for (role, symbol) in [("BOS", BOS), ("EOS", EOS), ("PAD", PAD)] {
            if !map.contains_key(symbol) {
                return Err(TextError::MissingSpecialSymbol { role, symbol });
            }
        }
        Ok(Self { map })
    }

    /// Reads the `phoneme_id_map` of a Piper voice config given as JSON text (the whole
    /// `.onnx.json`; other keys are ignored).
    pub fn from_voice_config_json(json: &str) -> Result<Self, TextError> {
        let config: VoiceConfig =
            serde_json::from_str(json).map_err(TextError::VoiceConfigParse)?;
        Self::new(config.phoneme_id_map)
    }

    /// Reads the `phoneme_id_map` of a Piper voice config file (`<voice>.onnx.json`).
    pub fn from_voice_config_file(path: impl AsRef<Path>) -> Result<Self, TextError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| TextError::VoiceConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_voice_config_json(&json)
    }

    /// The ids of one phoneme, if the voice has it.
    pub fn get(&self, phoneme: &str) -> Option<&[i64]> {
        self.map.get(phoneme).map(Vec::as_slice)
    }

    /// Number of phonemes in the map (special symbols included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always `false`: a map holds at least the three special symbols.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Model input ids for one sentence, `^ _ (p _)* $` as in Piper; an unknown phoneme is an
    /// error naming it and its position.
    pub fn ids<S: AsRef<str>>(&self, phonemes: &[S]) -> Result<Vec<i64>, TextError> {
        let mut ids = self.start(phonemes.len());
        for (position, phoneme) in phonemes.iter().enumerate() {
            let phoneme = phoneme.as_ref();
            let phoneme_ids = self
                .map
                .get(phoneme)
                .ok_or_else(|| TextError::UnknownPhoneme {
                    phoneme: phoneme.to_owned(),
                    position,
                })?;
            ids.extend_from_slice(phoneme_ids);
            ids.extend_from_slice(self.special(PAD));
        }
        ids.extend_from_slice(self.special(EOS));
        Ok(ids)
    }

    /// Model input ids exactly as Piper's `phonemes_to_ids`: phonemes missing from the map are
    /// dropped (with their padding). Returns the ids and the dropped phonemes, one entry per
    /// occurrence, in order.
    pub fn ids_lenient<S: AsRef<str>>(&self, phonemes: &[S]) -> (Vec<i64>, Vec<String>) {
        let mut ids = self.start(phonemes.len());
        let mut missing = Vec::new();
        for phoneme in phonemes {
            let phoneme = phoneme.as_ref();
            match self.map.get(phoneme) {
                Some(phoneme_ids) => {
                    ids.extend_from_slice(phoneme_ids);
                    ids.extend_from_slice(self.special(PAD));
                }
                None => missing.push(phoneme.to_owned()),
            }
        }
        ids.extend_from_slice(self.special(EOS));
        (ids, missing)
    }

    /// `^ _`, with room for `n_phonemes` more phonemes and their padding.
    fn start(&self, n_phonemes: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(2 * n_phonemes + 3);
        ids.extend_from_slice(self.special(BOS));
        ids.extend_from_slice(self.special(PAD));
        ids
    }

    /// Ids of a special symbol; present by construction.
    fn special(&self, symbol: &str) -> &[i64] {
        self.map.get(symbol).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_map() -> PhonemeIdMap {
        PhonemeIdMap::from_voice_config_json(
            r#"{"audio": {"sample_rate": 22050},
                "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "b": [15]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn layout_is_bos_pad_then_phoneme_pad_then_eos() {
        let map = tiny_map();
        assert_eq!(
            map.ids(&["a", " ", "b"]).unwrap(),
            [1, 0, 14, 0, 3, 0, 15, 0, 2]
        );
        assert_eq!(map.ids::<&str>(&[]).unwrap(), [1, 0, 2]);
    }

    #[test]
    fn unknown_phoneme_is_an_error_naming_it() {
        let err = tiny_map().ids(&["a", "ʃ", "b"]).unwrap_err();
        match &err {
            TextError::UnknownPhoneme { phoneme, position } => {
                assert_eq!(phoneme, "ʃ");
                assert_eq!(*position, 1);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("\"ʃ\""), "{err}");
    }

    #[test]
    fn lenient_drops_unknown_phonemes_like_piper() {
        let (ids, missing) = tiny_map().ids_lenient(&["a", "ʃ", "b", "ʃ"]);
        assert_eq!(ids, [1, 0, 14, 0, 15, 0, 2]);
        assert_eq!(missing, ["ʃ", "ʃ"]);
    }

    #[test]
    fn missing_special_symbol_is_an_error() {
        let err =
            PhonemeIdMap::from_voice_config_json(r#"{"phoneme_id_map": {"_": [0], "^": [1]}}"#)
                .unwrap_err();
        assert!(
            matches!(err, TextError::MissingSpecialSymbol { symbol: "$", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_config_is_an_error() {
        for json in [
            "",
            "{}",
            r#"{"phoneme_id_map": {"a": "x"}}"#,
            r#"{"phoneme_id_map": [1]}"#,
        ] {
            let err = PhonemeIdMap::from_voice_config_json(json).unwrap_err();
            assert!(
                matches!(err, TextError::VoiceConfigParse(_)),
                "{json}: {err:?}"
            );
        }
        let err = PhonemeIdMap::from_voice_config_file("/nonexistent/voice.onnx.json").unwrap_err();
        assert!(matches!(err, TextError::VoiceConfigRead { .. }), "{err:?}");
    }
}
