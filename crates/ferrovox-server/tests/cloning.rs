//! Cloned voices over HTTP: a clip uploaded to `POST /v1/audio/voices` as multipart is encoded
//! by the served Chatterbox model's own encoders, kept in a voice store, listed, read, spoken
//! by `/v1/audio/speech` (by id, by name, and as OpenAI's `{"id": ...}`) and deleted; bad
//! uploads get 413 or 422 naming the reason. The model is the fixtures' small random-weight
//! Chatterbox with its encoders (`common::chatterbox::cloning_chatterbox_dir`). The official
//! `openai` client does the same round trip in `the_openai_client_clones_and_speaks`.

// ureq's error type is what the shared client returns.
#![allow(clippy::result_large_err)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use common::chatterbox::{
    cloning_chatterbox_dir, reference_wav, reference_wav_repeated, temp_dir,
    turbo_cloning_chatterbox_dir,
};
use common::*;
use ferrovox_cloning::CloningService;
use ferrovox_server::{Cloning, ServerConfig};
use ferrovox_voice_store::VoiceStore;
use serde_json::{json, Value};

struct Served {
    server: TestServer,
    dir: PathBuf,
    store_dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.server.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

fn serve(tag: &str, config: ServerConfig) -> Served {
    let dir = cloning_chatterbox_dir(tag);
    serve_with_store(dir, config, temp_dir(&format!("{tag}-store")))
}

/// Serves the model in `dir` with a store in `store_dir`.
fn serve_with_store(dir: PathBuf, config: ServerConfig, store_dir: PathBuf) -> Served {
    let id = dir.to_str().unwrap().to_string();
    let model = ferrovox_engine::open_voice(&id, &Device::Cpu).unwrap();
    let store = VoiceStore::open(Some(store_dir.to_str().unwrap())).unwrap();
    let cloning = Cloning::new(Arc::new(CloningService::new(Device::Cpu)), store, 2);
    let config = ServerConfig {
        voices: vec![id],
        ..config
    };
    let server = TestServer::start_with(vec![model], config, None, true, Some(cloning));
    Served {
        server,
        dir,
        store_dir,
    }
}

/// A multipart/form-data body of text `fields` and one file part.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "ferrovox-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"; filename=\"clip.wav\"\r\ncontent-type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(
    served: &Served,
    fields: &[(&str, &str)],
    clip: Option<&[u8]>,
) -> Result<ureq::Response, ureq::Error> {
    let (content_type, body) = multipart(fields, clip.map(|c| ("audio_sample", c)));
    ureq::post(&format!("{}/v1/audio/voices", served.server.url))
        .set("content-type", &content_type)
        .send_bytes(&body)
}

fn speak(served: &Served, voice: Value, seed: u64) -> Result<ureq::Response, ureq::Error> {
    let body = json!({
        "model": "chatterbox", "voice": voice, "input": "Hello there, a cloned voice.",
        "response_format": "pcm", "max_new_tokens": 40, "seed": seed,
    });
    served.server.post(&body.to_string())
}

fn json_of(response: ureq::Response) -> Value {
    response.into_json().unwrap()
}

