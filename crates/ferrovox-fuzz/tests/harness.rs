//! The fuzz harness itself (its own test binary: its deliberate allocations must not be
//! counted against the targets).

use std::time::Duration;

use ferrovox_fuzz::harness::{corpus, run_case, Finding};

type Run = fn(&[u8]) -> Result<(), String>;
type Expect = fn(&Finding) -> bool;

#[global_allocator]
static COUNTING: ferrovox_fuzz::Counting = ferrovox_fuzz::Counting;

/// The harness itself: it must see a panic, a hang, an allocation beyond the input's share and
/// a defect, or its silence would mean nothing. (A single request over the hard limit aborts
/// the process, as any failed allocation does; `ferrovox-fuzz` keeps that input on disk.)
#[test]
fn the_harness_reports_each_kind_of_failure() {
    let mut target = ferrovox_fuzz::target("text").unwrap();
    let limit = Duration::from_millis(500);
    let cases: [(Run, Expect); 4] = [
        (
            |_| panic!("boom"),
            |f| matches!(f, Finding::Panic(m) if m.contains("boom")),
        ),
        (
            |_| {
                std::thread::sleep(Duration::from_secs(3));
                Ok(())
            },
            |f| matches!(f, Finding::Hang(_)),
        ),
        (
            |_| {
                std::hint::black_box(vec![1u8; 64 << 20]);
                Ok(())
            },
            |f| matches!(f, Finding::Alloc { .. }),
        ),
        (
            |_| Err("named nothing".into()),
            |f| matches!(f, Finding::Defect(_)),
        ),
    ];
    target.base_bytes = 1 << 20;
    for (i, (run, expected)) in cases.into_iter().enumerate() {
        target.run = run;
        let got = run_case(&target, b"input", limit).unwrap_err();
        assert!(expected(&got), "case {i}: {got:?}");
    }
    assert!(!corpus(&target).is_empty());
}
