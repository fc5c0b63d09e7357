//! The voice store against a temporary directory and against a moto S3 server: every case runs
//! on both (`<case>::local`, `<case>::s3`). The S3 half skips with a message when the moto venv
//! is absent (run `tests/s3/setup.sh`), and fails instead under `FERROVOX_REQUIRE_MOTO=1`.

mod support;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::Duration;

use ferrovox_voice_store::{
    voice_id, Added, BlockingVoiceStore, Error, VoiceStore, DEFAULT_CACHE_BYTES, META_FILE,
};
use support::{block_on, payload, sha256_hex, voice, Fixture, CHILD_CLIP, CHILD_MODE, CHILD_SEED};

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[test]
            fn local() {
                let fx = Fixture::local();
                block_on(super::$case(&fx));
            }

            #[test]
            fn s3() {
                if let Some(fx) = Fixture::s3(stringify!($case)) {
                    block_on(super::$case(&fx));
                }
            }
        }
    )*};
}

on_both_backends!(
    round_trip,
    same_clip_is_one_entry,
    two_processes_add_the_same_clip,
    corrupt_entries_are_reported_not_served,
    killed_writer_leaves_an_invisible_orphan,
    invalid_ids_are_rejected,
    cache_evicts_least_recently_used_by_bytes,
);

mod blocking_wrapper {
    use super::*;

    #[test]
    fn local() {
        super::blocking_wrapper(&Fixture::local());
    }

    #[test]
    fn s3() {
        if let Some(fx) = Fixture::s3("blocking_wrapper") {
            super::blocking_wrapper(&fx);
        }
    }
}

fn payload_name(sha256: &str) -> String {
    format!("conditionals-{sha256}.safetensors")
}

async fn round_trip(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    assert!(store.list().await.unwrap().is_empty());

    let first = voice("Ada", 1, 4096, 0);
    let (a, added) = store.add(first.clone()).await.unwrap();
    assert_eq!(added, Added::New);
    assert_eq!(
        a.id,
        voice_id(
            &first.source_hash,
            "chatterbox",
            "1.0.0",
            &first.encoder_params
        )
        .unwrap()
    );
    assert_eq!(a.payload_sha256, sha256_hex(&first.conditionals));
    assert_eq!(a.payload_bytes, 4096);
    assert_eq!(
        (a.family.as_str(), a.model_id.as_str()),
        ("chatterbox", "ResembleAI/chatterbox")
    );
    // Creation times are millisecond-resolution; keep the two voices apart in the ordering.
    std::thread::sleep(Duration::from_millis(5));
    let (b, _) = store.add(voice("Grace", 2, 1000, 1)).await.unwrap();

    // The documented layout, with the metadata as JSON that carries the documented fields.
    assert_eq!(
        fx.raw_names(&a.id).await,
        vec![payload_name(&a.payload_sha256), META_FILE.to_string()]
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fx.raw_read(&a.id, META_FILE).await).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["id"], a.id.as_str());
    assert_eq!(json["name"], "Ada");
    assert_eq!(json["encoder_params"]["sample_rate"], 24000);
    assert_eq!(json["source_hash"], first.source_hash.as_str());
    assert_eq!(json["payload_bytes"], 4096);
    let created = json["created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");

    let listed = store.list().await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()]);

    let got = store.get(&a.id).await.unwrap();
    assert_eq!(got.meta, a);
    assert_eq!(&got.conditionals[..], &first.conditionals[..]);
    assert_eq!(store.meta(&b.id).await.unwrap(), b);
    assert_eq!(store.find_by_name("Grace").await.unwrap().id, b.id);
    assert_eq!(store.resolve("Grace").await.unwrap().id, b.id);
    assert_eq!(store.resolve(&a.id).await.unwrap().id, a.id);

    // A second handle (another server worker) sees the same voices.
    let other = fx.open(0);
    assert_eq!(
        &other.get(&b.id).await.unwrap().conditionals[..],
        &payload(1000, 1)[..]
    );

    assert!(store.delete(&a.id).await.unwrap());
    assert!(!store.delete(&a.id).await.unwrap());
    assert!(fx.raw_names(&a.id).await.is_empty());
    assert!(matches!(store.get(&a.id).await, Err(Error::NotFound(id)) if id == a.id));
    assert!(matches!(store.meta(&a.id).await, Err(Error::NotFound(_))));
    assert!(!store.is_cached(&a.id));
    // The other handle cached nothing for `a`, and sees the delete.
    assert!(matches!(other.get(&a.id).await, Err(Error::NotFound(_))));
    assert_eq!(store.list().await.unwrap(), vec![b.clone()]);
    assert!(matches!(
        store.find_by_name("Ada").await,
        Err(Error::NameNotFound(_))
    ));
}

