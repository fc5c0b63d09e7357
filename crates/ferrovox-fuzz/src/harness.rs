//! Runs a target on inputs, one at a time: each case on its own thread under a time limit,
//! with a panic caught and its message kept, and its allocations held to what the input
//! justifies.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::alloc_count;
use crate::mutate::{mutate, Rng};
use crate::Target;

/// What a case did wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// It panicked (the message, with its location).
    Panic(String),
    /// It ran past the time limit.
    Hang(Duration),
    /// It held more bytes at once than its input justifies.
    Alloc { peak: usize, allowed: usize },
    /// It asked for one allocation over [`alloc_count::HARD_LIMIT`].
    HugeRequest(usize),
    /// The target's own check failed (an unnamed error, a 5xx for the client's bytes…).
    Defect(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Panic(m) => write!(f, "panic: {m}"),
            Self::Hang(d) => write!(f, "still running after {d:?}"),
            Self::Alloc { peak, allowed } => {
                write!(f, "held {peak} bytes at once, {allowed} allowed")
            }
            Self::HugeRequest(n) => write!(f, "asked for one allocation of {n} bytes"),
            Self::Defect(m) => write!(f, "{m}"),
        }
    }
}

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics on case threads are kept as findings instead of printed; every other thread's
/// go to the hook that was there before. Errors stop capturing backtraces.
fn quiet_case_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error's captured backtrace (Candle's, under RUST_BACKTRACE=1) loads tens of MB of
        // symbol tables: a cost of the environment, not of the input.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `target` on `input`: `Ok` with the case's time, or what went wrong.
pub fn run_case(target: &Target, input: &[u8], limit: Duration) -> Result<Duration, Finding> {
    assert!(
        alloc_count::installed(),
        "the fuzz harness needs ferrovox_fuzz::Counting as the global allocator"
    );
    quiet_case_panics();
    (target.warm)();
    let (tx, rx) = mpsc::channel();
    let run = target.run;
    let bytes = input.to_vec();
    let base = alloc_count::start();
    let start = Instant::now();
    std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .spawn(move || {
            IN_CASE.with(|c| c.set(true));
            let outcome = std::panic::catch_unwind(|| run(&bytes)).map_err(|_| {
                PANIC.with(|p| p.borrow_mut().take().unwrap_or_else(|| "no message".into()))
            });
            let _ = tx.send(outcome);
        })
        .expect("spawning a fuzz case thread");
    let outcome = match rx.recv_timeout(limit) {
        Ok(outcome) => outcome,
        Err(_) => return Err(Finding::Hang(limit)),
    };
    let took = start.elapsed();
    let (peak, refused) = alloc_count::since(base);
    match outcome {
        Err(_) if refused > 0 => Err(Finding::HugeRequest(refused)),
        Err(message) => Err(Finding::Panic(message)),
        Ok(Err(defect)) => Err(Finding::Defect(defect)),
        Ok(Ok(())) => {
            let allowed = target.allowed_bytes(input.len());
            if refused > 0 {
                Err(Finding::HugeRequest(refused))
            } else if peak > allowed {
                Err(Finding::Alloc { peak, allowed })
            } else {
                Ok(took)
            }
        }
    }
}

/// The seed inputs of `target`: the files under `corpus/NAME/`, by name.
pub fn corpus(target: &Target) -> Vec<(String, Vec<u8>)> {
    files_in(&corpus_dir().join(target.name))
}

/// Inputs that once failed, kept as regressions: `regressions/NAME/`.
pub fn regressions(target: &Target) -> Vec<(String, Vec<u8>)> {
    files_in(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("regressions")
            .join(target.name),
    )
}

/// Where the corpora live.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Where a run keeps `target`'s failing inputs: `target/fuzz/NAME/` of the workspace.
pub fn findings_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/fuzz")
        .join(target.name)
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    std::fs::read(e.path()).ok().map(|b| (name, b))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// How long a campaign runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// This many mutated inputs.
    Cases(usize),
    /// Mutated inputs until this much time has passed.
    Time(Duration),
}

/// What a campaign ran and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run: corpus, regressions and mutations.
    pub cases: usize,
    /// Failing inputs and what each did (the first few of each kind are kept).
    pub findings: Vec<(Vec<u8>, Finding)>,
    /// The slowest case.
    pub slowest: Duration,
}

/// Runs `target` on its corpus and regressions, then on mutations of its corpus within
/// `budget`, from `seed`. `before` sees each input before it runs (to keep it on disk, in
/// case the process dies with it).
pub fn campaign(
    target: &Target,
    budget: Budget,
    seed: u64,
    limit: Duration,
    mut before: impl FnMut(&[u8]),
) -> Report {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    assert!(!seeds.is_empty(), "no corpus for {}", target.name);
    let fixed: Vec<Vec<u8>> = seeds
        .iter()
        .cloned()
        .chain(regressions(target).into_iter().map(|(_, b)| b))
        .collect();
    let mut report = Report::default();
    // A first run loads what the target keeps for every case (a phonemizer's dictionaries, a
    // test server): that cost is not the input's, so only this run's allocations go unchecked.
    match run_case(target, &seeds[0], limit) {
        Ok(_) | Err(Finding::Alloc { .. }) => {}
        Err(finding) => report.findings.push((seeds[0].clone(), finding)),
    }
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut i = 0usize;
    loop {
        let input = if i < fixed.len() {
            fixed[i].clone()
        } else {
            let more = match budget {
                Budget::Cases(n) => i - fixed.len() < n,
                Budget::Time(d) => start.elapsed() < d,
            };
            if !more {
                break;
            }
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, a, b)
        };
        i += 1;
        before(&input);
        report.cases += 1;
        match run_case(target, &input, limit) {
            Ok(took) => report.slowest = report.slowest.max(took),
            Err(finding) => {
                let hang = matches!(finding, Finding::Hang(_));
                if report.findings.len() < 16 {
                    report.findings.push((input, finding));
                }
                // A hung case's thread still runs: later timings would mean nothing.
                if hang {
                    break;
                }
            }
        }
    }
    report
}
