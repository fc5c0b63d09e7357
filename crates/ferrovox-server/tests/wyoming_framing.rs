//! The Wyoming reader on bytes a client could send, valid or not: it returns an event, a
//! named error or the end of the stream, never panics, never waits for more than the bytes
//! given, and never allocates more than its limits for what a header announces.

use ferrovox_server::wyoming::{read_event, write_event, FramingError, WyomingEvent};
use proptest::prelude::*;

fn read_all(bytes: &[u8]) -> Vec<Result<Option<WyomingEvent>, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut reader = tokio::io::BufReader::new(bytes);
        let mut out = Vec::new();
        loop {
            let r =
                tokio::time::timeout(std::time::Duration::from_secs(5), read_event(&mut reader))
                    .await
                    .expect("the reader waited for bytes that were never sent");
            match r {
                Ok(Some(e)) => out.push(Ok(Some(e))),
                Ok(None) => {
                    out.push(Ok(None));
                    return out;
                }
                Err(e @ (FramingError::Header(_) | FramingError::Io(_))) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    })
}

/// Headers with every field present, absent or of the wrong type, and payloads of any size
/// up to what is announced.
fn header() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[a-z-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("{}".to_string()),
        Just("[1,2]".to_string()),
        Just("{\"text\":\"hi\"}".to_string()),
    ];
    (
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("type"),
                    Just("data"),
                    Just("data_length"),
                    Just("payload_length"),
                    Just("other")
                ],
                value,
            ),
            0..5,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(fields, tail)| {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut bytes = format!("{{{}}}\n", body.join(",")).into_bytes();
            bytes.extend(tail);
            bytes
        })
}

proptest! {
    // No regression files: a failure is turned into a named test instead.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_all(&bytes);
    }

    #[test]
    fn arbitrary_headers_are_read_or_named(bytes in header()) {
        for r in read_all(&bytes) {
            if let Err(e) = r {
                prop_assert!(e.starts_with("malformed event header") || e.starts_with("connection"), "{}", e);
            }
        }
    }

    #[test]
    fn written_events_read_back(kind in "[a-z][a-z-]{0,15}", text in ".{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let event = WyomingEvent::new(&kind, serde_json::json!({"text": text})).with_payload(payload);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut bytes = Vec::new();
        rt.block_on(write_event(&mut bytes, &event)).unwrap();
        let got = read_all(&bytes);
        prop_assert_eq!(got[0].as_ref().unwrap().as_ref(), Some(&event));
    }
}