async fn same_clip_is_one_entry(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    let (first, added) = store.add(voice("first", 7, 512, 0)).await.unwrap();
    assert_eq!(added, Added::New);

    // Same clip, family, model version and parameters; a new name and, as from an encoder that
    // is not bit-exact, other bytes: the stored entry comes back untouched.
    let (again, added) = store.add(voice("second", 7, 600, 9)).await.unwrap();
    assert_eq!(added, Added::Existing);
    assert_eq!(again, first);
    assert_eq!(store.list().await.unwrap(), vec![first.clone()]);
    assert_eq!(
        &store.get(&first.id).await.unwrap().conditionals[..],
        &payload(512, 0)[..]
    );
    assert_eq!(
        fx.raw_names(&first.id).await,
        vec![payload_name(&first.payload_sha256), META_FILE.to_string()]
    );

    // Parameters with their keys in another order, and an integral float, are the same key.
    let mut reordered = voice("third", 7, 512, 0);
    reordered.encoder_params = serde_json::json!({"sample_rate": 24000.0, "exaggeration": 0.5});
    reordered.source_hash = reordered.source_hash.to_uppercase();
    let (same, added) = store.add(reordered).await.unwrap();
    assert_eq!(
        (same.id.as_str(), added),
        (first.id.as_str(), Added::Existing)
    );

    // Other parameters, or another model version, are another voice.
    let mut tweaked = voice("first", 7, 512, 0);
    tweaked.encoder_params = serde_json::json!({"exaggeration": 0.7, "sample_rate": 24000});
    let (other, added) = store.add(tweaked).await.unwrap();
    assert_eq!(added, Added::New);
    assert_ne!(other.id, first.id);
    let mut newer = voice("newer", 7, 512, 0);
    newer.model_version = "1.1.0".into();
    let (newer, added) = store.add(newer).await.unwrap();
    assert_eq!(added, Added::New);
    assert_eq!(store.list().await.unwrap().len(), 3);

    // Names are labels: two voices named "first" make the name ambiguous.
    match store.find_by_name("first").await {
        Err(Error::AmbiguousName { name, ids }) => {
            assert_eq!(name, "first");
            assert_eq!(
                ids.into_iter().collect::<BTreeSet<_>>(),
                BTreeSet::from([first.id.clone(), other.id.clone()])
            );
        }
        other => panic!("expected AmbiguousName, got {other:?}"),
    }
    // Renaming on request; the name is read fresh even when the payload is cached.
    store.get(&first.id).await.unwrap();
    let renamed = store.rename(&first.id, "second").await.unwrap();
    assert_eq!(renamed.name, "second");
    assert_eq!(renamed.created, first.created);
    assert_eq!(store.get(&first.id).await.unwrap().meta.name, "second");
    assert_eq!(store.find_by_name("first").await.unwrap().id, other.id);
    assert_eq!(store.find_by_name("second").await.unwrap().id, first.id);
    assert_eq!(store.resolve("newer").await.unwrap().id, newer.id);
    assert!(matches!(
        store.rename(&first.id, " ").await,
        Err(Error::InvalidVoice(_))
    ));
}

async fn two_processes_add_the_same_clip(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    for clip in [11, 12, 13] {
        // Both helpers stage their payload (different bytes), then commit on the same signal,
        // so that both metadata writes race instead of the second seeing the first.
        let mut helpers = [fx.child("race", clip, 1), fx.child("race", clip, 2)];
        for helper in &mut helpers {
            helper.expect_line("STAGED");
        }
        for helper in &mut helpers {
            helper.send("GO");
        }
        let results: Vec<Vec<String>> = helpers
            .iter_mut()
            .map(|h| {
                h.expect_line("RESULT")
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .collect();
        for helper in helpers {
            helper.wait_success();
        }
        let outcomes: BTreeSet<&str> = results.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            outcomes,
            BTreeSet::from(["Existing", "New"]),
            "clip {clip}: {results:?}"
        );
        // Both report the entry that won, with the winner's payload.
        assert_eq!(results[0][1..], results[1][1..], "clip {clip}");
        let (id, sha) = (&results[0][1], &results[0][2]);

        let listed: Vec<_> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| &m.id == id)
            .collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(&listed[0].payload_sha256, sha);
        let got = store.get(id).await.unwrap();
        assert_eq!(&sha256_hex(&got.conditionals), sha);
        // The loser removed its own payload: one payload, the winner's, is left.
        assert_eq!(
            fx.raw_names(id).await,
            vec![payload_name(sha), META_FILE.to_string()]
        );
    }
    assert_eq!(store.list().await.unwrap().len(), 3);
}

