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
    let cases: [(&[&str], &str); 4] = [
        (&["say", ""], "no text to speak"),
        (
            &["say", "--voice", "xx_XX-nobody", "hi"],
            "unknown voice `xx_XX-nobody`",
        ),
        (&["say", "--noise-w", "5", "hi"], "--noise-w 5"),
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
}
