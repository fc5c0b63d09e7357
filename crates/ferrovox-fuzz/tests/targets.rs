//! Every fuzz target on its corpus, its regressions and a bounded number of mutations (one
//! test in its own binary, so no other test's allocations are counted as a target's). Longer runs:
//! `cargo xtask fuzz TARGET --seconds N`.

use std::time::Duration;

use ferrovox_fuzz::harness::{campaign, findings_dir, Budget};

#[global_allocator]
static COUNTING: ferrovox_fuzz::Counting = ferrovox_fuzz::Counting;

/// Mutations per target in `cargo test` (`FERROVOX_FUZZ_CASES` overrides).
const CASES: usize = 1500;

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let cases = std::env::var("FERROVOX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut failures = Vec::new();
    for target in ferrovox_fuzz::targets() {
        let report = campaign(
            &target,
            Budget::Cases(cases),
            1,
            Duration::from_secs(20),
            |_| {},
        );
        eprintln!(
            "{:18} {:5} cases  {} findings  slowest {:.1} ms",
            target.name,
            report.cases,
            report.findings.len(),
            report.slowest.as_secs_f64() * 1e3
        );
        let dir = findings_dir(&target);
        for (i, (input, finding)) in report.findings.into_iter().enumerate() {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("test-finding-{i}")), &input);
            let shown: Vec<u8> = input.iter().copied().take(96).collect();
            failures.push(format!(
                "{}: {finding}\n  input ({} bytes): {:?}",
                target.name,
                input.len(),
                String::from_utf8_lossy(&shown)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
