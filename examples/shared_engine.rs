//! One engine shared by many request handlers: threads (as a server's workers would be) ask
//! the same `Engine` for the same voice; it is loaded and warmed up once, and its batcher
//! gathers the sentences of concurrent requests into model batches.
use std::sync::Arc;

use ferrovox_engine::{Engine, EngineConfig, EngineError, SynthesisOptions};

fn main() -> anyhow::Result<()> {
    let engine = Arc::new(Engine::new(EngineConfig::default()));
    let requests = [
        "Good morning.",
        "How can I help?",
        "Your order has shipped.",
        "Goodbye.",
    ];
    let handlers: Vec<_> = requests
        .iter()
        .map(|text| {
            let (engine, text) = (engine.clone(), text.to_string());
            std::thread::spawn(move || -> Result<f64, EngineError> {
                let voice = engine.voice("en_US-joe-medium")?;
                Ok(voice
                    .synthesize(&text, &SynthesisOptions::default())?
                    .seconds())
            })
        })
        .collect();
    for (text, handler) in requests.iter().zip(handlers) {
        let seconds = handler
            .join()
            .map_err(|_| anyhow::anyhow!("handler panicked"))??;
        println!("{text:<28} {seconds:.2} s");
    }
    let voice = engine.voice("en_US-joe-medium")?;
    println!(
        "loaded in {:.2} s, warm-up {:.0} ms, {:?}",
        voice.load_time().as_secs_f64(),
        voice.warm_up_time().unwrap_or_default().as_secs_f64() * 1e3,
        voice.batcher_stats()
    );
    Ok(())
}
