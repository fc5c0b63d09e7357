//! `ferrovox voices list | fetch ID | info ID`.

use ferrovox_vits::piper::PiperVoiceConfig;
use ferrovox_voices::{VoiceFiles, CATALOG};

#[derive(Debug, clap::Subcommand)]
pub enum VoicesCommand {
    /// Voices in the catalog, and whether each is cached.
    List,
    /// Download a voice into the cache (verifying its published hash).
    Fetch {
        /// Voice id.
        id: String,
    },
    /// Where a voice's files are and what its config says.
    Info {
        /// Voice id or a directory.
        id: String,
    },
}

pub fn voices(command: VoicesCommand) -> anyhow::Result<()> {
    match command {
        VoicesCommand::List => {
            println!(
                "{:<22} {:<8} {:<7} {:<7} package",
                "id", "family", "lang", "cached"
            );
            for entry in CATALOG {
                let cached = ferrovox_voices::cache_dir()
                    .join("voices")
                    .join(entry.id)
                    .join(".complete")
                    .is_file();
                println!(
                    "{:<22} {:<8} {:<7} {:<7} {} ({:.1} MB)",
                    entry.id,
                    format!("{:?}", entry.family).to_lowercase(),
                    entry.language,
                    if cached { "yes" } else { "no" },
                    entry.package,
                    entry.size as f64 / 1e6
                );
            }
            Ok(())
        }
        VoicesCommand::Fetch { id } => {
            let files = ferrovox_voices::resolve(&id)?;
            println!("{id}: {}", describe(&files));
            Ok(())
        }
        VoicesCommand::Info { id } => {
            let files = ferrovox_voices::resolve(&id)?;
            println!("files        {}", describe(&files));
            if let VoiceFiles::Piper { config, .. } = &files {
                let voice = PiperVoiceConfig::from_file(config)?;
                println!("sample rate  {} Hz", voice.audio.sample_rate);
                if let Some(espeak) = &voice.espeak {
                    println!("espeak voice {}", espeak.voice);
                }
                println!(
                    "defaults     noise_scale {}, length_scale {}, noise_w {}",
                    voice.inference.noise_scale,
                    voice.inference.length_scale,
                    voice.inference.noise_w
                );
                println!("phonemes     {}", voice.phoneme_id_map.len());
                println!("speakers     {}", voice.num_speakers.unwrap_or(1));
            }
            Ok(())
        }
    }
}

fn describe(files: &VoiceFiles) -> String {
    match files {
        VoiceFiles::Piper { onnx, config } => {
            format!("piper {} + {}", onnx.display(), config.display())
        }
        VoiceFiles::Transformers {
            weights, config, ..
        } => {
            format!("mms-vits {} + {}", weights.display(), config.display())
        }
        VoiceFiles::Chatterbox { dir } => format!(
            "chatterbox {} ({})",
            dir.display(),
            ferrovox_voices::CHATTERBOX_FILES.join(", ")
        ),
    }
}
