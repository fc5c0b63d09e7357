//! Continuous batching of T3's decode steps on the small random-weight T3: generations with
//! different texts, controls and seeds join a running batch at different steps, wait when it is
//! full, leave early, and each one's tokens equal its tokens generated alone under the same
//! draws.

mod common;

use std::collections::{HashMap, VecDeque};

use common::t3::{cond, small, text_tokens};
use common::Fixture;
use ferrovox_chatterbox::t3::{
    BatchConfig, DecodePath, Event, Flow, Joined, Request, SamplingOptions, SeededNoise, T3Batch,
    T3,
};

const MAX_NEW: usize = 40;

struct Case {
    name: &'static str,
    options: SamplingOptions,
    text: Vec<u32>,
    seed: u64,
    /// The batch step at which it asks to join.
    join_at: usize,
}

/// The fixture's text, shortened and lengthened (start and stop tokens kept), so the
/// generations sit at different cache positions.
fn texts(fx: &Fixture) -> [Vec<u32>; 3] {
    let t = text_tokens(fx);
    let (first, last) = (t[0], *t.last().unwrap());
    let middle = &t[1..t.len() - 1];
    let short = [&[first][..], &middle[..2], &[last]].concat();
    let long = [&[first][..], middle, middle, &[last]].concat();
    [t, short, long]
}

fn cases(fx: &Fixture) -> Vec<Case> {
    let [t, short, long] = texts(fx);
    let d = SamplingOptions {
        max_new_tokens: MAX_NEW,
        ..Default::default()
    };
    vec![
        Case {
            name: "defaults",
            options: d,
            text: t.clone(),
            seed: 1,
            join_at: 0,
        },
        Case {
            name: "no guidance, no penalty, no min-p",
            options: SamplingOptions {
                cfg_weight: 0.0,
                temperature: 1.0,
                min_p: 0.0,
                repetition_penalty: 1.0,
                ..d
            },
            text: short,
            seed: 2,
            join_at: 0,
        },
        Case {
            name: "greedy",
            options: SamplingOptions {
                temperature: 0.0,
                repetition_penalty: 1.5,
                max_new_tokens: 25,
                ..d
            },
            text: long.clone(),
            seed: 3,
            join_at: 3,
        },
        Case {
            name: "top-p 0.9, guidance 1",
            options: SamplingOptions {
                top_p: 0.9,
                cfg_weight: 1.0,
                ..d
            },
            text: long,
            seed: 4,
            join_at: 7,
        },
        Case {
            name: "defaults, another seed",
            options: d,
            text: t,
            seed: 5,
            join_at: 7,
        },
    ]
}

/// Tokens and whether the stop token came.
type Tokens = (Vec<u32>, bool);

/// A case's tokens generated alone on `path`.
fn alone(t3: &T3, fx: &Fixture, case: &Case, path: DecodePath) -> Tokens {
    let t3 = t3.clone().with_decode_path(path);
    let got = t3
        .generate(
            &cond(fx),
            &case.text,
            &case.options,
            &mut SeededNoise::new(case.seed),
            1,
            &mut |_| Ok(Flow::Continue),
        )
        .unwrap();
    (got.tokens, got.stopped)
}

/// Each case's tokens, whether it stopped, and how many times it found the batch full; the
/// case `leave_early` leaves after that many tokens.
struct Outcome {
    tokens: Vec<Vec<u32>>,
    stopped: Vec<bool>,
    waited: usize,
    slots: usize,
}

fn batched(
    t3: &T3,
    fx: &Fixture,
    cases: &[Case],
    config: BatchConfig,
    leave_early: Option<(usize, usize)>,
) -> Outcome {
    let mut batch = T3Batch::new(t3, config, &common::device()).unwrap();
    let mut tokens = vec![Vec::new(); cases.len()];
    let mut stopped = vec![false; cases.len()];
    let mut done = vec![false; cases.len()];
    let mut slots: HashMap<usize, usize> = HashMap::new();
    let mut waiting: VecDeque<(usize, Request)> = VecDeque::new();
    let mut waited = 0;
    let mut record = |i: usize, e: Event, tokens: &mut Vec<Vec<u32>>, done: &mut Vec<bool>| match e
    {
        Event::Token(t) => tokens[i].push(t),
        Event::Stopped => {
            stopped[i] = true;
            done[i] = true;
        }
        Event::Exhausted => done[i] = true,
    };
    for step in 0.. {
        for (i, c) in cases.iter().enumerate() {
            if c.join_at == step {
                waiting.push_back((
                    i,
                    Request {
                        cond: cond(fx),
                        text_tokens: c.text.clone(),
                        options: c.options,
                        noise: Box::new(SeededNoise::new(c.seed)),
                    },
                ));
            }
        }
        while let Some((i, request)) = waiting.pop_front() {
            match batch.join(request).unwrap() {
                Joined::Admitted { slot, events } => {
                    for e in events {
                        record(i, e, &mut tokens, &mut done);
                    }
                    if let Some(s) = slot {
                        slots.insert(s, i);
                    }
                }
                Joined::NoRoom(request) => {
                    waited += 1;
                    waiting.push_front((i, request));
                    break;
                }
            }
        }
        if let Some((i, after)) = leave_early {
            if tokens[i].len() >= after && !done[i] {
                let slot = slots.iter().find(|(_, &c)| c == i).map(|(&s, _)| s);
                batch.leave(slot.expect("the case is running"));
                done[i] = true;
            }
        }
        if done.iter().all(|&d| d) && waiting.is_empty() && step > 7 {
            break;
        }
        for (slot, e) in batch.step().unwrap() {
            record(slots[&slot], e, &mut tokens, &mut done);
        }
        assert!(step < 10 * MAX_NEW, "the batch never finished");
    }
    Outcome {
        tokens,
        stopped,
        waited,
        slots: batch.slots(),
    }
}

