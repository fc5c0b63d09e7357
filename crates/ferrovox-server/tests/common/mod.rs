//! A real server on 127.0.0.1 with a test model, and a blocking HTTP client.
#![allow(dead_code)]

pub mod chatterbox;

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrovox_engine::{
    BatcherConfig, Engine, EngineConfig, EngineError, SynthesisOptions, TtsModel, Unit,
};
use ferrovox_server::{AppState, Cloning, ServerConfig};

/// A model whose audio is a function of its input: each unit is `40 × ids` samples of a tone
/// whose pitch is the unit's first id. A unit whose text contains `wait` blocks until the
/// gate opens; a batch holding a unit whose text contains `panic` panics (an injected fault).
pub struct Tone {
    gate: Mutex<bool>,
    opened: Condvar,
    /// Units synthesized so far (text of each unit's first id, in order).
    pub done: Mutex<Vec<u32>>,
    /// Units that have started synthesizing.
    pub started: Mutex<usize>,
}

/// The id `wait` maps to.
pub const WAIT: u32 = 999;
/// The id `panic` maps to.
pub const PANIC: u32 = 998;
pub const RATE: u32 = 16_000;

impl Tone {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: Mutex::new(false),
            opened: Condvar::new(),
            done: Mutex::new(Vec::new()),
            started: Mutex::new(0),
        })
    }

    pub fn open(&self) {
        *self.gate.lock().unwrap() = true;
        self.opened.notify_all();
    }

    pub fn started(&self) -> usize {
        *self.started.lock().unwrap()
    }

    /// Waits until `n` units have started.
    pub fn wait_started(&self, n: usize) {
        for _ in 0..500 {
            if self.started() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {} units started, expected {n}", self.started());
    }

    pub fn unit_audio(ids: &[u32]) -> Vec<f32> {
        let pitch = ids.first().copied().unwrap_or(1) as f32;
        (0..40 * ids.len())
            .map(|i| 0.3 * (i as f32 * pitch * 0.001).sin())
            .collect()
    }
}

impl TtsModel for Tone {
    fn id(&self) -> &str {
        "tone"
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    fn speakers(&self) -> usize {
        1
    }
    fn languages(&self) -> Vec<String> {
        vec!["en".into()]
    }
    fn family(&self) -> ferrovox_voices::Family {
        ferrovox_voices::Family::Piper
    }
    fn validate(&self, _: &SynthesisOptions) -> Result<(), EngineError> {
        Ok(())
    }
    fn batch_key(&self, _: &SynthesisOptions) -> ferrovox_engine::BatchKey {
        Vec::new()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn prepare(&self, text: &str, _: &SynthesisOptions) -> Result<Vec<Unit>, EngineError> {
        let units: Vec<Unit> = text
            .split('.')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let mut ids: Vec<u32> = s.bytes().map(u32::from).collect();
                if s.contains("wait") {
                    ids[0] = WAIT;
                }
                if s.contains("panic") {
                    ids[0] = PANIC;
                }
                Unit::sentence(ids)
            })
            .collect();
        if units.is_empty() {
            return Err(EngineError::EmptyInput("nothing but dots".into()));
        }
        Ok(units)
    }
    fn synthesize_units(
        &self,
        units: &[Unit],
        _: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        *self.started.lock().unwrap() += units.len();
        if units.iter().any(|u| u.ids[0] == PANIC) {
            panic!("injected fault in a batch of {}", units.len());
        }
        if units.iter().any(|u| u.ids[0] == WAIT) {
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        let out = units.iter().map(|u| Self::unit_audio(&u.ids)).collect();
        self.done
            .lock()
            .unwrap()
            .extend(units.iter().map(|u| u.ids[0]));
        Ok(out)
    }
}

/// A server running on its own thread and runtime.
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub engine: Arc<Engine>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn quiet() -> SynthesisOptions {
    SynthesisOptions {
        vits: ferrovox_engine::VitsOptions {
            noise_scale: Some(0.0),
            noise_w: Some(0.0),
            ..Default::default()
        },
        unit_silence: 0.05,
        ..Default::default()
    }
}

pub fn tone_config() -> ServerConfig {
    ServerConfig {
        voices: vec!["tone".into()],
        defaults: quiet(),
        ..Default::default()
    }
}

impl TestServer {
    /// Serves `models` (already loaded when `ready`).
    pub fn start(
        models: Vec<Arc<dyn TtsModel>>,
        config: ServerConfig,
        batching: Option<BatcherConfig>,
        ready: bool,
    ) -> Self {
        Self::start_with(models, config, batching, ready, None)
    }

