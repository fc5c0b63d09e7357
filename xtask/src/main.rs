//! `cargo xtask <command>`: the repository's own tooling.

// The bench workers measure ferrovox as the `ferrovox` binary ships: with mimalloc.
#[global_allocator]
static GLOBAL: ferrovox_device::allocator::MiMalloc = ferrovox_device::allocator::MiMalloc;

mod bench;
mod bench_batching;
mod bench_chatterbox;
mod bench_clone;
mod bench_decode_gemm;
mod bench_formats;
mod bench_kernels;
mod bench_precision;
mod bench_s3gen;
mod bench_server;
mod bench_streams;
mod bench_texts;
mod bench_turbo;
mod bench_vits;
mod bench_vits_gpu;
mod bench_worker;
mod doctor;
mod fixtures;
mod fuzz;
mod gpu;
mod memory_sampler;
mod moto;
mod soak;
mod util;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  doctor [ARGS..]        build the ferrovox binary and run `ferrovox doctor`
  bench [matmul|kernels|vits|vits-gpu|vits-gpu-planner|batching|server|s3gen|s3gen-stream|chatterbox|clone] [--quick] [--device cpu|cuda] [--threads 1,2]
                         run benchmarks; results go to bench/results/
  fixtures vits|chatterbox
                         regenerate parity fixtures (venvs ../.venv-fixtures, ../.venv-chatterbox)
  fuzz TARGET|all [--seconds N] [--seed S] [--input FILE]
                         run fuzz targets on mutations of their corpora (crates/ferrovox-fuzz);
                         failing inputs go to target/fuzz/TARGET/
  soak [--seconds N] [--voice ID]
                         ferrovox serve under open-loop load at its sustained rate, then twice it,
                         then SIGTERM; statuses, latency, first audio, RSS and descriptors
  gpu [--cudnn] [--no-chatterbox]
                         build the CUDA binaries and pack .gpu-carry/ for the GPU machine";

fn main() -> anyhow::Result<()> {
    ferrovox_device::allocator::configure();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(c, r)| (c.as_str(), r));
    match command {
        "doctor" => doctor::run(rest),
        "bench" => bench::run(rest),
        "bench-worker" => bench_worker::run(rest),
        "fixtures" => fixtures::run(rest),
        "gpu" => gpu::run(rest),
        "fuzz" => fuzz::run(rest),
        "soak" => soak::run(rest),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => anyhow::bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}
