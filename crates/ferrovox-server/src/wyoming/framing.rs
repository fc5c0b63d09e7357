//! Wyoming's framing: each event is one line of JSON (`type`, `data`, and optionally
//! `data_length` and `payload_length`), then `data_length` bytes of JSON merged into `data`,
//! then `payload_length` bytes of payload (audio).

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest header line accepted.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest extra data or payload accepted from a client (text events carry no audio).
pub const MAX_BODY: usize = 1024 * 1024;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct WyomingEvent {
    /// The event's type (`describe`, `synthesize`, `audio-chunk`, …).
    pub kind: String,
    /// Its data (an object).
    pub data: Map<String, Value>,
    /// Its binary payload.
    pub payload: Vec<u8>,
}

impl WyomingEvent {
    /// An event of `kind` with `data` (an object, or null for none).
    pub fn new(kind: &str, data: Value) -> Self {
        Self {
            kind: kind.into(),
            data: match data {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            payload: Vec::new(),
        }
    }

    /// The same event carrying `payload`.
    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }
}

/// A stream that broke the framing: the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// Reading or writing failed (the peer went away).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A header that is not what Wyoming sends.
    #[error("malformed event header: {0}")]
    Header(String),
}

/// Reads the next event; `None` at a clean end of stream.
pub async fn read_event<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<WyomingEvent>, FramingError> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_HEADER as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(FramingError::Header(if line.len() > MAX_HEADER {
            format!("longer than {MAX_HEADER} bytes")
        } else {
            "the stream ended inside a header".into()
        }));
    }
    let header: Value = serde_json::from_slice(&line)
        .map_err(|e| FramingError::Header(format!("not JSON: {e}")))?;
    let Value::Object(header) = header else {
        return Err(FramingError::Header("not a JSON object".into()));
    };
    let kind = match header.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err(FramingError::Header("no `type`".into())),
    };
    let length = |key: &str| -> Result<usize, FramingError> {
        match header.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => match v.as_u64() {
                Some(n) if n as usize <= MAX_BODY => Ok(n as usize),
                Some(n) => Err(FramingError::Header(format!(
                    "`{key}` {n} is over {MAX_BODY} bytes"
                ))),
                None => Err(FramingError::Header(format!("`{key}` is not a length"))),
            },
        }
    };
    let (data_length, payload_length) = (length("data_length")?, length("payload_length")?);
    let mut data = match header.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(FramingError::Header("`data` is not an object".into())),
    };
    if data_length > 0 {
        let mut extra = vec![0u8; data_length];
        reader.read_exact(&mut extra).await?;
        match serde_json::from_slice(&extra) {
            Ok(Value::Object(m)) => data.extend(m),
            _ => return Err(FramingError::Header("its data is not a JSON object".into())),
        }
    }
    let mut payload = vec![0u8; payload_length];
    reader.read_exact(&mut payload).await?;
    Ok(Some(WyomingEvent {
        kind,
        data,
        payload,
    }))
}

/// Writes `event` (its data inline in the header line, as Wyoming's own servers do).
pub async fn write_event<W: AsyncWrite + Unpin>(
    writer: &mut W,
    event: &WyomingEvent,
) -> Result<(), FramingError> {
    let mut header = serde_json::json!({ "type": event.kind, "data": event.data });
    if !event.payload.is_empty() {
        header["payload_length"] = event.payload.len().into();
    }
    let mut bytes = serde_json::to_vec(&header).expect("JSON of a map");
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.write_all(&event.payload).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(bytes: &[u8]) -> Result<Option<WyomingEvent>, FramingError> {
        let mut reader = tokio::io::BufReader::new(bytes);
        read_event(&mut reader).await
    }

    #[tokio::test]
    async fn events_round_trip_with_extra_data_and_payload() {
        let event = WyomingEvent::new("audio-chunk", serde_json::json!({"rate": 22050}))
            .with_payload(vec![1, 2, 3, 4]);
        let mut bytes = Vec::new();
        write_event(&mut bytes, &event).await.unwrap();
        assert_eq!(round_trip(&bytes).await.unwrap(), Some(event));
        // Data split between the header and the extra data, as Python's client sends it.
        let split =
            b"{\"type\":\"synthesize\",\"data\":{\"a\":1},\"data_length\":12}\n{\"text\":\"x\"}";
        let e = round_trip(split).await.unwrap().unwrap();
        assert_eq!(e.data["a"], 1);
        assert_eq!(e.data["text"], "x");
        assert_eq!(round_trip(b"").await.unwrap(), None);
    }

    #[tokio::test]
    async fn malformed_headers_are_named() {
        for (bytes, what) in [
            (&b"not json\n"[..], "not JSON"),
            (b"[1]\n", "not a JSON object"),
            (b"{\"data\":{}}\n", "no `type`"),
            (b"{\"type\":\"x\",\"payload_length\":99999999}\n", "over"),
            (
                b"{\"type\":\"x\",\"payload_length\":\"ten\"}\n",
                "not a length",
            ),
            (b"{\"type\":\"x\"", "ended inside"),
        ] {
            let err = round_trip(bytes).await.unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        let long = vec![b'x'; MAX_HEADER + 10];
        assert!(round_trip(&long)
            .await
            .unwrap_err()
            .to_string()
            .contains("longer"));
        // A payload shorter than announced: the peer went away.
        let cut = b"{\"type\":\"x\",\"payload_length\":10}\nabc";
        assert!(matches!(round_trip(cut).await, Err(FramingError::Io(_))));
    }
}