async fn corrupt_entries_are_reported_not_served(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    let (a, _) = store.add(voice("flipped", 21, 2048, 0)).await.unwrap();
    let (b, _) = store.add(voice("no payload", 22, 2048, 0)).await.unwrap();
    let (c, _) = store.add(voice("bad metadata", 23, 2048, 0)).await.unwrap();
    let (d, _) = store.add(voice("healthy", 24, 2048, 0)).await.unwrap();
    let a_payload = payload_name(&a.payload_sha256);

    // Served and cached while sound.
    store.get(&a.id).await.unwrap();
    assert!(store.is_cached(&a.id));
    store.get(&a.id).await.unwrap();
    assert_eq!(store.cache_stats().hits, 1);

    // One byte flipped in place, same length: only the checksum can tell.
    let mut bytes = fx.raw_read(&a.id, &a_payload).await;
    bytes[1000] ^= 0x40;
    fx.raw_write(&a.id, &a_payload, bytes.clone()).await;
    for _ in 0..2 {
        match store.get(&a.id).await {
            Err(Error::Corrupt { id, reason }) => {
                assert_eq!(id, a.id);
                assert!(reason.contains("sha256"), "{reason}");
            }
            other => panic!("flipped payload served: {other:?}"),
        }
        assert!(!store.is_cached(&a.id), "corrupt payload left in the cache");
    }
    // A fresh handle with an empty cache refuses it too.
    assert!(matches!(
        fx.open(0).get(&a.id).await,
        Err(Error::Corrupt { .. })
    ));

    // Truncated: length mismatch, seen without reading the payload by meta() and list().
    bytes.truncate(100);
    fx.raw_write(&a.id, &a_payload, bytes).await;
    match store.get(&a.id).await {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("100 bytes"), "{reason}"),
        other => panic!("truncated payload served: {other:?}"),
    }
    assert!(matches!(
        store.meta(&a.id).await,
        Err(Error::Corrupt { .. })
    ));

    // Metadata without its payload.
    fx.raw_delete(&b.id, &payload_name(&b.payload_sha256)).await;
    match store.get(&b.id).await {
        Err(Error::Corrupt { id, reason }) => {
            assert_eq!(id, b.id);
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("voice without payload served: {other:?}"),
    }

    // Metadata that does not parse.
    fx.raw_write(
        &c.id,
        META_FILE,
        b"{\"format_version\": 1, \"id\": ".to_vec(),
    )
    .await;
    match store.get(&c.id).await {
        Err(Error::Corrupt { id, reason }) => {
            assert_eq!(id, c.id);
            assert!(reason.contains("does not parse"), "{reason}");
        }
        other => panic!("unparseable metadata served: {other:?}"),
    }

    // Only the healthy voice is listed; scan names the broken ones and why.
    assert_eq!(store.list().await.unwrap(), vec![d.clone()]);
    let scan = store.scan().await.unwrap();
    assert_eq!(scan.voices, vec![d.clone()]);
    let broken: Vec<&str> = scan.corrupt.iter().map(|c| c.id.as_str()).collect();
    let mut expected = vec![a.id.as_str(), b.id.as_str(), c.id.as_str()];
    expected.sort();
    assert_eq!(broken, expected);

    // Adding the same clip again reports the corruption instead of papering over it.
    assert!(matches!(
        store.add(voice("flipped", 21, 2048, 0)).await,
        Err(Error::Corrupt { .. })
    ));
    // A corrupt entry can be deleted, and then added afresh.
    for id in [&a.id, &b.id, &c.id] {
        assert!(store.delete(id).await.unwrap());
        assert!(fx.raw_names(id).await.is_empty());
    }
    let (again, added) = store.add(voice("flipped", 21, 2048, 0)).await.unwrap();
    assert_eq!((again.id.as_str(), added), (a.id.as_str(), Added::New));
    assert_eq!(
        &store.get(&a.id).await.unwrap().conditionals[..],
        &payload(2048, 0)[..]
    );
}

