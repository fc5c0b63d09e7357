//! A real `ferrovox wyoming` process (and `ferrovox serve --wyoming`) talked to over TCP on
//! 127.0.0.1 by a client written here from the protocol: describe, plain and streaming
//! synthesis, an unknown voice, a malformed header, a client that leaves mid-stream. Every
//! event the client sees is logged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const VOICE: &str = ferrovox_voices::DEFAULT_VOICE;

fn voice_available() -> bool {
    match ferrovox_voices::resolve(VOICE) {
        Ok(_) => true,
        Err(e) if std::env::var("FERROVOX_REQUIRE_VOICES").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: default voice unavailable: {e}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// Starts `ferrovox ARGS` and returns it with the Wyoming address it printed, once ready.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovox"))
        .env("FERROVOX_DEVICE", "cpu")
        .args(args)
        .arg("--no-warm-up")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("wyoming on tcp://") {
            addr = rest.split(';').next().map(str::to_string);
        }
        if line == "ready" {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr.expect("the server printed its Wyoming address"))
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    name: &'static str,
}

#[derive(Debug)]
struct Event {
    kind: String,
    data: Value,
    payload: Vec<u8>,
}

impl Client {
    fn connect(addr: &str, name: &'static str) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            name,
        }
    }

    fn send(&mut self, kind: &str, data: Value) {
        eprintln!("[{}] → {kind} {data}", self.name);
        let line = json!({"type": kind, "data": data}).to_string();
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// The next event, or `None` once the server closed the connection.
    fn recv(&mut self) -> Option<Event> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap() == 0 {
            eprintln!("[{}] ← (closed)", self.name);
            return None;
        }
        let header: Value = serde_json::from_str(&line).unwrap();
        let mut data = header["data"].clone();
        if let Some(n) = header["data_length"].as_u64() {
            let mut extra = vec![0; n as usize];
            self.reader.read_exact(&mut extra).unwrap();
            let extra: Value = serde_json::from_slice(&extra).unwrap();
            for (k, v) in extra.as_object().unwrap() {
                data[k] = v.clone();
            }
        }
        let mut payload = vec![0; header["payload_length"].as_u64().unwrap_or(0) as usize];
        self.reader.read_exact(&mut payload).unwrap();
        let kind = header["type"].as_str().unwrap().to_string();
        if kind == "info" {
            eprintln!("[{}] ← info {}", self.name, data["tts"][0]["voices"]);
        } else {
            eprintln!(
                "[{}] ← {kind} {data} ({} payload bytes)",
                self.name,
                payload.len()
            );
        }
        Some(Event {
            kind,
            data,
            payload,
        })
    }

    /// Events up to and including one of kind `last`: the audio's samples in between.
    fn audio_until(&mut self, last: &str) -> (Vec<Event>, usize) {
        let mut events = Vec::new();
        let mut samples = 0;
        loop {
            let e = self.recv().expect("the connection stayed open");
            if e.kind == "audio-chunk" {
                assert_eq!(
                    (e.data["width"].clone(), e.data["channels"].clone()),
                    (json!(2), json!(1))
                );
                samples += e.payload.len() / 2;
            }
            let done = e.kind == last || e.kind == "error";
            events.push(e);
            if done {
                return (events, samples);
            }
        }
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    let mut k: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    k.dedup();
    k
}

fn check_session(addr: &str) {
    let mut c = Client::connect(addr, "plain");
    c.send("describe", Value::Null);
    let info = c.recv().unwrap();
    assert_eq!(info.kind, "info");
    let tts = &info.data["tts"][0];
    assert_eq!(tts["supports_synthesize_streaming"], true);
    assert_eq!(tts["voices"][0]["name"], VOICE);
    assert_eq!(tts["voices"][0]["languages"][0], "en-us");

    c.send(
        "synthesize",
        json!({"text": "Hello there. How are you today?", "voice": {"name": VOICE}}),
    );
    let (events, samples) = c.audio_until("audio-stop");
    assert_eq!(kinds(&events), ["audio-start", "audio-chunk", "audio-stop"]);
    assert_eq!(events[0].data["rate"], 22_050);
    assert!(samples > 22_050, "{samples} samples");

    // An unknown voice: an error, and the connection goes on.
    c.send(
        "synthesize",
        json!({"text": "Hello.", "voice": {"name": "xx_XX-nobody"}}),
    );
    let error = c.recv().unwrap();
    assert_eq!(error.kind, "error");
    assert_eq!(error.data["code"], "unknown-voice");
    assert!(error.data["text"]
        .as_str()
        .unwrap()
        .contains("xx_XX-nobody"));
    c.send("synthesize", json!({"text": "Still here."}));
    let (events, _) = c.audio_until("audio-stop");
    assert_eq!(events.last().unwrap().kind, "audio-stop");

    // Streaming text: the first sentence is spoken before the rest of the text is sent.
    let mut s = Client::connect(addr, "streaming");
    s.send("synthesize-start", json!({"voice": {"name": VOICE}}));
    s.send(
        "synthesize-chunk",
        json!({"text": "The first sentence is com"}),
    );
    s.send(
        "synthesize-chunk",
        json!({"text": "plete here. The second"}),
    );
    let start = s.recv().unwrap();
    assert_eq!(start.kind, "audio-start");
    let first = s.recv().unwrap();
    assert_eq!(first.kind, "audio-chunk", "audio before the text has ended");
    s.send(
        "synthesize-chunk",
        json!({"text": " one ends with the stop."}),
    );
    // What a client that also speaks to servers without streaming sends: ignored here.
    s.send(
        "synthesize",
        json!({"text": "The first sentence is complete here. The second one ends with the stop."}),
    );
    s.send("synthesize-stop", Value::Null);
    let (events, samples) = s.audio_until("synthesize-stopped");
    assert_eq!(
        kinds(&events),
        ["audio-chunk", "audio-stop", "synthesize-stopped"]
    );
    assert!(samples + first.payload.len() / 2 > 2 * 22_050);

    // A client that leaves mid-synthesis; the server serves on.
    let mut gone = Client::connect(addr, "leaves");
    gone.send("synthesize", json!({"text": "A long text. ".repeat(40)}));
    let _ = gone.recv();
    drop(gone);
    // A malformed header: an error naming it, then the connection closes.
    let mut bad = Client::connect(addr, "malformed");
    bad.writer.write_all(b"this is not json\n").unwrap();
    let error = bad.recv().unwrap();
    assert_eq!(
        (error.kind.as_str(), error.data["code"].as_str()),
        ("error", Some("malformed"))
    );
    assert!(bad.recv().is_none());
    let mut after = Client::connect(addr, "after");
    after.send("synthesize", json!({"text": "Serving on."}));
    let (events, samples) = after.audio_until("audio-stop");
    assert_eq!(events.last().unwrap().kind, "audio-stop");
    assert!(samples > 0);
}

#[test]
fn ferrovox_wyoming_speaks_plain_and_streamed_text() {
    if !voice_available() {
        return;
    }
    let (mut child, addr) = start(&["wyoming", "--uri", "tcp://127.0.0.1:0"]);
    check_session(&addr);
    child.kill().unwrap();
    let _ = child.wait();
}

/// `serve --wyoming` beside HTTP on `--host`/`--port`, sharing the engine.
#[test]
fn serve_runs_wyoming_beside_http() {
    if !voice_available() {
        return;
    }
    let (mut child, addr) = start(&[
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--wyoming",
        "tcp://127.0.0.1:0",
    ]);
    let mut c = Client::connect(&addr, "beside-http");
    c.send("describe", Value::Null);
    assert_eq!(c.recv().unwrap().kind, "info");
    c.send("synthesize", json!({"text": "Both at once."}));
    let (events, _) = c.audio_until("audio-stop");
    assert_eq!(events.last().unwrap().kind, "audio-stop");
    child.kill().unwrap();
    let _ = child.wait();
}
