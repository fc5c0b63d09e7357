//! Chatterbox model directories built from the parity fixtures' small random-weight model,
//! laid out as the hub repository and loaded as a released one is (sizes from
//! `ferrovox-voice.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/chatterbox/tests/fixtures")
}

/// The tensors of fixture `name` whose key starts with one of `prefixes`.
pub fn tensors(name: &str, prefixes: &[&str]) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .collect()
}

/// The `config` metadata the generator wrote into fixture `name`.
pub fn fixture_config(name: &str) -> serde_json::Value {
    let bytes = std::fs::read(fixtures().join(format!("{name}.safetensors"))).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovox-cb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const T3_MODULES: [&str; 8] = [
    "tfmr.",
    "cond_enc.",
    "text_emb.",
    "speech_emb.",
    "text_pos_emb.",
    "speech_pos_emb.",
    "speech_head.",
    "text_head.",
];

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// T3's weights and S3Gen's flow and HiFT, as the fixtures hold them.
fn t3_and_s3gen() -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let mut s3gen = HashMap::new();
    for part in ["encoder", "cfm", "hift"] {
        s3gen.extend(tensors(part, &["flow.", "mel2wav."]));
    }
    (tensors("t3", &T3_MODULES), s3gen)
}

fn small_sizes() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("small_model.json")).unwrap())
        .unwrap()
}

