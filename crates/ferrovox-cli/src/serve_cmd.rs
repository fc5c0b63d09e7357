//! `ferrovox serve`: the HTTP server over one engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{BatcherConfig, Engine, EngineConfig, SynthesisOptions};
use ferrovox_server::{AppState, Cloning, ServerConfig};

use crate::options::VoiceOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Batching {
    /// On for GPUs, off for the CPU.
    Auto,
    /// Always batch.
    On,
    /// Never batch: each request runs on its own thread.
    Off,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (HTTP).
    #[arg(long, env = "FERROVOX_BIND", default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// Host to listen on, replacing --bind's (the convention of TEI, vLLM and most servers).
    #[arg(long, env = "FERROVOX_HOST")]
    host: Option<std::net::IpAddr>,
    /// Port to listen on, replacing --bind's.
    #[arg(long, env = "FERROVOX_PORT")]
    port: Option<u16>,
    /// Also serve Home Assistant's Wyoming protocol at this URI (`tcp://HOST:PORT`; Wyoming's
    /// usual port is 10200), on the same engine and voices.
    #[arg(long, env = "FERROVOX_WYOMING")]
    wyoming: Option<String>,
    /// Voices to serve (repeat or comma-separate); the first is the default, and OpenAI's
    /// voice names (alloy, echo, …) map to it.
    #[arg(long = "voice", env = "FERROVOX_VOICES", value_delimiter = ',', default_value = ferrovox_voices::DEFAULT_VOICE)]
    voices: Vec<String>,
    /// Synthesis requests admitted at once; more get 429.
    #[arg(long, env = "FERROVOX_MAX_CONCURRENT_REQUESTS", default_value_t = 16)]
    max_concurrent_requests: usize,
    /// Longest input, in characters.
    #[arg(long, env = "FERROVOX_MAX_INPUT_CHARS", default_value_t = 4096)]
    max_input_chars: usize,
    /// Gather the sentences of concurrent requests into model batches. `auto` batches on GPUs
    /// and not on the CPU, where padded batches measured slower than running requests side by
    /// side (`cargo xtask bench server`).
    #[arg(long, env = "FERROVOX_BATCHING", value_enum, default_value = "auto")]
    batching: Batching,
    /// Most sentences in one model batch.
    #[arg(long, env = "FERROVOX_MAX_BATCH", default_value_t = 8)]
    max_batch: usize,
    /// How long a batch waits for company, in milliseconds.
    #[arg(long, env = "FERROVOX_BATCH_WAIT_MS", default_value_t = 5)]
    batch_wait_ms: u64,
    /// Sentences that may wait for a batch before requests are refused.
    #[arg(long, env = "FERROVOX_QUEUE_CAPACITY", default_value_t = 64)]
    queue_capacity: usize,
    /// Where cloned voices are kept: a directory or `s3://bucket/prefix` (default
    /// `~/.cache/ferrovox/voices/cloned`). Served Chatterbox models clone uploads
    /// (`POST /v1/audio/voices`) into it and speak the voices in it.
    #[arg(long, env = "FERROVOX_VOICE_STORE")]
    voice_store: Option<String>,
    /// Serve no cloned voices and no `/v1/audio/voices`.
    #[arg(long, env = "FERROVOX_NO_CLONING")]
    no_cloning: bool,
    /// Voices cloned at once; more get 429.
    #[arg(long, env = "FERROVOX_MAX_CONCURRENT_CLONES", default_value_t = 2)]
    max_concurrent_clones: usize,
    /// Largest voice upload, in bytes; larger ones get 413.
    #[arg(long, env = "FERROVOX_MAX_UPLOAD_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// Skip the warm-up synthesis at load.
    #[arg(long, env = "FERROVOX_NO_WARM_UP")]
    no_warm_up: bool,
    /// Serve the voices that load when some do not: each failure is logged, listed by
    /// `/health` and answered with 503 naming why. Without it, a voice that cannot load stops
    /// the server (exit 2); with no voice loaded it stops either way.
    #[arg(long, env = "FERROVOX_SKIP_FAILED_VOICES")]
    skip_failed_voices: bool,
    #[command(flatten)]
    voice: VoiceOptions,
}

/// `ferrovox wyoming`: the Wyoming listener alone.
#[derive(Debug, clap::Args)]
pub struct WyomingArgs {
    /// Where to listen: `tcp://HOST:PORT`.
    #[arg(
        long,
        env = "FERROVOX_WYOMING_URI",
        default_value = "tcp://127.0.0.1:10200"
    )]
    uri: String,
    #[command(flatten)]
    serve: ServeArgs,
}

/// The address of a `tcp://HOST:PORT` URI.
fn tcp_uri(uri: &str) -> anyhow::Result<SocketAddr> {
    let rest = uri
        .strip_prefix("tcp://")
        .with_context(|| format!("Wyoming URI `{uri}`: expected tcp://HOST:PORT"))?;
    use std::net::ToSocketAddrs;
    rest.to_socket_addrs()
        .with_context(|| format!("Wyoming URI `{uri}`"))?
        .next()
        .with_context(|| format!("Wyoming URI `{uri}`: no address"))
}

