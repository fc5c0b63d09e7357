//! Faults inside the server: a model that panics in the middle of a batch fails only the
//! requests it was synthesizing, with the reason, and the server goes on serving; a truncated
//! voice stops the server or is served around, as configured; a client that hangs up
//! mid-stream stops its synthesis and leaves nothing behind.
// ureq's error type is large; returning it by value is fine in tests.
#![allow(clippy::result_large_err)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrovox_engine::BatcherConfig;

/// One test at a time: the hang-up test counts this process's descriptors and threads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn metric(server: &TestServer, line_start: &str) -> String {
    let metrics = server.get("/metrics").unwrap().into_string().unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {metrics}"))
        .to_string()
}

#[test]
fn a_panic_in_a_batch_fails_its_request_and_spares_the_rest() {
    let _serial = serial();
    let tone = Tone::new();
    let server = Arc::new(TestServer::start(
        vec![tone.clone()],
        tone_config(),
        Some(BatcherConfig {
            max_batch: 16,
            max_wait: Duration::from_millis(50),
            queue_capacity: 64,
        }),
        true,
    ));
    // The worker is held in a first batch while the others queue, so they share the next one.
    let post = |text: String| {
        let server = server.clone();
        std::thread::spawn(move || (text.clone(), server.post(&request("tone", &text, &[]))))
    };
    let holder = post("Hold on and wait.".into());
    tone.wait_started(1);
    let faulty = post("This one will panic.".into());
    let others: Vec<_> = (0..4)
        .map(|i| post(format!("Client {i} is fine.")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    tone.open();

    let (code, error) = failure(faulty.join().unwrap().1);
    assert_eq!(code, 500, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tone") && message.contains("panicked: injected fault"),
        "{message}"
    );
    let served: Vec<(String, Vec<u8>)> = others
        .into_iter()
        .chain([holder])
        .map(|h| {
            let (text, response) = h.join().unwrap();
            (text, body_bytes(response.unwrap()))
        })
        .collect();
    // The holder's unit, the batch of five that panicked, then each of those five alone.
    assert_eq!(
        tone.started(),
        1 + 5 + 5,
        "the faulty request shared its batch"
    );
    for (text, bytes) in served {
        assert_close(
            &wav_samples(&bytes),
            &expected(&server, &text),
            1.0 / 32767.0,
        );
    }
    // The worker lives on.
    let after = server.post(&request("tone", "And after the fault.", &[]));
    assert_eq!(after.unwrap().status(), 200);
    assert_eq!(server.get("/health").unwrap().status(), 200);
    assert_eq!(
        metric(&server, "ferrovox_queue_depth"),
        "ferrovox_queue_depth 0"
    );
}

#[test]
fn a_panic_without_batching_is_a_500_and_the_next_request_is_served() {
    let _serial = serial();
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    for stream in ["audio", "sse"] {
        let extra = [("stream_format", serde_json::json!(stream))];
        let (code, error) = failure(server.post(&request("tone", "Time to panic.", &extra)));
        assert_eq!(code, 500, "{error}");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("panicked"));
    }
    let ok = server.post(&request("tone", "Fine again.", &[])).unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        metric(&server, "ferrovox_queue_depth"),
        "ferrovox_queue_depth 0"
    );
}

/// A VITS voice directory whose weights file is cut short, as an interrupted copy leaves it.
fn truncated_voice_dir(tag: &str) -> std::path::PathBuf {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/vits/tests/fixtures");
    let dir = std::env::temp_dir().join(format!("ferrovox-truncated-{tag}-{}", std::process::id()));
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
    dir
}

#[test]
fn a_truncated_voice_stops_the_server_unless_told_to_serve_the_others() {
    let _serial = serial();
    let broken = truncated_voice_dir("server");
    let broken_id = broken.to_str().unwrap().to_string();
    let config = |skip| ferrovox_server::ServerConfig {
        voices: vec!["tone".into(), broken_id.clone()],
        skip_failed_voices: skip,
        ..tone_config()
    };

    // By default a voice that cannot load fails the load, naming the file and what is wrong.
    let strict = TestServer::start(vec![Tone::new()], config(false), None, false);
    let err = strict.state.load_voices().unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let (code, body) = failure(strict.get("/health"));
    assert_eq!(code, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains(&broken_id),
        "{body}"
    );

    // Told to serve the others: the tone voice speaks, the broken one is a 503 naming why.
    let lenient = TestServer::start(vec![Tone::new()], config(true), None, false);
    lenient.state.load_voices().unwrap();
    let health: serde_json::Value = lenient.get("/health").unwrap().into_json().unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["failed_voices"][0]["voice"], broken_id.as_str());
    let ok = lenient.post(&request("alloy", "The default voice speaks.", &[]));
    assert_eq!(ok.unwrap().status(), 200);
    let (code, error) = failure(lenient.post(&request(&broken_id, "Hello.", &[])));
    assert_eq!(code, 503, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed to load") && message.contains("model.safetensors"),
        "{message}"
    );
    std::fs::remove_dir_all(broken).unwrap();
}

