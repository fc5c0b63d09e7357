//! Backends for the store tests: a temporary directory, and a moto S3 server started on
//! 127.0.0.1 from the venv that `tests/s3/setup.sh` makes. Each fixture also reaches its
//! backend directly, past the store, to corrupt or inspect objects.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferrovox_voice_store::object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use ferrovox_voice_store::object_store::path::Path as ObjectPath;
use ferrovox_voice_store::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ferrovox_voice_store::{NewVoice, S3Settings, StoreOptions, VoiceStore};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

/// Environment variable that turns the test binary into a helper process (see `child_main`).
pub const CHILD_MODE: &str = "FERROVOX_VOICE_STORE_TEST_CHILD";
/// Seed of the helper's payload bytes.
pub const CHILD_SEED: &str = "FERROVOX_VOICE_STORE_TEST_SEED";
/// Clip number of the helper's voice.
pub const CHILD_CLIP: &str = "FERROVOX_VOICE_STORE_TEST_CLIP";

const S3_PREFIX: &str = "voices/cloned";
const S3_KEY: &str = "testing";
const S3_REGION: &str = "us-east-1";

/// A voice for clip number `clip`: the same clip always gives the same key, `seed` varies the
/// payload bytes (an encoder that is not bit-exact between runs).
pub fn voice(name: &str, clip: u32, payload_len: usize, seed: u8) -> NewVoice {
    NewVoice {
        name: name.to_string(),
        family: "chatterbox".into(),
        model_id: "ResembleAI/chatterbox".into(),
        model_version: "1.0.0".into(),
        encoder_params: serde_json::json!({"exaggeration": 0.5, "sample_rate": 24000}),
        source_hash: source_hash(clip),
        duration_s: 7.25,
        loudness_lufs: -23.0,
        conditionals: payload(payload_len, seed),
        consent: None,
    }
}

pub fn source_hash(clip: u32) -> String {
    sha256_hex(&clip.to_le_bytes())
}

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9e37_79b9u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub enum Target {
    Local {
        _dir: tempfile::TempDir,
        root: PathBuf,
    },
    S3 {
        endpoint: String,
        bucket: String,
        raw: Arc<dyn ObjectStore>,
    },
}

/// One backend for one test.
pub struct Fixture {
    pub location: String,
    pub target: Target,
}

