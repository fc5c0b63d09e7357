//! The `ferrovox` command.

mod device_cmd;
mod say_cmd;
mod voices_cmd;

use clap::{Parser, Subcommand};
use ferrovox_device::{DeviceRequest, TuningConfig};

// Candle allocates a fresh buffer for every op; glibc maps and unmaps large ones each time, which
// costs page faults on every forward. mimalloc keeps freed memory for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ferrovox", version, about = "Native text-to-speech on Candle")]
struct Cli {
    /// Device: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, global = true, env = "FERROVOX_DEVICE", default_value = "auto")]
    device: DeviceRequest,
    /// CPU threads (default: physical cores, lowered by a cgroup quota).
    #[arg(long, global = true, env = "FERROVOX_NUM_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Speak text into a WAV file (or raw PCM), with the default voice unless --voice is given.
    Say(say_cmd::SayArgs),
    /// List, fetch and inspect voices.
    Voices {
        #[command(subcommand)]
        command: voices_cmd::VoicesCommand,
    },
    /// Show the device chosen, why others were skipped, memory and tuning.
    Device {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the device layer's checks; exits non-zero when one fails.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    if let Err(e) = run() {
        // One line with the whole cause chain; no backtrace noise for user errors.
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let tuning = TuningConfig {
        num_threads: cli.threads,
        ..Default::default()
    }
    .or(TuningConfig::from_env()?);
    match cli.command {
        Command::Say(args) => say_cmd::say(args, &cli.device, &tuning),
        Command::Voices { command } => voices_cmd::voices(command),
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