async fn killed_writer_leaves_an_invisible_orphan(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    let (kept, _) = store.add(voice("kept", 31, 300, 0)).await.unwrap();

    // A helper writes the payload, reports, and is SIGKILLed before it writes the metadata.
    let mut helper = fx.child("stage-and-hang", 32, 0);
    let id = helper.expect_line("STAGED");
    helper.child.kill().unwrap();
    helper.child.wait().unwrap();
    let orphan = payload_name(&sha256_hex(&payload(777, 0)));
    assert_eq!(fx.raw_names(&id).await, vec![orphan.clone()]);

    assert_eq!(store.list().await.unwrap(), vec![kept.clone()]);
    assert!(store.scan().await.unwrap().corrupt.is_empty());
    assert!(matches!(store.get(&id).await, Err(Error::NotFound(x)) if x == id));
    assert!(matches!(store.meta(&id).await, Err(Error::NotFound(_))));

    // Too young for an hour's threshold; taken at zero. The committed voice stays.
    let report = store
        .sweep_orphans(Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    let report = store.sweep_orphans(Duration::MAX).await.unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    let report = store.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(
        report.removed[0].ends_with(&format!("{id}/{orphan}")),
        "{report:?}"
    );
    assert_eq!(report.bytes, 777);
    assert!(fx.raw_names(&id).await.is_empty());
    assert_eq!(
        &store.get(&kept.id).await.unwrap().conditionals[..],
        &payload(300, 0)[..]
    );
    assert!(store
        .sweep_orphans(Duration::ZERO)
        .await
        .unwrap()
        .removed
        .is_empty());

    // An orphan written straight into the backend next to a committed entry (a loser of a
    // commit race killed before cleaning up) goes too; the entry's own payload does not.
    let stray = payload_name(&sha256_hex(b"stray"));
    fx.raw_write(&kept.id, &stray, b"stray".to_vec()).await;
    // In a directory, a write killed halfway leaves object_store's staging file behind.
    let staging = format!("{META_FILE}#7");
    if !fx.is_s3() {
        fx.raw_write(&kept.id, &staging, b"{\"half".to_vec()).await;
    }
    let report = store.sweep_orphans(Duration::ZERO).await.unwrap();
    let expected: BTreeSet<String> = if fx.is_s3() {
        BTreeSet::from([stray])
    } else {
        BTreeSet::from([stray, staging])
    };
    let removed: BTreeSet<String> = report
        .removed
        .iter()
        .map(|url| url.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(removed, expected, "{report:?}");
    assert_eq!(
        fx.raw_names(&kept.id).await,
        vec![payload_name(&kept.payload_sha256), META_FILE.to_string()]
    );

    // The killed writer's voice can be added normally afterwards.
    let (added_meta, added) = store.add(voice("retried", 32, 777, 0)).await.unwrap();
    assert_eq!((added_meta.id.as_str(), added), (id.as_str(), Added::New));
    assert_eq!(store.list().await.unwrap().len(), 2);
}

async fn invalid_ids_are_rejected(fx: &Fixture) {
    let store = fx.open(DEFAULT_CACHE_BYTES);
    let (real, _) = store.add(voice("real", 41, 64, 0)).await.unwrap();
    let before = fx.raw_all().await;
    let bad = [
        String::new(),
        "abc".into(),
        "../../../../etc/passwd".into(),
        "..".into(),
        real.id.to_uppercase(),
        real.id[..31].into(),
        format!("{}0", real.id),
        format!("{}g", &real.id[..31]),
        format!("{}/{}", &real.id[..15], &real.id[16..]),
        format!("{}%2f", &real.id[..29]),
        format!(" {}", &real.id[..31]),
        format!("{}\n", &real.id[..31]),
        format!("{}é", &real.id[..30]),
    ];
    for id in &bad {
        let invalid = |e: &Error| matches!(e, Error::InvalidId(_));
        assert!(
            store.get(id).await.is_err_and(|e| invalid(&e)),
            "get {id:?}"
        );
        assert!(
            store.meta(id).await.is_err_and(|e| invalid(&e)),
            "meta {id:?}"
        );
        assert!(
            store.delete(id).await.is_err_and(|e| invalid(&e)),
            "delete {id:?}"
        );
        assert!(
            store.rename(id, "x").await.is_err_and(|e| invalid(&e)),
            "rename {id:?}"
        );
        // Not an id, so taken as a name.
        assert!(
            matches!(store.resolve(id).await, Err(Error::NameNotFound(_))),
            "resolve {id:?}"
        );
    }
    assert_eq!(
        fx.raw_all().await,
        before,
        "a rejected id touched the backend"
    );
    assert_eq!(store.list().await.unwrap(), vec![real.clone()]);

    // Well-formed but unknown.
    let unknown = "0123456789abcdef0123456789abcdef";
    assert!(matches!(store.get(unknown).await, Err(Error::NotFound(_))));
    assert!(!store.delete(unknown).await.unwrap());
    assert!(matches!(
        store.rename(unknown, "x").await,
        Err(Error::NotFound(_))
    ));

    // A malformed source hash never becomes an id either.
    let mut bad_hash = voice("bad", 42, 64, 0);
    bad_hash.source_hash = "../../x".into();
    assert!(matches!(
        store.add(bad_hash).await,
        Err(Error::InvalidVoice(_))
    ));
}

async fn cache_evicts_least_recently_used_by_bytes(fx: &Fixture) {
    let store = fx.open(250);
    let mut ids = Vec::new();
    for (clip, len) in [(51, 100), (52, 100), (53, 100), (54, 300)] {
        ids.push(store.add(voice("v", clip, len, 0)).await.unwrap().0.id);
    }
    let [a, b, c, big] = [&ids[0], &ids[1], &ids[2], &ids[3]];
    let cached = |store: &VoiceStore| -> Vec<bool> {
        [a, b, c, big]
            .iter()
            .map(|id| store.is_cached(id))
            .collect()
    };

    store.get(a).await.unwrap();
    store.get(b).await.unwrap();
    assert_eq!(cached(&store), [true, true, false, false]);
    store.get(a).await.unwrap(); // a is now more recent than b
    store.get(c).await.unwrap(); // 300 > 250: the coldest, b, goes
    assert_eq!(cached(&store), [true, false, true, false]);
    let stats = store.cache_stats();
    assert_eq!(
        (
            stats.used_bytes,
            stats.entries,
            stats.hits,
            stats.misses,
            stats.evictions
        ),
        (200, 2, 1, 3, 1)
    );

    // Larger than the whole cache: served, not cached, evicts nothing.
    assert_eq!(store.get(big).await.unwrap().conditionals.len(), 300);
    assert_eq!(cached(&store), [true, false, true, false]);

    store.get(b).await.unwrap(); // a is now the coldest
    assert_eq!(cached(&store), [false, true, true, false]);
    assert_eq!(store.cache_stats().evictions, 2);

    assert!(store.delete(c).await.unwrap());
    assert_eq!(cached(&store), [false, true, false, false]);
    assert_eq!(store.cache_stats().used_bytes, 100);

    // Capacity 0 caches nothing.
    let uncached = fx.open(0);
    uncached.get(a).await.unwrap();
    assert_eq!(uncached.cache_stats().entries, 0);
}

fn blocking_wrapper(fx: &Fixture) {
    let store =
        BlockingVoiceStore::open_with(Some(&fx.location), fx.options(DEFAULT_CACHE_BYTES)).unwrap();
    let (meta, added) = store.add(voice("blocking", 61, 256, 0)).unwrap();
    assert_eq!(added, Added::New);
    assert_eq!(
        store.add(voice("again", 61, 256, 0)).unwrap().1,
        Added::Existing
    );
    assert_eq!(store.list().unwrap(), vec![meta.clone()]);
    assert_eq!(
        &store.get(&meta.id).unwrap().conditionals[..],
        &payload(256, 0)[..]
    );
    assert_eq!(store.find_by_name("blocking").unwrap().id, meta.id);
    assert!(matches!(store.get("nope"), Err(Error::InvalidId(_))));

    // From inside a runtime it refuses instead of panicking, and dropping it there is fine.
    block_on(async {
        assert!(matches!(store.list(), Err(Error::InsideAsyncRuntime)));
        let inner = BlockingVoiceStore::open_with(Some(&fx.location), fx.options(0)).unwrap();
        drop(inner);
    });

    assert!(store.delete(&meta.id).unwrap());
    assert!(store.list().unwrap().is_empty());
}

/// `VoiceStore::open(None)` lands in `$XDG_CACHE_HOME/ferrovox/voices/cloned`, else in
/// `$HOME/.cache/ferrovox/voices/cloned` (checked in helper processes, which own their env).
#[test]
fn default_location_follows_xdg_then_home() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let home = tmp.path().join("home");
    for (env, expected_root) in [
        (vec![("XDG_CACHE_HOME", &xdg), ("HOME", &home)], xdg.clone()),
        (vec![("HOME", &home)], home.join(".cache")),
    ] {
        let exe = std::env::current_exe().unwrap();
        let mut command = std::process::Command::new(exe);
        command
            .args([
                "child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, "default-location")
            .env(CHILD_CLIP, "71")
            .env(CHILD_SEED, "0")
            .env_remove("XDG_CACHE_HOME");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let id = output
            .stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("RESULT ").map(|(_, id)| id.trim().to_string()))
            .expect("helper printed no RESULT");
        let entry = expected_root.join("ferrovox/voices/cloned").join(&id);
        assert!(
            entry.join(META_FILE).is_file(),
            "{} missing",
            entry.display()
        );
    }
}

/// Helper-process entry: a no-op in a normal run; with `FERROVOX_VOICE_STORE_TEST_CHILD` set it
/// is one of the writer processes the tests above spawn. It opens the store as the CLI would:
/// the blocking wrapper, the location from `FERROVOX_VOICE_STORE`, S3 from `AWS_*`.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let clip: u32 = std::env::var(CHILD_CLIP).unwrap().parse().unwrap();
    let seed: u8 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    match mode.as_str() {
        "race" => {
            let location = std::env::var(ferrovox_voice_store::LOCATION_ENV).unwrap();
            let store = BlockingVoiceStore::open(Some(&location)).unwrap();
            let staged = store
                .stage(voice("racer", clip, 2000 + usize::from(seed), seed))
                .unwrap();
            println!("STAGED");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let (meta, added) = store.commit(staged).unwrap();
            println!("RESULT {added:?} {} {}", meta.id, meta.payload_sha256);
        }
        "stage-and-hang" => {
            let location = std::env::var(ferrovox_voice_store::LOCATION_ENV).unwrap();
            let store = BlockingVoiceStore::open(Some(&location)).unwrap();
            let staged = store.stage(voice("killed", clip, 777, seed)).unwrap();
            println!("STAGED {}", staged.meta().id);
            std::thread::sleep(Duration::from_secs(60));
            panic!("not killed");
        }
        "default-location" => {
            let store = BlockingVoiceStore::open(None).unwrap();
            let (meta, _) = store.add(voice("default", clip, 64, seed)).unwrap();
            println!("RESULT {}", meta.id);
        }
        other => panic!("unknown helper mode {other:?}"),
    }
}

/// Against a server without conditional PUTs the commit checks, then writes: a commit that
/// finds the voice already committed still returns it and removes its own payload.
#[test]
fn s3_commit_without_conditional_put() {
    let Some(fx) = Fixture::s3("no_conditional_put") else {
        return;
    };
    let store = fx.s3_store_without_conditional_put().unwrap();
    assert_eq!(store.url(), fx.location);
    block_on(async {
        let first = store.stage(voice("first", 81, 100, 1)).await.unwrap();
        let second = store.stage(voice("second", 81, 120, 2)).await.unwrap();
        let (winner, added) = store.commit(first).await.unwrap();
        assert_eq!(added, Added::New);
        let (existing, added) = store.commit(second).await.unwrap();
        assert_eq!((existing, added), (winner.clone(), Added::Existing));
        assert_eq!(
            fx.raw_names(&winner.id).await,
            vec![payload_name(&winner.payload_sha256), META_FILE.to_string()]
        );
        assert_eq!(
            &store.get(&winner.id).await.unwrap().conditionals[..],
            &payload(100, 1)[..]
        );
        assert_eq!(
            store.add(voice("third", 81, 100, 1)).await.unwrap().1,
            Added::Existing
        );
    });
}

/// The server holds the store in axum state and awaits it in handlers: the store must be
/// shareable and its futures `Send`.
#[test]
fn store_and_its_futures_are_send() {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let fx = Fixture::local();
    let store = fx.open(0);
    shareable(&store);
    send(store.add(voice("v", 1, 1, 0)));
    send(store.stage(voice("v", 1, 1, 0)));
    send(store.get("x"));
    send(store.meta("x"));
    send(store.list());
    send(store.scan());
    send(store.delete("x"));
    send(store.rename("x", "y"));
    send(store.find_by_name("x"));
    send(store.resolve("x"));
    send(store.sweep_orphans(Duration::ZERO));
}
