//! moto's S3 server on 127.0.0.1 for the benches that time the voice store on S3: the venv
//! `crates/ferrovox-voice-store/tests/s3/setup.sh` makes (`FERROVOX_MOTO_VENV`, else
//! `../.venv-moto`), started here and stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::repo_root;

/// A running moto server with one bucket.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl Moto {
    /// Starts moto and creates `bucket`; `None` (with the reason printed) without the venv.
    pub fn start(bucket: &str) -> anyhow::Result<Option<Self>> {
        let venv = std::env::var_os("FERROVOX_MOTO_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../.venv-moto"));
        let venv = if venv.is_relative() {
            repo_root().join(venv)
        } else {
            venv
        };
        let server = venv.join("bin/moto_server");
        if !server.is_file() {
            println!(
                "(no S3 timing: {} is missing; run crates/ferrovox-voice-store/tests/s3/setup.sh)",
                server.display()
            );
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        };
        let url = format!("{}/{bucket}", moto.endpoint);
        for attempt in 0.. {
            match ureq::put(&url).call() {
                Ok(_) => break,
                Err(_) if attempt < 100 => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => anyhow::bail!("moto did not start at {}: {e}", moto.endpoint),
            }
        }
        Ok(Some(moto))
    }

    /// The AWS variables that point the voice store's S3 client at this server.
    pub fn export_env(&self) {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ] {
            std::env::set_var(k, v);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
