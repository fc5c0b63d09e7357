//! `ferrovox serve`: the HTTP server over one engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{BatcherConfig, Engine, EngineConfig, SynthesisOptions};
use ferrovox_server::{AppState, ServerConfig};

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
    /// Address to listen on.
    #[arg(long, env = "FERROVOX_BIND", default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
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
    /// Skip the warm-up synthesis at load.
    #[arg(long, env = "FERROVOX_NO_WARM_UP")]
    no_warm_up: bool,
    #[command(flatten)]
    voice: VoiceOptions,
}

pub fn serve(args: ServeArgs, device: &DeviceRequest, tuning: &TuningConfig) -> anyhow::Result<()> {
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
    let state = AppState::new(
        engine,
        ServerConfig {
            voices: args.voices,
            max_concurrent_requests: args.max_concurrent_requests.max(1),
            max_input_chars: args.max_input_chars,
            defaults,
            ..Default::default()
        },
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        eprintln!(
            "listening on http://{} ({}, batching {}); loading voices",
            listener.local_addr()?,
            runtime.selection.kind,
            if batching { "on" } else { "off" }
        );
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let loader = state.clone();
        std::thread::spawn(move || {
            if let Err(e) = loader.load_voices() {
                let _ = failed_tx.send(e.to_string());
            } else {
                eprintln!("ready");
            }
        });
        // A voice that cannot load stops the server: an orchestrator should see the failure.
        let failure = Arc::new(std::sync::Mutex::new(None::<String>));
        let recorded = failure.clone();
        let shutdown = async move {
            tokio::select! {
                () = ferrovox_server::shutdown_signal() => {}
                Ok(reason) = failed_rx => {
                    *recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                }
            }
        };
        ferrovox_server::serve(listener, state, shutdown).await?;
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
