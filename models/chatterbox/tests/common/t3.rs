//! The small random-weight T3 of `t3.safetensors` (`xtask/fixtures/chatterbox/gen_t3.py`) and
//! the inputs upstream ran it on.

use candle_core::IndexOp;
use ferrovox_chatterbox::t3::{LlamaConfig, PerceiverConfig, T3Cond, T3Config, T3};

use super::{ids, Fixture};

pub fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

pub fn small() -> (T3, Fixture) {
    let fx = Fixture::load("t3");
    let mut cfg: T3Config = from(&fx.config["t3_config"]);
    cfg.llama = from::<LlamaConfig>(&fx.config["llama_config"]);
    cfg.perceiver = from::<PerceiverConfig>(&fx.config["perceiver"]);
    assert_eq!(
        cfg.llama.hidden_size, 64,
        "the small fixture config was read"
    );
    assert_eq!(cfg.speech_tokens_dict_size, 264);
    (T3::new(&cfg, fx.vb()).unwrap(), fx)
}

pub fn cond(fx: &Fixture) -> T3Cond {
    T3Cond {
        speaker_emb: fx.get("in.speaker_emb"),
        cond_prompt_speech_tokens: Some(fx.get("in.cond_prompt_speech_tokens")),
        emotion_adv: fx
            .get("in.emotion_adv")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0],
    }
}

pub fn text_tokens(fx: &Fixture) -> Vec<u32> {
    ids(&fx.get("in.text_tokens").i(0).unwrap())
}