/// A model directory of these weights and sizes, with the fixtures' built-in voice and
/// tokenizer.
fn write_model(
    tag: &str,
    t3: &HashMap<String, Tensor>,
    s3gen: &HashMap<String, Tensor>,
    sizes: &serde_json::Value,
) -> PathBuf {
    let dir = temp_dir(tag);
    save(t3, &dir.join("t3_cfg.safetensors"));
    save(s3gen, &dir.join("s3gen.safetensors"));
    save(&builtin_voice(), &dir.join("conds.safetensors"));
    std::fs::copy(
        fixtures().join("t3_tokenizer_vocab.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();
    dir
}

/// The small model without cloning encoders: T3, S3Gen's flow and HiFT, the built-in voice.
pub fn small_chatterbox_dir(tag: &str) -> PathBuf {
    let (t3, s3gen) = t3_and_s3gen();
    write_model(tag, &t3, &s3gen, &small_sizes())
}

fn builtin_voice() -> HashMap<String, Tensor> {
    tensors("tts_e2e", &["voice."])
        .into_iter()
        .map(|(k, v)| (k["voice.".len()..].to_string(), v))
        .collect()
}

/// The S3 tokenizer's codes (3⁸, as released): the small model's T3 and S3Gen read 256, too
/// few for the tokens the small tokenizer makes.
pub const SPEECH_CODES: usize = 6561;

/// `t` `[rows, n]` grown to `rows_out` rows by repeating its rows.
fn tile_rows(t: &Tensor, rows_out: usize) -> Tensor {
    let rows = t.dim(0).unwrap();
    let reps = rows_out.div_ceil(rows);
    Tensor::cat(&vec![t.clone(); reps], 0)
        .unwrap()
        .narrow(0, 0, rows_out)
        .unwrap()
}

/// The small model with everything cloning needs, its sizes made consistent: the fixtures'
/// voice encoder (its 32-d embedding is T3's speaker size), S3 tokenizer and CAMPPlus, and T3
/// and S3Gen with their speech vocabularies widened to the tokenizer's 6561 codes (T3's start
/// and stop tokens after them, as released) by repeating the embedding and head rows. The
/// weights stay random: this is a model for the plumbing, not for parity, which the
/// chatterbox crate's tests prove stage by stage.
pub fn cloning_chatterbox_dir(tag: &str) -> PathBuf {
    let (mut t3, mut s3gen) = t3_and_s3gen();
    for key in ["speech_emb.weight", "speech_head.weight"] {
        let grown = tile_rows(&t3[key], SPEECH_CODES + 2);
        t3.insert(key.into(), grown);
    }
    let key = "flow.input_embedding.weight";
    let grown = tile_rows(&s3gen[key], SPEECH_CODES);
    s3gen.insert(key.into(), grown);
    s3gen.extend(tensors("s3tokenizer", &["tokenizer."]));
    s3gen.extend(tensors("campplus", &["speaker_encoder."]));

    let mut sizes = small_sizes();
    let codes = SPEECH_CODES as u64;
    sizes["t3"]["speech_tokens_dict_size"] = (codes + 2).into();
    sizes["t3"]["start_speech_token"] = codes.into();
    sizes["t3"]["stop_speech_token"] = (codes + 1).into();
    sizes["s3gen"]["flow"]["vocab_size"] = codes.into();
    sizes["voice_encoder"] = fixture_config("ve")["ve_config"].clone();
    sizes["s3tokenizer"] = fixture_config("s3tokenizer")["model_config"].clone();
    sizes["campplus"] = fixture_config("campplus")["campplus"].clone();
    let dir = write_model(tag, &t3, &s3gen, &sizes);

    save_voice_encoder(&dir);
    dir
}

/// The small model laid out as the multilingual repository: T3 as `t3_mtl23ls_v3.safetensors`
/// (its 704 text rows hold the synthetic multilingual vocabulary), S3Gen as
/// `s3gen.safetensors`, the synthetic `grapheme_mtl_merged_expanded_v1.json` and
/// `Cangjie5_TC.json` of the tokenizer fixture, the built-in voice. Random weights: plumbing.
pub fn multilingual_chatterbox_dir(tag: &str) -> PathBuf {
    let (t3, s3gen) = t3_and_s3gen();
    let dir = temp_dir(tag);
    save(&t3, &dir.join("t3_mtl23ls_v3.safetensors"));
    save(&s3gen, &dir.join("s3gen.safetensors"));
    save(&builtin_voice(), &dir.join("conds.safetensors"));
    for (from, to) in [
        (
            "mtl_tokenizer_vocab.json",
            "grapheme_mtl_merged_expanded_v1.json",
        ),
        ("mtl_cangjie.json", "Cangjie5_TC.json"),
    ] {
        std::fs::copy(fixtures().join(from), dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("ferrovox-voice.json"), small_sizes().to_string()).unwrap();
    dir
}

/// The multilingual layout with only a v2 T3 (`t3_mtl23ls_v2.safetensors`): the 14-layer small
/// T3 of `t3_mtl.safetensors`, which has the heads the v2 stop detector reads.
pub fn multilingual_v2_chatterbox_dir(tag: &str) -> PathBuf {
    let dir = multilingual_chatterbox_dir(tag);
    std::fs::remove_file(dir.join("t3_mtl23ls_v3.safetensors")).unwrap();
    save(
        &tensors("t3_mtl", &T3_MODULES),
        &dir.join("t3_mtl23ls_v2.safetensors"),
    );
    let config = fixture_config("t3_mtl");
    let mut t3 = config["t3_config"].clone();
    t3["llama"] = config["llama_config"].clone();
    t3["perceiver"] = config["perceiver"].clone();
    let mut sizes = small_sizes();
    sizes["t3"] = t3;
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();
    dir
}

/// Chatterbox Turbo's layout (`ResembleAI/chatterbox-turbo`) from the small fixtures: Turbo's
/// T3, S3Gen with the meanflow decoder, the synthetic GPT-2 tokenizer, the built-in voice; its
/// silence token inside the small S3Gen's 256 codes.
pub fn turbo_chatterbox_dir(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    save(
        &tensors("t3_turbo", &T3_MODULES),
        &dir.join("t3_turbo_v1.safetensors"),
    );
    let (_, mut s3gen) = t3_and_s3gen();
    s3gen.retain(|k, _| !k.starts_with("flow.decoder."));
    s3gen.extend(tensors("s3gen_meanflow", &["flow.decoder."]));
    save(&s3gen, &dir.join("s3gen_meanflow.safetensors"));
    save(&builtin_voice(), &dir.join("conds.safetensors"));
    for f in std::fs::read_dir(fixtures().join("turbo_tokenizer")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let t3 = fixture_config("t3_turbo");
    let sizes = serde_json::json!({
        "family": "chatterbox", "t3": t3["t3_config"], "gpt2": t3["gpt2_config"],
        "s3gen": small_sizes()["s3gen"], "silence_token": 200,
    });
    std::fs::write(dir.join("ferrovox-voice.json"), sizes.to_string()).unwrap();
    dir
}

/// The fixtures' voice encoder as `dir/ve.safetensors`.
fn save_voice_encoder(dir: &Path) {
    let ve_keys = ferrovox_chatterbox::voice_encoder::VoiceEncoder::expected_keys();
    let ve: HashMap<String, Tensor> = tensors("ve", &[""])
        .into_iter()
        .filter(|(k, _)| ve_keys.iter().any(|e| e == k))
        .collect();
    save(&ve, &dir.join("ve.safetensors"));
}

/// Turbo's layout with everything cloning needs (as [`cloning_chatterbox_dir`] makes the
/// English one): the encoders inside `s3gen_meanflow.safetensors`, `ve.safetensors`, and T3's
/// and S3Gen's speech vocabularies widened to the tokenizer's 6561 codes by repeating rows.
pub fn turbo_cloning_chatterbox_dir(tag: &str) -> PathBuf {
    // Room for a cloned prompt of up to 15 s (375 tokens) in GPT-2's positions.
    let positions: usize = 1024;
    let dir = turbo_chatterbox_dir(tag);
    let t3_path = dir.join("t3_turbo_v1.safetensors");
    let mut t3 = candle_core::safetensors::load(&t3_path, &Device::Cpu).unwrap();
    for key in [
        "speech_emb.weight",
        "speech_head.weight",
        "speech_head.bias",
    ] {
        let grown = tile_rows(&t3[key], SPEECH_CODES + 2);
        t3.insert(key.into(), grown);
    }
    let grown = tile_rows(&t3["tfmr.wpe.weight"], positions);
    t3.insert("tfmr.wpe.weight".into(), grown);
    save(&t3, &t3_path);
    let s3gen_path = dir.join("s3gen_meanflow.safetensors");
    let mut s3gen = candle_core::safetensors::load(&s3gen_path, &Device::Cpu).unwrap();
    let key = "flow.input_embedding.weight";
    let grown = tile_rows(&s3gen[key], SPEECH_CODES);
    s3gen.insert(key.into(), grown);
    s3gen.extend(tensors("s3tokenizer", &["tokenizer."]));
    s3gen.extend(tensors("campplus", &["speaker_encoder."]));
    save(&s3gen, &s3gen_path);
    let marker = dir.join("ferrovox-voice.json");
    let mut sizes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    let codes = SPEECH_CODES as u64;
    sizes["t3"]["speech_tokens_dict_size"] = (codes + 2).into();
    sizes["t3"]["start_speech_token"] = codes.into();
    sizes["t3"]["stop_speech_token"] = (codes + 1).into();
    sizes["t3"]["speech_cond_prompt_len"] = 375.into();
    sizes["gpt2"]["n_positions"] = positions.into();
    sizes["s3gen"]["flow"]["vocab_size"] = codes.into();
    sizes["voice_encoder"] = fixture_config("ve")["ve_config"].clone();
    sizes["s3tokenizer"] = fixture_config("s3tokenizer")["model_config"].clone();
    sizes["campplus"] = fixture_config("campplus")["campplus"].clone();
    std::fs::write(&marker, sizes.to_string()).unwrap();
    save_voice_encoder(&dir);
    dir
}

/// The fixtures' 3 s reference clip (24 kHz) as a 16-bit WAV file.
pub fn reference_wav() -> Vec<u8> {
    reference_wav_repeated(1)
}

/// The fixtures' 3 s reference clip played `times` times over, as a 16-bit WAV file.
pub fn reference_wav_repeated(times: usize) -> Vec<u8> {
    let pcm = tensors("cloning", &["short.pcm"])
        .remove("short.pcm")
        .unwrap();
    let samples: Vec<f32> = pcm
        .to_vec1::<i16>()
        .unwrap()
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect();
    let mut wav = Vec::new();
    ferrovox_audio::write_wav(&mut wav, &samples.repeat(times), 24_000).unwrap();
    wav
}