#[test]
fn an_uploaded_voice_is_stored_listed_spoken_and_deleted() {
    let served = serve("clone-http", ServerConfig::default());
    let clip = reference_wav();
    let created = upload(
        &served,
        &[
            ("name", "Ada"),
            ("model", "chatterbox"),
            ("consent", "cons_1"),
        ],
        Some(clip.as_slice()),
    )
    .unwrap();
    assert_eq!(created.status(), 201);
    let voice = json_of(created);
    let id = voice["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{voice}");
    assert_eq!(voice["object"], "audio.voice");
    assert_eq!(voice["name"], "Ada");
    assert_eq!(voice["family"], "chatterbox");
    assert_eq!(voice["consent"], "cons_1");
    assert_eq!(voice["model"], served.dir.to_str().unwrap());
    let duration = voice["duration_s"].as_f64().unwrap();
    assert!((2.0..=3.1).contains(&duration), "{voice}");

    // The same clip again is the same voice, kept as it was.
    let again = upload(&served, &[("name", "Ada again")], Some(clip.as_slice())).unwrap();
    assert_eq!(again.status(), 200);
    let again = json_of(again);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["name"], "Ada");

    let list = json_of(served.server.get("/v1/audio/voices").unwrap());
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let one = json_of(
        served
            .server
            .get(&format!("/v1/audio/voices/{id}"))
            .unwrap(),
    );
    assert_eq!(one, voice);

    // By id, as OpenAI's object and by name: the same audio for the same seed, and not the
    // built-in voice's.
    let by_id = body_bytes(speak(&served, json!(id), 3).unwrap());
    assert!(by_id.len() > 24_000 / 5, "{} bytes", by_id.len());
    let by_object = body_bytes(speak(&served, json!({ "id": id }), 3).unwrap());
    let by_name = body_bytes(speak(&served, json!("Ada"), 3).unwrap());
    assert_eq!(by_id, by_object);
    assert_eq!(by_id, by_name);
    let builtin = body_bytes(speak(&served, json!(served.dir.to_str().unwrap()), 3).unwrap());
    assert_ne!(by_id, builtin, "the cloned voice must condition the audio");

    // The stored voice is the library's clone of the same clip.
    let service = CloningService::new(Device::Cpu);
    let model = served.dir.to_str().unwrap();
    let direct = service
        .encode(model, &service.read_clip(model, &clip).unwrap(), "Ada")
        .unwrap();
    let store =
        ferrovox_voice_store::BlockingVoiceStore::open(Some(served.store_dir.to_str().unwrap()))
            .unwrap();
    assert_eq!(
        store.get(&id).unwrap().conditionals.as_ref(),
        direct.conditionals.as_slice()
    );

    let deleted = json_of(
        ureq::delete(&format!("{}/v1/audio/voices/{id}", served.server.url))
            .call()
            .unwrap(),
    );
    assert_eq!(deleted["deleted"], true);
    let (status, body) = failure(served.server.get(&format!("/v1/audio/voices/{id}")));
    assert_eq!(status, 404, "{body}");
    let (status, body) = failure(speak(&served, json!(id), 3));
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_voice");
    let (status, _) =
        failure(ureq::delete(&format!("{}/v1/audio/voices/{id}", served.server.url)).call());
    assert_eq!(status, 404);
}

/// Each bad upload is refused before anything is stored, with a status and the reason.
#[test]
fn bad_uploads_are_refused_with_the_reason() {
    let served = serve(
        "clone-bad",
        ServerConfig {
            max_upload_bytes: 400_000,
            ..Default::default()
        },
    );
    let clip = reference_wav();
    let tone = |seconds: f32, amplitude: f32| {
        let samples: Vec<f32> = (0..(seconds * 24_000.0) as usize)
            .map(|i| amplitude * (i as f32 * 0.05).sin())
            .collect();
        let mut wav = Vec::new();
        ferrovox_audio::write_wav(&mut wav, &samples, 24_000).unwrap();
        wav
    };
    let check = |result, status: u16, field: &str, words: &str| {
        let (got, body) = failure(result);
        assert_eq!(got, status, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "`{words}` not in: {body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["param"], field, "{body}");
        }
    };
    // Over the upload limit: 413 (12 s of 16-bit 24 kHz is 576 kB).
    check(
        upload(
            &served,
            &[("name", "big")],
            Some(tone(12.0, 0.3).as_slice()),
        ),
        413,
        "",
        "400000 bytes",
    );
    check(
        upload(
            &served,
            &[("name", "short")],
            Some(tone(0.5, 0.3).as_slice()),
        ),
        422,
        "audio_sample",
        "minimum",
    );
    check(
        upload(
            &served,
            &[("name", "silent")],
            Some(tone(3.0, 0.0).as_slice()),
        ),
        422,
        "audio_sample",
        "silent",
    );
    check(
        upload(
            &served,
            &[("name", "text")],
            Some(b"this is not audio at all".as_slice()),
        ),
        422,
        "audio_sample",
        "recognised format",
    );
    check(
        upload(&served, &[], Some(clip.as_slice())),
        422,
        "name",
        "missing",
    );
    check(
        upload(&served, &[("name", "x")], None),
        422,
        "audio_sample",
        "missing",
    );
    check(
        upload(
            &served,
            &[("name", "x"), ("ref_text", "hi")],
            Some(clip.as_slice()),
        ),
        422,
        "ref_text",
        "unknown field",
    );
    check(
        upload(
            &served,
            &[("name", "x"), ("type", "prompt")],
            Some(clip.as_slice()),
        ),
        422,
        "type",
        "audio_sample",
    );
    check(
        upload(
            &served,
            &[("name", "x"), ("model", "piper")],
            Some(clip.as_slice()),
        ),
        404,
        "model",
        "unknown model",
    );
    let not_multipart = ureq::post(&format!("{}/v1/audio/voices", served.server.url))
        .set("content-type", "application/json")
        .send_string("{\"name\": \"x\"}");
    check(not_multipart, 400, "", "multipart/form-data");
    // Nothing above was stored.
    let list = json_of(served.server.get("/v1/audio/voices").unwrap());
    assert_eq!(list["data"], json!([]), "{list}");
    // An unknown voice or id is the client's 404, not a 500.
    check(
        speak(&served, json!("nobody"), 1),
        404,
        "voice",
        "unknown voice",
    );
    check(
        served
            .server
            .get(&format!("/v1/audio/voices/{}", "0".repeat(32))),
        404,
        "voice",
        "unknown voice",
    );
    check(
        speak(&served, json!({"id": 5}), 1),
        422,
        "voice",
        "expected a voice name or id",
    );
}