    /// [`TestServer::start`], cloning voices with `cloning` when given.
    pub fn start_with(
        models: Vec<Arc<dyn TtsModel>>,
        config: ServerConfig,
        batching: Option<BatcherConfig>,
        ready: bool,
        cloning: Option<Cloning>,
    ) -> Self {
        let engine = Arc::new(Engine::new(EngineConfig {
            batching,
            warm_up: false,
            ..Default::default()
        }));
        for m in models {
            engine.insert(m).unwrap();
        }
        let state = match cloning {
            Some(c) => AppState::with_cloning(engine.clone(), config, c),
            None => AppState::new(engine.clone(), config),
        };
        if ready {
            state.load_voices().unwrap();
        }
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).unwrap();
                ferrovox_server::serve(listener, serve_state, async {
                    let _ = stop.await;
                })
                .await
            })
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            url: format!("http://{addr}"),
            state,
            engine,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn tone(tone: &Arc<Tone>) -> Self {
        Self::start(vec![tone.clone()], tone_config(), None, true)
    }

    /// Asks for a graceful shutdown and waits for the server to return.
    pub fn stop(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }

    pub fn begin_stop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }

    pub fn post(&self, body: &str) -> Result<ureq::Response, ureq::Error> {
        ureq::post(&format!("{}/v1/audio/speech", self.url))
            .set("content-type", "application/json")
            .send_string(body)
    }

    pub fn get(&self, path: &str) -> Result<ureq::Response, ureq::Error> {
        ureq::get(&format!("{}{path}", self.url)).call()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `{"model":"tts-1","voice":VOICE,"input":TEXT,"response_format":"wav", ...extra}` as JSON
/// (WAV, which the tests read sample for sample, unless `extra` names another format).
pub fn request(voice: &str, input: &str, extra: &[(&str, serde_json::Value)]) -> String {
    let mut body = serde_json::json!({
        "model": "tts-1", "voice": voice, "input": input, "response_format": "wav",
    });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    body.to_string()
}

/// The status and error body of a failed request.
pub fn failure(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    match result {
        Err(ureq::Error::Status(code, response)) => (
            code,
            serde_json::from_str(&response.into_string().unwrap()).unwrap(),
        ),
        Ok(r) => panic!("expected a failure, got {}", r.status()),
        Err(e) => panic!("transport error: {e}"),
    }
}

pub fn body_bytes(response: ureq::Response) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    bytes
}

/// A Python with the official `openai` client (`FERROVOX_OPENAI_PYTHON`, which `.ci/run` sets),
/// or `None` with a note, which is an error when `FERROVOX_REQUIRE_OPENAI=1`.
/// Runs `tests/SCRIPT ARGS...` with `python` and returns the JSON of its last line of output
/// (the test scripts print one), failing with the script's output when it fails.
pub fn python_report(
    python: &std::ffi::OsStr,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

pub fn openai_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("FERROVOX_OPENAI_PYTHON");
    if python.is_none() {
        assert_ne!(
            std::env::var("FERROVOX_REQUIRE_OPENAI").as_deref(),
            Ok("1"),
            "FERROVOX_REQUIRE_OPENAI=1 but FERROVOX_OPENAI_PYTHON is not set"
        );
        eprintln!("SKIPPED: FERROVOX_OPENAI_PYTHON is not set");
    }
    python
}

/// The tone model's audio of `text`, run past the server's batcher.
pub fn expected(server: &TestServer, text: &str) -> Vec<f32> {
    // Past the server's batcher, so its counts stay the server's.
    let model = server.engine.get("tone").unwrap().model().clone();
    ferrovox_engine::Voice::new(model, None)
        .synthesize(text, &quiet())
        .unwrap()
        .samples
}

pub fn wav_samples(bytes: &[u8]) -> Vec<f32> {
    let wav = ferrovox_audio::read_wav(bytes).unwrap();
    assert_eq!((wav.sample_rate, wav.channels), (RATE, 1));
    wav.samples
}

pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "lengths");
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err <= tol, "max abs error {err}");
}
