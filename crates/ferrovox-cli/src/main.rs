//! The `ferrovox` command.

mod cloned;
mod device_cmd;
mod options;
mod say_cmd;
mod serve_cmd;
mod voices_cmd;

use clap::{Parser, Subcommand};
use ferrovox_device::{DeviceRequest, TuningConfig};

// Candle allocates a fresh buffer for every op; glibc maps and unmaps large ones each time, which
// costs page faults on every forward. mimalloc, as `ferrovox_device::allocator` sets it up, keeps
// freed memory mapped for reuse.
#[global_allocator]
static GLOBAL: ferrovox_device::allocator::MiMalloc = ferrovox_device::allocator::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ferrovox", version, about = "Native text-to-speech on Candle")]
struct Cli {
    /// Device: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, global = true, env = "FERROVOX_DEVICE", default_value = "auto")]
    device: DeviceRequest,
    /// CPU threads (default: physical cores, lowered by a cgroup quota).
    #[arg(long, global = true, env = "FERROVOX_NUM_THREADS")]
    threads: Option<usize>,
    /// Write a Chrome trace (chrome://tracing, Perfetto) of every span to this file.
    #[arg(long, global = true, env = "FERROVOX_TRACING", value_name = "FILE")]
    tracing: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Speak text into a WAV file (or raw PCM), with the default voice unless --voice is given.
    Say(say_cmd::SayArgs),
    /// Serve speech over HTTP (OpenAI-compatible /v1/audio/speech), and Wyoming with
    /// --wyoming.
    Serve(serve_cmd::ServeArgs),
    /// Serve speech over Home Assistant's Wyoming protocol only.
    Wyoming(serve_cmd::WyomingArgs),
    /// List, fetch and inspect voices; add, list and remove cloned ones.
    Voices {
        #[command(subcommand)]
        command: voices_cmd::VoicesCommand,
    },
    /// Show the device chosen, why others were skipped, memory and tuning.
    Device {
        /// Print JSON instead of text.
        #[arg(long, env = "FERROVOX_JSON")]
        json: bool,
    },
    /// Run the device layer's checks; exits non-zero when one fails.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long, env = "FERROVOX_JSON")]
        json: bool,
    },
}

fn main() {
    ferrovox_device::allocator::configure();
    if let Err(e) = run() {
        // One line with the whole cause chain; no backtrace noise for user errors.
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _trace = init_tracing(cli.tracing.as_deref())?;
    let tuning = TuningConfig {
        num_threads: cli.threads,
        ..Default::default()
    }
    .or(TuningConfig::from_env()?);
    match cli.command {
        Command::Say(args) => say_cmd::say(args, &cli.device, &tuning),
        Command::Serve(args) => serve_cmd::serve(args, &cli.device, &tuning),
        Command::Wyoming(args) => serve_cmd::wyoming(args, &cli.device, &tuning),
        Command::Voices { command } => voices_cmd::voices(command, &cli.device, &tuning),
        Command::Device { json } => device_cmd::device(&cli.device, &tuning, json),
        Command::Doctor { json } => {
            let ok = device_cmd::doctor(&cli.device, &tuning, json)?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Logs to stderr as `RUST_LOG` says (`info` when unset); with `--tracing`, also every span
/// into a Chrome trace, written out when the returned guard drops.
fn init_tracing(
    chrome: Option<&std::path::Path>,
) -> anyhow::Result<Option<tracing_chrome::FlushGuard>> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,ferrovox=info,ferrovox_server=info")
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let (chrome, guard) = match chrome {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("--tracing {}: {e}", path.display()))?;
            let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
                .writer(file)
                .include_args(true)
                .build();
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(fmt).with(chrome).init();
    Ok(guard)
}