/// A stored voice the served model cannot speak: made by other encoders, or of other sizes
/// under the same encoders' version. Refused as the client's 422, naming the voice.
#[test]
fn a_voice_for_other_encoders_or_sizes_is_refused() {
    let served = serve("clone-foreign", ServerConfig::default());
    let store =
        ferrovox_voice_store::BlockingVoiceStore::open(Some(served.store_dir.to_str().unwrap()))
            .unwrap();
    let service = CloningService::new(Device::Cpu);
    let model = served.dir.to_str().unwrap();
    let mut voice = service
        .encode(
            model,
            &service.read_clip(model, &reference_wav()).unwrap(),
            "Foreign",
        )
        .unwrap();
    voice.model_version = "other-weights".into();
    let (foreign, _) = store.add(voice.clone()).unwrap();
    let (status, body) = failure(speak(&served, json!(foreign.id), 1));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("other-weights"),
        "{body}"
    );

    // Same version, but a 16-d speaker embedding where T3 takes 32.
    let mut conditionals =
        ferrovox_chatterbox::Conditionals::from_safetensors(&voice.conditionals, &Device::Cpu)
            .unwrap();
    conditionals.t3.speaker_emb = conditionals.t3.speaker_emb.narrow(1, 0, 16).unwrap();
    let mut misfit = service
        .encode(
            model,
            &service.read_clip(model, &reference_wav()).unwrap(),
            "Misfit",
        )
        .unwrap();
    misfit.conditionals = conditionals.to_safetensors().unwrap();
    misfit.encoder_params["note"] = json!("narrowed");
    let (misfit, _) = store.add(misfit).unwrap();
    let (status, body) = failure(speak(&served, json!(misfit.id), 1));
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("speaker embedding"), "{body}");
}