/// Windows of 8 positions, so steps cross window boundaries at different places per row.
fn config(t3: &T3, fx: &Fixture, max_slots: usize) -> BatchConfig {
    let longest = texts(fx).iter().map(Vec::len).max().unwrap();
    BatchConfig {
        window: 8,
        ..BatchConfig::for_lengths(t3, max_slots, longest, MAX_NEW)
    }
}

/// The small T3, its fixture, the cases and each one's tokens alone on the dynamic path.
fn setup() -> (T3, Fixture, Vec<Case>, Vec<Tokens>) {
    let (t3, fx) = small();
    let cases = cases(&fx);
    let want = cases
        .iter()
        .map(|c| alone(&t3, &fx, c, DecodePath::Dynamic))
        .collect();
    (t3, fx, cases, want)
}

#[test]
fn batched_generations_give_their_tokens_alone() {
    let (t3, fx, cases, want) = setup();
    // The cases differ from each other, so equal tokens are not an accident of the weights.
    for (i, a) in want.iter().enumerate() {
        for b in &want[i + 1..] {
            assert_ne!(a.0, b.0, "two cases generated the same tokens");
        }
    }
    for (c, (tokens, _)) in cases.iter().zip(&want) {
        let fixed = alone(&t3, &fx, c, DecodePath::Fixed(8));
        assert_eq!(&fixed.0, tokens, "{}: fixed path alone", c.name);
    }
    for max_slots in [8, 2] {
        let got = batched(&t3, &fx, &cases, config(&t3, &fx, max_slots), None);
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(
                got.tokens[i], want[i].0,
                "{} (batch of at most {max_slots}): tokens",
                c.name
            );
            assert_eq!(got.stopped[i], want[i].1, "{}: stop", c.name);
        }
        eprintln!(
            "at most {max_slots} slots: {} generations, {} tokens identical to alone; the cache \
             grew to {} slots; joins refused for want of room: {}",
            cases.len(),
            got.tokens.iter().map(Vec::len).sum::<usize>(),
            got.slots,
            got.waited
        );
        if max_slots == 2 {
            assert!(
                got.waited > 0,
                "two slots for five generations: some waited"
            );
            assert_eq!(got.slots, 2);
        } else {
            assert_eq!(got.waited, 0);
        }
    }
}

#[test]
fn a_generation_that_leaves_frees_its_slot_without_changing_the_others() {
    let (t3, fx, cases, want) = setup();
    let got = batched(&t3, &fx, &cases, config(&t3, &fx, 2), Some((0, 5)));
    assert_eq!(got.tokens[0], want[0].0[..5], "the leaver's tokens so far");
    for i in 1..cases.len() {
        assert_eq!(got.tokens[i], want[i].0, "{}", cases[i].name);
    }
}

#[test]
fn requests_the_batch_cannot_hold_are_refused_with_the_reason() {
    let (t3, fx) = small();
    let mut batch = T3Batch::new(&t3, config(&t3, &fx, 2), &common::device()).unwrap();
    let request = |options: SamplingOptions| Request {
        cond: cond(&fx),
        text_tokens: text_tokens(&fx),
        options,
        noise: Box::new(SeededNoise::new(0)),
    };
    let too_long = batch
        .join(request(SamplingOptions {
            max_new_tokens: 10 * MAX_NEW,
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
    assert!(too_long.contains("positions"), "{too_long}");
    let bad = batch
        .join(request(SamplingOptions {
            top_p: 0.0,
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("top_p"), "{bad}");
    assert_eq!(batch.running(), 0);
    let too_big = BatchConfig {
        positions: t3.max_positions() + 1,
        ..config(&t3, &fx, 2)
    };
    assert!(T3Batch::new(&t3, too_big, &common::device()).is_err());
}
