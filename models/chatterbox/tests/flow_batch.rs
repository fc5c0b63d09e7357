//! S3Gen's flow batched across concurrent streams ([`FlowBatcher`]) against the same streams
//! run alone, on the small fixture model (ferrovox against itself: upstream has no batching).

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{compare, random_tokens, small_s3gen};
use ferrovox_chatterbox::{
    Error, FlowBatchConfig, FlowBatcher, S3Gen, S3GenStream, SpeakerReference, UtteranceNoise,
};

const VOCAB: u32 = 256;

/// Batches of up to `n` jobs whose leaders wait as long as it takes for the registered
/// streams (a slow test machine must not split a batch).
fn batcher_of(n: usize) -> FlowBatcher {
    FlowBatcher::new(FlowBatchConfig {
        max_items: n,
        gather: Duration::from_secs(60),
        gather_share: 1e6,
    })
}

/// A stream, its flow through `batcher` when given.
fn open<'a>(
    model: &'a S3Gen,
    reference: &SpeakerReference,
    seed: u64,
    batcher: Option<&'a FlowBatcher>,
) -> S3GenStream<'a> {
    let s = model.stream(reference, seed).unwrap();
    match batcher {
        Some(b) => s.with_batcher(b),
        None => s,
    }
}

/// The joined audio of `tokens` pushed into `s` in `chunks`.
fn drive(mut s: S3GenStream<'_>, tokens: &[u32], chunks: &[usize]) -> Vec<f32> {
    let (mut audio, mut at) = (Vec::new(), 0);
    for &n in chunks {
        audio.extend(s.push(&tokens[at..at + n]).unwrap());
        at += n;
    }
    audio.extend(s.finish().unwrap());
    audio
}

/// The joined audio of `tokens` streamed in `chunks`, through `batcher` when given.
fn stream(
    model: &S3Gen,
    reference: &SpeakerReference,
    seed: u64,
    tokens: &[u32],
    chunks: &[usize],
    batcher: Option<&FlowBatcher>,
) -> Vec<f32> {
    drive(open(model, reference, seed, batcher), tokens, chunks)
}

/// A shorter voice prompt than the fixture's: another prompt length in the same batch.
fn shorter(reference: &SpeakerReference) -> SpeakerReference {
    let keep = reference.prompt_tokens.len() / 2;
    SpeakerReference {
        prompt_tokens: reference.prompt_tokens[..keep].to_vec(),
        prompt_feat: reference.prompt_feat.narrow(1, 0, 2 * keep).unwrap(),
        xvector: reference.xvector.clone(),
    }
}

