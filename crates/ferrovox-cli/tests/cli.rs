//! The `ferrovox` binary as a user runs it.

use std::process::Command;

fn ferrovox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovox"));
    cmd.env("FERROVOX_DEVICE", "cpu")
        .env_remove("RUST_BACKTRACE");
    cmd
}

fn voice_available() -> bool {
    match ferrovox_voices::resolve(ferrovox_voices::DEFAULT_VOICE) {
        Ok(_) => true,
        Err(e) if std::env::var("FERROVOX_REQUIRE_VOICES").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: default voice unavailable: {e}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn say_writes_a_wav_with_the_default_voice() {
    if !voice_available() {
        return;
    }
    let out = std::env::temp_dir().join(format!("ferrovox-cli-{}.wav", std::process::id()));
    let status = ferrovox()
        .args(["say", "Hello there. How are you?", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let wav = ferrovox_audio::read_wav(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!((wav.sample_rate, wav.channels), (22050, 1));
    let seconds = wav.samples.len() as f64 / 22050.0;
    assert!((1.0..6.0).contains(&seconds), "{seconds} s");
    let peak = wav.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.05, "audio is silent (peak {peak})");
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn raw_output_streams_pcm_to_stdout() {
    if !voice_available() {
        return;
    }
    let out = ferrovox()
        .args(["say", "--output-raw", "One. Two."])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() > 22050, "{} bytes", out.stdout.len());
    assert_eq!(out.stdout.len() % 2, 0);
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let cases: [(&[&str], &str); 5] = [
        (&["say", ""], "no text to speak"),
        (
            &["say", "--voice", "xx_XX-nobody", "hi"],
            "unknown voice `xx_XX-nobody`",
        ),
        (&["say", "--noise-w", "5", "hi"], "--noise-w 5 is outside"),
        (
            &["say", "--speed", "50", "hi"],
            "--speed 50 is outside 0.25..=4",
        ),
        (&["--device", "tpu", "device"], "invalid device `tpu`"),
    ];
    for (args, message) in cases {
        let out = ferrovox().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn device_json_reports_the_cpu() {
    let out = ferrovox().args(["device", "--json"]).output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "cpu");
    assert!(report["tuning"]["threads"]["threads"].as_u64().unwrap() >= 1);
    assert!(report["memory"]["Ok"]["total"].as_u64().unwrap() > 0);
    // The CPU's features as detected at run time, and which the kernels use.
    let detected: Vec<&str> = report["cpu"]["detected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    if cfg!(target_arch = "x86_64") {
        assert!(detected.contains(&"sse4.2"), "{detected:?}");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        assert_eq!(detected.contains(&"avx512f"), avx512);
        let uses = report["cpu"]["used_by_kernels"].as_array().unwrap();
        assert_eq!(
            uses.iter()
                .any(|u| u["features"].as_str().unwrap().contains("avx512f")),
            avx512 && std::arch::is_x86_feature_detected!("avx512dq")
        );
    }
}

#[test]
fn a_voice_refuses_another_familys_flags_by_name() {
    if !voice_available() {
        return;
    }
    let out = ferrovox()
        .args(["say", "--exaggeration", "0.7", "hi", "-o", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--exaggeration does not apply to voice `en_US-joe-medium` (piper)"),
        "{stderr}"
    );
}

#[test]
fn flac_output_and_a_chrome_trace() {
    if !voice_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrovox-cli-flac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (flac, trace) = (dir.join("a.flac"), dir.join("trace.json"));
    let status = ferrovox()
        .args(["say", "Lossless. Two sentences.", "--format", "flac", "-o"])
        .arg(&flac)
        .arg("--tracing")
        .arg(&trace)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(&std::fs::read(&flac).unwrap()[..4], b"fLaC");
    let events: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for span in [
        "synthesize",
        "unit",
        "vits.text_encoder",
        "vits.flow",
        "vits.decoder",
    ] {
        assert!(names.contains(&span), "no `{span}` span in the trace");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `ferrovox serve` on a free port; returns the child and its base URL once it is ready.
fn serve(extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = ferrovox()
        .args(["serve", "--bind", "127.0.0.1:0", "--no-warm-up"])
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("listening on ") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if line == "ready" {
            break;
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url.expect("the server printed its address"))
}

#[test]
fn serve_finishes_in_flight_requests_on_sigterm_and_exits_0() {
    if !voice_available() {
        return;
    }
    let (child, url) = serve(&[]);
    let health: serde_json::Value = ureq::get(&format!("{url}/health"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let text = "This request is in flight when the server is told to stop. \
        It has several sentences, so synthesis takes a while. \
        The server must finish it before it exits. \
        Only then may the process end, with status zero.";
    let body = serde_json::json!({
        "model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav",
    })
    .to_string();
    let request_url = format!("{url}/v1/audio/speech");
    let client = std::thread::spawn(move || {
        let response = ureq::post(&request_url)
            .set("content-type", "application/json")
            .send_string(&body)
            .unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
        bytes
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let bytes = client.join().unwrap();
    let wav = ferrovox_audio::read_wav(&bytes).unwrap();
    let seconds = wav.samples.len() as f64 / wav.sample_rate as f64;
    assert!(
        seconds > 8.0,
        "the in-flight request was cut short: {seconds} s"
    );
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn serve_exits_with_the_reason_when_a_voice_cannot_load() {
    let out = ferrovox()
        .args(["serve", "--bind", "127.0.0.1:0", "--voice", "xx_XX-nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown voice `xx_XX-nobody`"), "{stderr}");
}

/// The cloned-voice commands against an empty store: listing works, and a missing clip or an
/// unknown voice is refused naming it.
#[test]
fn cloned_voice_commands_name_what_is_wrong() {
    let store = std::env::temp_dir().join(format!("ferrovox-cli-store-{}", std::process::id()));
    std::fs::create_dir_all(&store).unwrap();
    let store_arg = store.to_str().unwrap();
    let out = ferrovox()
        .args(["voices", "cloned", "--voice-store", store_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cloned id"));
    // `voices list` shows the catalog, then the same store's cloned voices.
    let out = ferrovox()
        .args(["voices", "list", "--voice-store", store_arg])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("en_US-joe-medium"),
        "{listed}"
    );
    assert!(listed.contains("\ncloned id"), "{listed}");
    let missing = store.join("no-such-clip.wav");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "voices",
                "add",
                missing,
                "--name",
                "x",
                "--voice-store",
                store_arg,
            ],
            "no-such-clip.wav",
        ),
        (
            &["voices", "rm", "nobody", "--voice-store", store_arg],
            "nobody",
        ),
        (
            &["say", "--voice", "chatterbox", "--reference", missing, "hi"],
            "no-such-clip.wav",
        ),
    ];
    for (args, message) in cases {
        let out = ferrovox().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&store).unwrap();
}

/// The output file's extension picks the format: `.mp3` is MP3 at the voice's rate, `.opus`
/// Ogg Opus; both decode back.
#[test]
fn mp3_and_opus_output_by_extension() {
    if !voice_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrovox-cli-mp3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["a.mp3", "a.opus"] {
        let path = dir.join(name);
        let status = ferrovox()
            .args(["say", "Compressed speech."])
            .arg("-o")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".opus") {
            assert_eq!(&bytes[..4], b"OggS");
            assert_eq!(&bytes[28..36], b"OpusHead");
        } else {
            let (samples, rate) = ferrovox_audio::decode_audio(&bytes).unwrap();
            assert_eq!(rate, 22_050);
            assert!(samples.len() > 22_050 / 2, "{} samples", samples.len());
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A voice directory whose weights are cut short: `serve` names the file and exits 2, unless
/// told to serve the voices that load.
#[test]
fn serve_with_a_truncated_voice_exits_2_or_serves_the_others() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/vits/tests/fixtures");
    let dir = std::env::temp_dir().join(format!("ferrovox-cli-truncated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("tiny_sdp.config.json", "config.json"),
        ("vocab.json", "vocab.json"),
    ] {
        std::fs::copy(fixtures.join(from), dir.join(to)).unwrap();
    }
    let weights = std::fs::read(fixtures.join("tiny_sdp.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    let broken = dir.to_str().unwrap().to_string();

    let out = ferrovox()
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-warm-up",
            "--voice",
            &broken,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model.safetensors"), "{stderr}");

    if voice_available() {
        let voices = format!("{},{broken}", ferrovox_voices::DEFAULT_VOICE);
        let (mut child, url) = serve(&["--skip-failed-voices", "--voice", &voices]);
        let health: serde_json::Value = ureq::get(&format!("{url}/health"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["failed_voices"][0]["voice"], broken.as_str());
        let body = serde_json::json!({ "model": "tts-1", "voice": broken, "input": "Hello." });
        match ureq::post(&format!("{url}/v1/audio/speech")).send_json(body) {
            Err(ureq::Error::Status(503, r)) => {
                let text = r.into_string().unwrap();
                assert!(text.contains("failed to load"), "{text}");
            }
            other => panic!("expected 503, got {other:?}"),
        }
        child.kill().unwrap();
        let _ = child.wait();
    }
    std::fs::remove_dir_all(dir).unwrap();
}