impl Fixture {
    pub fn local() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("voices");
        Fixture {
            location: root.to_string_lossy().into_owned(),
            target: Target::Local { _dir: dir, root },
        }
    }

    /// A fresh bucket on the shared moto server, or `None` (with a message) when the moto venv
    /// is absent and `FERROVOX_REQUIRE_MOTO` is not `1`.
    pub fn s3(test: &str) -> Option<Fixture> {
        let endpoint = moto_endpoint()?;
        let bucket = format!("t-{}", test.replace('_', "-"));
        let status = http_request(&endpoint, "PUT", &format!("/{bucket}"))
            .unwrap_or_else(|e| panic!("creating bucket {bucket} on moto: {e}"));
        assert_eq!(status, 200, "creating bucket {bucket} on moto");
        let raw = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_bucket_name(&bucket)
            .with_region(S3_REGION)
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_KEY)
            .build()
            .expect("raw S3 client");
        Some(Fixture {
            location: format!("s3://{bucket}/{S3_PREFIX}"),
            target: Target::S3 {
                endpoint,
                bucket,
                raw: Arc::new(raw),
            },
        })
    }

    /// For an S3 fixture, a store on the same bucket whose client does not use conditional
    /// PUTs, as on an S3-compatible server without them.
    pub fn s3_store_without_conditional_put(&self) -> Option<VoiceStore> {
        let Target::S3 {
            endpoint, bucket, ..
        } = &self.target
        else {
            return None;
        };
        let client = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region(S3_REGION)
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_KEY)
            .with_conditional_put(S3ConditionalPut::Disabled)
            .build()
            .expect("S3 client");
        Some(
            VoiceStore::from_object_store(
                Arc::new(client),
                S3_PREFIX,
                &format!("s3://{bucket}"),
                0,
            )
            .expect("store on an existing client"),
        )
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.target, Target::S3 { .. })
    }

    pub fn options(&self, cache_bytes: u64) -> StoreOptions {
        StoreOptions {
            cache_bytes,
            s3: match &self.target {
                Target::Local { .. } => None,
                Target::S3 { endpoint, .. } => Some(S3Settings {
                    access_key_id: Some(S3_KEY.into()),
                    secret_access_key: Some(S3_KEY.into()),
                    region: Some(S3_REGION.into()),
                    endpoint: Some(endpoint.clone()),
                    ..S3Settings::default()
                }),
            },
        }
    }

    pub fn open(&self, cache_bytes: u64) -> VoiceStore {
        VoiceStore::open_with(Some(&self.location), self.options(cache_bytes)).expect("open store")
    }

    /// Names of the objects stored under `id`, sorted, straight from the backend.
    pub async fn raw_names(&self, id: &str) -> Vec<String> {
        let mut names: Vec<String> = match &self.target {
            Target::Local { root, .. } => match std::fs::read_dir(root.join(id)) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("listing {id}: {e}"),
            },
            Target::S3 { raw, .. } => {
                let dir = raw_path(id, None);
                let objects: Vec<_> = raw.list(Some(&dir)).try_collect().await.unwrap();
                objects
                    .into_iter()
                    .map(|o| o.location.filename().unwrap().to_string())
                    .collect()
            }
        };
        names.sort();
        names
    }

    /// Every object name under the store's root, for "nothing was written" checks.
    pub async fn raw_all(&self) -> Vec<String> {
        match &self.target {
            Target::Local { root, .. } => walk(root),
            Target::S3 { raw, .. } => {
                let objects: Vec<_> = raw.list(None).try_collect().await.unwrap();
                objects
                    .into_iter()
                    .map(|o| o.location.to_string())
                    .collect()
            }
        }
    }

    pub async fn raw_read(&self, id: &str, name: &str) -> Vec<u8> {
        match &self.target {
            Target::Local { root, .. } => std::fs::read(root.join(id).join(name)).unwrap(),
            Target::S3 { raw, .. } => raw
                .get(&raw_path(id, Some(name)))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        }
    }

    pub async fn raw_write(&self, id: &str, name: &str, bytes: Vec<u8>) {
        match &self.target {
            Target::Local { root, .. } => {
                std::fs::create_dir_all(root.join(id)).unwrap();
                std::fs::write(root.join(id).join(name), bytes).unwrap();
            }
            Target::S3 { raw, .. } => {
                raw.put(&raw_path(id, Some(name)), PutPayload::from(bytes))
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn raw_delete(&self, id: &str, name: &str) {
        match &self.target {
            Target::Local { root, .. } => std::fs::remove_file(root.join(id).join(name)).unwrap(),
            Target::S3 { raw, .. } => raw.delete(&raw_path(id, Some(name))).await.unwrap(),
        }
    }

    /// The test binary re-run as a helper process in `mode`, configured the way a real caller
    /// is: the location in `FERROVOX_VOICE_STORE`, S3 through the `AWS_*` variables only.
    pub fn child(&self, mode: &str, clip: u32, seed: u8) -> Helper {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = Command::new(exe);
        command
            .args([
                "child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, mode)
            .env(CHILD_CLIP, clip.to_string())
            .env(CHILD_SEED, seed.to_string())
            .env(ferrovox_voice_store::LOCATION_ENV, &self.location)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        if let Target::S3 { endpoint, .. } = &self.target {
            command
                .env("AWS_ACCESS_KEY_ID", S3_KEY)
                .env("AWS_SECRET_ACCESS_KEY", S3_KEY)
                .env("AWS_DEFAULT_REGION", S3_REGION)
                .env("AWS_ENDPOINT_URL", endpoint);
        }
        Helper::new(command.spawn().expect("spawn helper process"))
    }
}

fn raw_path(id: &str, name: Option<&str>) -> ObjectPath {
    let mut path = ObjectPath::parse(S3_PREFIX).unwrap().join(id);
    if let Some(name) = name {
        path = path.join(name);
    }
    path
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path().to_string_lossy().into_owned());
        }
    }
    out
}

/// A helper process and its pipes. Its stdout is read by a thread, so that waiting for a line
/// can time out instead of hanging the test when the helper misbehaves.
pub struct Helper {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

/// Longest wait for a helper's line: a helper does a few small writes, not seconds of work.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

impl Helper {
    fn new(mut child: Child) -> Helper {
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("helper stdout"));
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            child,
            stdin,
            lines,
        }
    }

    /// What follows `marker` on the next line the helper printed that holds it; other lines
    /// (libtest's) are skipped. Panics if the helper exits or stays silent first.
    pub fn expect_line(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + HELPER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest prints "test child_process_entry ... " without a newline before the
                // helper's first line, so the marker can sit mid-line.
                Ok(line) => {
                    if let Some((_, rest)) = line.trim_end().split_once(marker) {
                        return rest.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("helper printed no {marker:?} within {HELPER_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("helper exited before printing {marker:?}")
                }
            }
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("helper stdin");
        writeln!(stdin, "{line}").expect("write helper stdin");
        stdin.flush().expect("flush helper stdin");
    }

    pub fn wait_success(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + HELPER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait helper") {
                let rest: Vec<String> = self.lines.try_iter().collect();
                assert!(
                    status.success(),
                    "helper failed: {status}\n{}",
                    rest.join("\n")
                );
                return;
            }
            assert!(Instant::now() < deadline, "helper did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `future` on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The moto venv: `$FERROVOX_MOTO_VENV` (relative paths from the repository root), else
/// `<repo root>/../.venv-moto`, the same as `tests/s3/setup.sh`.
fn moto_venv() -> PathBuf {
    match std::env::var_os("FERROVOX_MOTO_VENV").filter(|v| !v.is_empty()) {
        Some(venv) => repo_root().join(venv),
        None => repo_root().join("../.venv-moto"),
    }
}

/// The moto server this test process shares between its S3 tests, started on first use.
fn moto_endpoint() -> Option<String> {
    static MOTO: OnceLock<Result<String, String>> = OnceLock::new();
    let result = MOTO.get_or_init(|| {
        let server = moto_venv().join("bin/moto_server");
        if !server.is_file() {
            let why = format!(
                "{} is missing; run crates/ferrovox-voice-store/tests/s3/setup.sh",
                server.display()
            );
            // Written past libtest's capture, once, so a skipped S3 half shows in a normal run.
            if std::env::var("FERROVOX_REQUIRE_MOTO").as_deref() != Ok("1") {
                let _ = writeln!(std::io::stderr(), "SKIPPED (S3 backend tests): {why}");
            }
            return Err(why);
        }
        Ok(start_moto(&server))
    });
    match result {
        Ok(endpoint) => Some(endpoint.clone()),
        Err(why) => {
            assert!(
                std::env::var("FERROVOX_REQUIRE_MOTO").as_deref() != Ok("1"),
                "FERROVOX_REQUIRE_MOTO=1 but {why}"
            );
            eprintln!("SKIPPED (S3 backend): {why}");
            None
        }
    }
}

/// The moto wrapper, kept (with the write end of its stdin open) for the life of the test
/// process.
static MOTO_WRAPPER: Mutex<Option<Child>> = Mutex::new(None);

fn start_moto(server: &Path) -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::env::temp_dir().join(format!("ferrovox-moto-{}.log", std::process::id()));
    // The shell stops moto once its stdin reaches end of file, which happens when this process
    // exits, however it exits (a static's child would otherwise outlive the test run), and
    // removes its log then.
    let wrapper = Command::new("sh")
        .arg("-c")
        .arg(
            r#""$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 & pid=$!
cat >/dev/null
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -f "$2""#,
        )
        .arg(server)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto_server");
    let mut slot = MOTO_WRAPPER.lock().unwrap();
    let wrapper = slot.insert(wrapper);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_request(&endpoint, "GET", "/").is_ok() {
            return endpoint;
        }
        if let Ok(Some(status)) = wrapper.try_wait() {
            panic!(
                "moto_server exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on {endpoint} within 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A bare HTTP/1.1 request without a body; returns the status code.
fn http_request(endpoint: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.200}")))
}