pub fn wyoming(
    args: WyomingArgs,
    device: &DeviceRequest,
    tuning: &TuningConfig,
) -> anyhow::Result<()> {
    let mut serve_args = args.serve;
    serve_args.wyoming = Some(args.uri);
    run(serve_args, device, tuning, false)
}

pub fn serve(args: ServeArgs, device: &DeviceRequest, tuning: &TuningConfig) -> anyhow::Result<()> {
    run(args, device, tuning, true)
}

/// Serves HTTP when `http`, and Wyoming when `args.wyoming` is set.
fn run(
    args: ServeArgs,
    device: &DeviceRequest,
    tuning: &TuningConfig,
    http: bool,
) -> anyhow::Result<()> {
    let mut bind = args.bind;
    if let Some(host) = args.host {
        bind.set_ip(host);
    }
    if let Some(port) = args.port {
        bind.set_port(port);
    }
    let wyoming = args.wyoming.as_deref().map(tcp_uri).transpose()?;
    let defaults: SynthesisOptions = args.voice.options()?;
    let runtime = Runtime::init(device, tuning)?;
    let batching = match args.batching {
        Batching::Auto => !runtime.device().is_cpu(),
        Batching::On => true,
        Batching::Off => false,
    };
    let engine = Arc::new(Engine::new(EngineConfig {
        device: runtime.device().clone(),
        batching: batching.then_some(BatcherConfig {
            max_batch: args.max_batch.max(1),
            max_wait: Duration::from_millis(args.batch_wait_ms),
            queue_capacity: args.queue_capacity.max(1),
        }),
        warm_up: !args.no_warm_up,
    }));
    let config = ServerConfig {
        voices: args.voices,
        max_concurrent_requests: args.max_concurrent_requests.max(1),
        max_input_chars: args.max_input_chars,
        max_upload_bytes: args.max_upload_bytes,
        max_concurrent_clones: args.max_concurrent_clones.max(1),
        defaults,
        skip_failed_voices: args.skip_failed_voices,
        ..Default::default()
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The store's client belongs to the runtime that will drive it.
    let store = if args.no_cloning {
        None
    } else {
        let _context = tokio.enter();
        match ferrovox_voice_store::VoiceStore::open(args.voice_store.as_deref()) {
            Ok(store) => Some(store),
            // A store asked for must open; the default directory may be unavailable (no home
            // directory, a read-only one), which only turns cloning off.
            Err(e) if args.voice_store.is_none() => {
                tracing::warn!(error = %e, "no voice store: cloned voices are off");
                None
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "opening the voice store {}",
                    args.voice_store.as_deref().unwrap_or_default()
                )))
            }
        }
    };
    let state = match store {
        None => AppState::new(engine, config),
        Some(store) => {
            let service = Arc::new(ferrovox_cloning::CloningService::new(
                runtime.device().clone(),
            ));
            let cloning = Cloning::new(service, store, config.max_concurrent_clones);
            AppState::with_cloning(engine, config, cloning)
        }
    };
    tokio.block_on(async move {
        let listener = if http {
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding {bind}"))?;
            eprintln!(
                "listening on http://{} ({}, batching {}); loading voices",
                listener.local_addr()?,
                runtime.selection.kind,
                if batching { "on" } else { "off" }
            );
            Some(listener)
        } else {
            None
        };
        let wyoming_listener = match wyoming {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the Wyoming address {addr}"))?;
                eprintln!("wyoming on tcp://{}; loading voices", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let loader = state.clone();
        std::thread::spawn(move || {
            if let Err(e) = loader.load_voices() {
                let _ = failed_tx.send(e.to_string());
            } else {
                eprintln!("ready");
            }
        });
        // A voice that cannot load (any, or all with --skip-failed-voices) stops the server: an
        // orchestrator should see the failure.
        let failure = Arc::new(std::sync::Mutex::new(None::<String>));
        let recorded = failure.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            tokio::select! {
                () = ferrovox_server::shutdown_signal() => {}
                Ok(reason) = failed_rx => {
                    *recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                }
            }
            let _ = stop_tx.send(true);
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&s| s).await;
        };
        let wyoming_task = wyoming_listener.map(|l| {
            tokio::spawn(ferrovox_server::serve_wyoming(
                l,
                state.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        match listener {
            Some(listener) => {
                tokio::spawn(shutdown);
                ferrovox_server::serve(listener, state, stopped(stop_rx)).await?;
            }
            None => shutdown.await,
        }
        if let Some(task) = wyoming_task {
            task.await.context("the Wyoming listener")??;
        }
        let reason = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        match reason {
            Some(reason) => anyhow::bail!("{reason}"),
            None => {
                eprintln!("stopped");
                Ok(())
            }
        }
    })
}