#[test]
fn a_server_whose_every_voice_fails_is_not_ready() {
    let _serial = serial();
    let broken = truncated_voice_dir("every");
    let state = TestServer::start(
        Vec::new(),
        ferrovox_server::ServerConfig {
            voices: vec![broken.to_str().unwrap().into()],
            skip_failed_voices: true,
            ..tone_config()
        },
        None,
        false,
    );
    assert!(state.state.load_voices().is_err());
    assert!(!state.state.is_ready());
    std::fs::remove_dir_all(broken).unwrap();
}

/// Open file descriptors and threads of this process (Linux).
fn fds_and_threads() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0);
    (fds, threads)
}

/// Posts a streamed request over a raw socket, reads until the first audio bytes arrive and
/// hangs up.
fn hang_up_after_first_audio(url: &str, text: &str) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = request(
        "tone",
        text,
        &[("stream_format", serde_json::json!("audio"))],
    );
    write!(
        socket,
        "POST /v1/audio/speech HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The status line, then until some audio is in.
    while got.len() < 12 || (got.starts_with(b"HTTP/1.1 200") && got.len() < 400) {
        let n = socket
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{e} after {}", String::from_utf8_lossy(&got)));
        assert!(n > 0, "the server closed first");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_client_that_hangs_up_stops_its_synthesis_and_leaks_nothing() {
    let _serial = serial();
    let tone = Tone::new();
    let server = TestServer::tone(&tone);
    let sentences = 150;
    let text: String = (0..sentences)
        .map(|i| format!("Sentence {i} goes on. "))
        .collect();
    let settle = || {
        let mut last = tone.started();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = tone.started();
            if now == last {
                return now;
            }
            last = now;
        }
    };

    eprintln!("posting");
    hang_up_after_first_audio(&server.url, &text);
    eprintln!("hung up at {}", tone.started());
    let started = settle();
    eprintln!("settled at {started}");
    assert!(
        started < sentences / 4,
        "{started} of {sentences} sentences synthesized for a client that left"
    );
    assert_eq!(
        metric(&server, "ferrovox_queue_depth"),
        "ferrovox_queue_depth 0"
    );

    // Hang-ups again and again hold no descriptor, thread or request slot.
    let before = fds_and_threads();
    for _ in 0..20 {
        hang_up_after_first_audio(&server.url, &text);
    }
    settle();
    let after = fds_and_threads();
    eprintln!("descriptors and threads before {before:?}, after 20 hang-ups {after:?}");
    assert!(
        after.0 <= before.0 + 2,
        "descriptors {before:?} → {after:?}"
    );
    assert!(after.1 <= before.1 + 4, "threads {before:?} → {after:?}");
    assert_eq!(
        metric(&server, "ferrovox_queue_depth"),
        "ferrovox_queue_depth 0"
    );
    let slots = tone_config().max_concurrent_requests;
    for _ in 0..slots + 1 {
        let ok = server.post(&request("tone", "Still served.", &[])).unwrap();
        assert_eq!(ok.status(), 200);
    }
}

#[test]
fn during_shutdown_new_requests_get_503_while_admitted_ones_finish() {
    let _serial = serial();
    let tone = Tone::new();
    let mut server = TestServer::tone(&tone);
    let url = server.url.clone();
    let body = request("tone", "Admitted before the stop, then wait.", &[]);
    let admitted = std::thread::spawn(move || {
        ureq::post(&format!("{url}/v1/audio/speech"))
            .set("content-type", "application/json")
            .send_string(&body)
            .map(body_bytes)
    });
    tone.wait_started(1);
    server.begin_stop();
    std::thread::sleep(Duration::from_millis(100));
    let (code, error) = failure(server.post(&request("tone", "Too late.", &[])));
    assert_eq!(code, 503, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    tone.open();
    let bytes = admitted.join().unwrap().unwrap();
    let want = expected(&server, "Admitted before the stop, then wait.");
    assert_close(&wav_samples(&bytes), &want, 1.0 / 32767.0);
    assert!(server.stop().is_ok());
}
