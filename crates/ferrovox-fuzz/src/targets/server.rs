//! The server's readers: the speech request body (through the real router, so validation,
//! voice lookup, synthesis and encoding all run), the voice upload's multipart body, and
//! Wyoming framing.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request};
use ferrovox_engine::{
    BatchKey, Engine, EngineConfig, EngineError, SynthesisOptions, TtsModel, Unit,
};
use ferrovox_server::{AppState, ServerConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A voice whose audio is a short click per character: the target is the request path, not a
/// model.
struct Clicks;

impl TtsModel for Clicks {
    fn id(&self) -> &str {
        "clicks"
    }
    fn family(&self) -> ferrovox_voices::Family {
        ferrovox_voices::Family::Piper
    }
    fn sample_rate(&self) -> u32 {
        16_000
    }
    fn speakers(&self) -> usize {
        1
    }
    fn languages(&self) -> Vec<String> {
        vec!["en".into()]
    }
    fn validate(&self, _: &SynthesisOptions) -> Result<(), EngineError> {
        Ok(())
    }
    fn batch_key(&self, _: &SynthesisOptions) -> BatchKey {
        Vec::new()
    }
    fn prepare(&self, text: &str, _: &SynthesisOptions) -> Result<Vec<Unit>, EngineError> {
        let ids: Vec<u32> = text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .map(u32::from)
            .collect();
        if ids.is_empty() {
            return Err(EngineError::EmptyInput("no letters or digits".into()));
        }
        Ok(ids.chunks(64).map(|c| Unit::sentence(c.to_vec())).collect())
    }
    fn synthesize_units(
        &self,
        units: &[Unit],
        _: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        Ok(units
            .iter()
            .map(|u| {
                u.ids
                    .iter()
                    .flat_map(|&id| [0.25 * ((id % 7) as f32 - 3.0) / 3.0; 8])
                    .collect()
            })
            .collect())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct Server {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

fn server() -> Result<&'static Server, String> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let engine = Arc::new(Engine::new(EngineConfig {
                warm_up: false,
                ..Default::default()
            }));
            engine.insert(Arc::new(Clicks)).map_err(|e| e.to_string())?;
            // Voice cloning on, with a store of its own and no model that clones: an upload is
            // read and checked in full and then refused for want of a model (a 4xx), and a
            // speech request's unknown voice is looked up in the store as well.
            let store_dir =
                std::env::temp_dir().join(format!("ferrovox-fuzz-store-{}", std::process::id()));
            let store = ferrovox_voice_store::VoiceStore::open(store_dir.to_str())
                .map_err(|e| e.to_string())?;
            let service = Arc::new(ferrovox_cloning::CloningService::new(
                candle_core::Device::Cpu,
            ));
            let state = AppState::with_cloning(
                engine,
                ServerConfig {
                    voices: vec!["clicks".into()],
                    max_input_chars: 512,
                    max_upload_bytes: 1 << 20,
                    ..Default::default()
                },
                ferrovox_server::Cloning::new(service, store, 2),
            );
            state.load_voices().map_err(|e| e.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Server { runtime, state })
        })
        .as_ref()
        .map_err(|e| format!("the test server did not start: {e}"))
}

pub(super) fn speech_request(bytes: &[u8]) -> Result<(), String> {
    post("/v1/audio/speech", "application/json", bytes)
}

/// The boundary the voice-upload corpus is written with.
const BOUNDARY: &str = "ferrovox-fuzz-7d1f";

pub(super) fn voice_upload(bytes: &[u8]) -> Result<(), String> {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    post("/v1/audio/voices", &content_type, bytes)
}

/// `bytes` posted to `uri` through the router; a 5xx is the defect.
fn post(uri: &str, content_type: &str, bytes: &[u8]) -> Result<(), String> {
    let server = server()?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes.to_vec()))
        .map_err(|e| e.to_string())?;
    let router = ferrovox_server::router(server.state.clone());
    server.runtime.block_on(async move {
        let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{status} whose body broke off: {e}"))?
            .to_bytes();
        if status.is_server_error() {
            return Err(format!(
                "{status} for the client's body: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    })
}

pub(super) fn wyoming(bytes: &[u8]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut reader = tokio::io::BufReader::new(bytes);
        // Each event consumes bytes, so this ends; a reader that stopped consuming would hang
        // here, which the harness's time limit reports.
        while let Ok(Some(_)) = ferrovox_server::wyoming::read_event(&mut reader).await {}
    });
    Ok(())
}
