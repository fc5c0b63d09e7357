//! Phonemizes text like Piper and prints each sentence's IPA and the time per call.
//!
//! `cargo run --release -p ferrovox-text --example phonemize -- [--voice en-us] [--runs N] [TEXT]`
//! (TEXT defaults to stdin).

use std::io::Read;
use std::time::Instant;

use ferrovox_text::{EspeakPhonemizer, TextError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut voice = "en-us".to_owned();
    let mut runs = 1u32;
    let mut text = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--voice" => voice = args.next().ok_or("--voice needs a value")?,
            "--runs" => runs = args.next().ok_or("--runs needs a value")?.parse()?,
            _ => text = Some(arg),
        }
    }
    let text = match text {
        Some(text) => text,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };

    let start = Instant::now();
    let phonemizer = EspeakPhonemizer::new(&voice)?;
    eprintln!(
        "setup: {:.2?} ({})",
        start.elapsed(),
        phonemizer.data_dir().display()
    );

    // Warm-up, then timed runs.
    let sentences = match phonemizer.phonemize(&text) {
        Err(TextError::NothingToSpeak) => {
            eprintln!("nothing to speak");
            return Ok(());
        }
        other => other?,
    };
    let start = Instant::now();
    for _ in 0..runs {
        phonemizer.phonemize(&text)?;
    }
    let per_call = start.elapsed() / runs.max(1);
    for sentence in &sentences {
        println!("{}", sentence.ipa);
    }
    eprintln!(
        "{} words, {} sentences: {per_call:.2?} per call ({runs} runs after warm-up)",
        text.split_whitespace().count(),
        sentences.len()
    );
    Ok(())
}
