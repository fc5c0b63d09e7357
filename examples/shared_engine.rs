//! One engine shared by many request handlers: a pool of threads (as a server's workers would
//! be) submits sentences to one `Batcher`, which gathers concurrent requests into batches.
use std::sync::Arc;
use std::time::Duration;

use ferrovox_engine::{open_voice, Batcher, BatcherConfig, EngineError, SynthesisOptions};

fn main() -> anyhow::Result<()> {
    let voice = open_voice("en_US-joe-medium", &candle_core::Device::Cpu)?;
    let config = BatcherConfig {
        max_batch: 4,
        max_wait: Duration::from_millis(10),
        queue_capacity: 16,
    };
    let engine = Arc::new(Batcher::new(voice.clone(), config));
    let requests = [
        "Good morning.",
        "How can I help?",
        "Your order has shipped.",
        "Goodbye.",
    ];
    let handlers: Vec<_> = requests
        .iter()
        .map(|text| {
            let (engine, voice, text) = (engine.clone(), voice.clone(), text.to_string());
            std::thread::spawn(move || -> Result<f64, EngineError> {
                let units = voice.prepare(&text)?;
                let audio = engine.synthesize_units(units, SynthesisOptions::default())?;
                Ok(audio.concat().len() as f64 / voice.sample_rate() as f64)
            })
        })
        .collect();
    for (text, handler) in requests.iter().zip(handlers) {
        let seconds = handler
            .join()
            .map_err(|_| anyhow::anyhow!("handler panicked"))??;
        println!("{text:<28} {seconds:.2} s");
    }
    println!("{:?}", engine.stats());
    Ok(())
}