/// The official `openai` Python client uploads a clip with `client.audio.voices.create` and
/// speaks it with `voice={"id": ...}`. Needs `FERROVOX_OPENAI_PYTHON` (`.ci/run` makes one);
/// skipped without it unless `FERROVOX_REQUIRE_OPENAI=1`.
#[test]
fn the_openai_client_clones_and_speaks() {
    let Some(python) = openai_python() else {
        return;
    };
    let served = serve("clone-openai", ServerConfig::default());
    let clip_path = served.store_dir.with_extension("wav");
    std::fs::write(&clip_path, reference_wav()).unwrap();
    let report = python_report(
        &python,
        "openai_voices.py",
        &[served.server.url.as_ref(), clip_path.as_os_str()],
    );
    std::fs::remove_file(&clip_path).ok();
    eprintln!("openai client: {report}");
    let id = report["voice"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{report}");
    assert_eq!(report["voice"]["name"], "Grace");
    assert_eq!(report["speech_status"], 200);
    assert!(report["bytes"].as_u64().unwrap() > 24_000 / 5, "{report}");
    assert_eq!(report["listed"], json!([id]), "{report}");
    assert_eq!(report["bad"][0], "UnprocessableEntityError", "{report}");
    assert!(
        report["bad"][2].as_str().unwrap().contains("minimum"),
        "{report}"
    );
}

/// The store's disk is full (a file-size limit the kernel enforces, in a child process): the
/// upload gets 507 naming the store's path, nothing of it is left in the store, and the server
/// goes on serving.
#[test]
fn a_full_disk_refuses_the_upload_with_507_and_the_server_lives_on() {
    use ferrovox_faults::{Fault, Scratch, Side};
    let scratch = Scratch::new().unwrap();
    let store_dir = scratch.path().join("store");
    // The model is written before the disk fills.
    let model = ferrovox_faults::in_child().then(|| cloning_chatterbox_dir("clone-full"));
    match scratch.run(Fault::DiskFull { bytes: 512 }) {
        Side::Child => {
            let model = model.expect("made in the child");
            let served = serve_with_store(model, ServerConfig::default(), store_dir.clone());
            let (status, body) = failure(upload(
                &served,
                &[("name", "Ada")],
                Some(reference_wav().as_slice()),
            ));
            eprintln!("upload on a full disk: {status} {body}");
            assert_eq!(status, 507, "{body}");
            assert_eq!(body["error"]["code"], "insufficient_storage");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(store_dir.to_str().unwrap()), "{message}");
            let listed = json_of(served.server.get("/v1/audio/voices").unwrap());
            assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");
            let served_voice = json!(served.dir.to_str().unwrap());
            assert_eq!(speak(&served, served_voice, 1).unwrap().status(), 200);
        }
        Side::Parent => scratch.assert_nothing_left(),
    }
}

/// Turbo clones under its own rule: a 3 s clip is refused (more than 5 s is needed), a 9 s one
/// is stored with Turbo's parameters (15 s of T3 prompt, −27 LUFS) and speaks, and the stored
/// voice is the library's clone of the same clip.
#[test]
fn a_turbo_model_clones_under_its_rule_and_speaks_the_voice() {
    let dir = turbo_cloning_chatterbox_dir("clone-turbo");
    let served = serve_with_store(dir, ServerConfig::default(), temp_dir("clone-turbo-store"));
    let model = served.dir.to_str().unwrap().to_string();
    let short = upload(
        &served,
        &[("name", "Short")],
        Some(reference_wav().as_slice()),
    );
    let (status, body) = failure(short);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("5"),
        "{body}"
    );

    let clip = reference_wav_repeated(3);
    let created = upload(&served, &[("name", "Tess")], Some(clip.as_slice())).unwrap();
    assert_eq!(created.status(), 201);
    let voice = json_of(created);
    let id = voice["id"].as_str().unwrap().to_string();
    let store =
        ferrovox_voice_store::BlockingVoiceStore::open(Some(served.store_dir.to_str().unwrap()))
            .unwrap();
    let stored = store.get(&id).unwrap();
    assert_eq!(stored.meta.encoder_params["t3_prompt_s"], 15);
    assert_eq!(stored.meta.encoder_params["loudness_lufs"], -27.0);
    let service = CloningService::new(Device::Cpu);
    let direct = service
        .encode(&model, &service.read_clip(&model, &clip).unwrap(), "Tess")
        .unwrap();
    assert_eq!(stored.conditionals.as_ref(), direct.conditionals.as_slice());

    let body = json!({
        "model": "chatterbox", "voice": id, "input": "Hello there, a cloned voice.",
        "response_format": "pcm", "max_new_tokens": 40, "seed": 5,
    });
    let response = served.server.post(&body.to_string());
    if let Err(ureq::Error::Status(..)) = &response {
        panic!("{:?}", failure(response));
    }
    let audio = body_bytes(response.unwrap());
    assert!(audio.len() > 24_000 / 5, "{} bytes", audio.len());
    let builtin = json!({
        "model": "chatterbox", "voice": model, "input": "Hello there, a cloned voice.",
        "response_format": "pcm", "max_new_tokens": 40, "seed": 5,
    });
    assert_ne!(
        body_bytes(served.server.post(&builtin.to_string()).unwrap()),
        audio,
        "the cloned voice must condition the audio"
    );
}