/// Four streams of different lengths, voices and seeds pushing at the same time: every flow run
/// carries all four (padded to the longest, masked), and each stream's audio is its audio
/// alone within f32 summation order; a lone stream through a batcher is bit-identical.
/// Bound as `batch.rs`'s: the mels move by ~1e-6, which HiFT's F0 amplifies through the sine
/// source's phase (measured audio max |diff| 4.5e-4 to 1.9e-3, SNR 61 to 74 dB); audio 1e-2.
#[test]
fn concurrent_streams_share_flow_runs_and_keep_their_own_audio() {
    let (model, reference, _) = small_s3gen();
    let short_voice = shorter(&reference);
    // (voice, seed, tokens, chunks): the same number of pushes, so every run is full.
    let streams: Vec<(&SpeakerReference, u64, Vec<u32>, Vec<usize>)> = vec![
        (
            &reference,
            7,
            random_tokens(40, VOCAB, 9),
            vec![10, 10, 10, 10],
        ),
        (&reference, 8, random_tokens(20, VOCAB, 3), vec![5, 5, 5, 5]),
        (
            &short_voice,
            9,
            random_tokens(33, VOCAB, 4),
            vec![12, 7, 9, 5],
        ),
        (
            &short_voice,
            10,
            random_tokens(16, VOCAB, 5),
            vec![4, 4, 4, 4],
        ),
    ];
    let alone: Vec<Vec<f32>> = streams
        .iter()
        .map(|(r, seed, tokens, chunks)| stream(&model, r, *seed, tokens, chunks, None))
        .collect();

    let batcher = batcher_of(streams.len());
    let start = Arc::new(Barrier::new(streams.len()));
    // Every stream registered before any pushes.
    let opened: Vec<S3GenStream<'_>> = streams
        .iter()
        .map(|(r, seed, _, _)| open(&model, r, *seed, Some(&batcher)))
        .collect();
    let batched: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let threads: Vec<_> = streams
            .iter()
            .zip(opened)
            .map(|((_, _, tokens, chunks), s)| {
                let start = start.clone();
                scope.spawn(move || {
                    start.wait();
                    drive(s, tokens, chunks)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, (got, want)) in batched.iter().zip(&alone).enumerate() {
        let (max, rel, snr) = compare(got, want);
        eprintln!("stream {i}: max|diff| {max:.3e}  rel L2 {rel:.3e}  SNR {snr:.1} dB");
        assert!(
            max <= 1e-2 && snr >= 40.0,
            "stream {i}: batched audio moved by {max}"
        );
    }
    assert_ne!(alone[0][..4800], alone[1][..4800]);
    let s = batcher.stats();
    let runs = s.runs.load(std::sync::atomic::Ordering::Relaxed);
    let items = s.items.load(std::sync::atomic::Ordering::Relaxed);
    let largest = s.largest.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{runs} flow runs carried {items} jobs, at most {largest} in one");
    // Four pushes each, each running the flow once (`finish` reuses the last run).
    assert_eq!((runs, items, largest), (4, 16, 4));

    let lone = batcher_of(1);
    let (r, seed, tokens, chunks) = &streams[2];
    assert_eq!(
        stream(&model, r, *seed, tokens, chunks, Some(&lone)),
        alone[2],
        "a lone stream through a batcher runs as without one"
    );
}

/// A job the batch cannot run (no tokens) fails alone with its reason; the jobs batched with
/// it are run again one by one and get their results; whole utterances decode through the
/// batcher as they do alone.
#[test]
fn a_bad_job_fails_alone_and_its_batch_is_run_again() {
    let (model, reference, _) = small_s3gen();
    let batcher = batcher_of(3);
    let _registered: Vec<_> = (0..3).map(|_| batcher.stream_ticket()).collect();
    let jobs: Vec<Vec<u32>> = vec![
        random_tokens(30, VOCAB, 1),
        Vec::new(),
        random_tokens(12, VOCAB, 2),
    ];
    let results: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let (model, batcher, reference) = (&model, &batcher, &reference);
                scope.spawn(move || {
                    let noise = UtteranceNoise::Seeded(i as u64);
                    batcher.mel(model, tokens, reference, &noise)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let err = results[1].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Input(m) if m.contains("no speech tokens")),
        "{err}"
    );
    for i in [0, 2] {
        let frames = model.noise_frames(&reference, jobs[i].len());
        let cfm = UtteranceNoise::Seeded(i as u64)
            .cfm(80, 0..frames, &common::device())
            .unwrap();
        let want = model.mel(&jobs[i], &reference, &cfm).unwrap();
        let got = results[i].as_ref().unwrap();
        assert_eq!(common::max_abs_diff(got, &want), 0.0, "job {i}");
    }
    let retries = batcher
        .stats()
        .split_retries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(retries, 1);

    let tokens = random_tokens(25, VOCAB, 6);
    let two = batcher_of(2);
    let _registered: Vec<_> = (0..2).map(|_| two.stream_ticket()).collect();
    let both: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let threads: Vec<_> = [11u64, 12]
            .into_iter()
            .map(|seed| {
                let (model, two, reference, tokens) = (&model, &two, &reference, &tokens);
                scope.spawn(move || {
                    model
                        .synthesize_batched(tokens, reference, seed, two)
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (got, seed) in both.iter().zip([11u64, 12]) {
        let want = model.synthesize(&tokens, &reference, seed).unwrap();
        let (max, _, _) = compare(got, &want);
        assert!(max <= 1e-2, "seed {seed}: {max}");
    }
}

/// The flow's CUDA graphs (the estimator's, captured on a shape's second call and replayed
/// after) give the mel the eager ops give, whichever input of that shape runs, alone or
/// batched: a replay that read a stale or foreign buffer would move it.
#[test]
fn the_flows_graphs_give_the_eager_mel() {
    let (model, reference, _) = small_s3gen();
    let graphs = model.flow().decoder().graphs();
    let jobs: Vec<(Vec<u32>, UtteranceNoise)> = (0..2u64)
        .map(|i| {
            (
                random_tokens(25, VOCAB, 20 + i),
                UtteranceNoise::Seeded(11 + i),
            )
        })
        .collect();
    let items: Vec<(&[u32], &SpeakerReference)> = jobs
        .iter()
        .map(|(t, _)| (t.as_slice(), &reference))
        .collect();
    let noises: Vec<UtteranceNoise> = jobs.iter().map(|(_, n)| n.clone()).collect();
    let run = || -> (Vec<candle_core::Tensor>, Vec<candle_core::Tensor>) {
        let alone = jobs
            .iter()
            .map(|(t, n)| model.mel_drawn(t, &reference, n).unwrap())
            .collect();
        (alone, model.mel_batch(&items, &noises).unwrap())
    };
    graphs.set_enabled(false);
    let (eager_alone, eager_batch) = run();
    graphs.set_enabled(true);
    for call in 0..3 {
        let (alone, batch) = run();
        for (i, (got, want)) in alone.iter().zip(&eager_alone).enumerate() {
            let d = common::max_abs_diff(got, want);
            eprintln!("call {call} job {i} alone: max|diff| {d:.3e}");
            assert!(d <= 1e-5, "call {call}, job {i} alone: {d}");
        }
        for (i, (got, want)) in batch.iter().zip(&eager_batch).enumerate() {
            let d = common::max_abs_diff(got, want);
            eprintln!("call {call} job {i} batched: max|diff| {d:.3e}");
            assert!(d <= 1e-5, "call {call}, job {i} batched: {d}");
        }
    }
}
