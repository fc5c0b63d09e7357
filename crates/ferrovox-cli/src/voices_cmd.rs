//! `ferrovox voices list | fetch ID | info ID | add CLIP --name NAME | rm ID`.

use ferrovox_vits::piper::PiperVoiceConfig;
use ferrovox_voices::{VoiceFiles, CATALOG};

#[derive(Debug, clap::Subcommand)]
pub enum VoicesCommand {
    /// Voices in the catalog and whether each is cached, then the cloned voices in the store.
    List {
        #[arg(long, env = "FERROVOX_VOICE_STORE")]
        voice_store: Option<String>,
    },
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
    /// Clone a voice from a reference clip (WAV, FLAC, MP3, Ogg Vorbis, AAC in MP4) and store
    /// it: afterwards `ferrovox say --voice NAME` speaks in it.
    Add {
        /// The reference clip: one speaker, 2 s at least (about 10 s of clean speech is best).
        clip: std::path::PathBuf,
        /// A name to call it by.
        #[arg(long)]
        name: String,
        /// The model whose encoders make it (a Chatterbox id, hub repository or directory).
        #[arg(long, env = "FERROVOX_CLONE_MODEL", default_value = "chatterbox")]
        model: String,
        /// Voice store: a directory or `s3://bucket/prefix` (default
        /// `~/.cache/ferrovox/voices/cloned`).
        #[arg(long, env = "FERROVOX_VOICE_STORE")]
        voice_store: Option<String>,
    },
    /// Remove a cloned voice (by id or name).
    Rm {
        id: String,
        #[arg(long, env = "FERROVOX_VOICE_STORE")]
        voice_store: Option<String>,
    },
    /// The cloned voices in the store.
    Cloned {
        #[arg(long, env = "FERROVOX_VOICE_STORE")]
        voice_store: Option<String>,
    },
}

pub fn voices(
    command: VoicesCommand,
    device: &ferrovox_device::DeviceRequest,
    tuning: &ferrovox_device::TuningConfig,
) -> anyhow::Result<()> {
    match command {
        VoicesCommand::Add {
            clip,
            name,
            model,
            voice_store,
        } => {
            let store = crate::cloned::open_store(voice_store.as_deref())?;
            let runtime = ferrovox_device::Runtime::init(device, tuning)?;
            let meta = crate::cloned::add(&store, &clip, &name, &model, runtime.device())?;
            println!("{}", meta.id);
            eprintln!(
                "stored `{}` ({} s, {:.1} LUFS) for {}: ferrovox say --voice {} \"...\"",
                meta.name, meta.duration_s, meta.loudness_lufs, meta.model_id, meta.name
            );
            Ok(())
        }
        VoicesCommand::Rm { id, voice_store } => {
            let store = crate::cloned::open_store(voice_store.as_deref())?;
            let meta = store.resolve(&id)?;
            store.delete(&meta.id)?;
            eprintln!("removed `{}` ({})", meta.name, meta.id);
            Ok(())
        }
        VoicesCommand::Cloned { voice_store } => {
            print_cloned(&crate::cloned::open_store(voice_store.as_deref())?)
        }
        VoicesCommand::List { voice_store } => {
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
            println!();
            match crate::cloned::open_store(voice_store.as_deref()) {
                Ok(store) => print_cloned(&store),
                // The catalog is listed whatever the store's state; the store's problem is named.
                Err(e) => {
                    println!("cloned voices: unavailable ({e:#})");
                    Ok(())
                }
            }
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
        VoiceFiles::Chatterbox { dir, model } => match model {
            ferrovox_voices::ChatterboxModel::English => format!(
                "chatterbox {} ({})",
                dir.display(),
                ferrovox_voices::CHATTERBOX_FILES.join(", ")
            ),
            other => {
                let (name, groups) = match other {
                    ferrovox_voices::ChatterboxModel::Turbo => {
                        ("turbo", ferrovox_voices::CHATTERBOX_TURBO)
                    }
                    ferrovox_voices::ChatterboxModel::Nano => {
                        ("nano", ferrovox_voices::CHATTERBOX_NANO)
                    }
                    _ => ("multilingual", ferrovox_voices::CHATTERBOX_MULTILINGUAL),
                };
                let files: Vec<String> = groups.iter().map(|names| names.join(" or ")).collect();
                format!("chatterbox {name} {} ({})", dir.display(), files.join(", "))
            }
        },
    }
}

/// The cloned voices in `store`, one line each.
fn print_cloned(store: &ferrovox_voice_store::BlockingVoiceStore) -> anyhow::Result<()> {
    println!(
        "{:<32} {:<20} {:<10} {:>6} {:>7}  created",
        "cloned id", "name", "family", "secs", "LUFS"
    );
    for v in store.list()? {
        println!(
            "{:<32} {:<20} {:<10} {:>6.1} {:>7.1}  {}",
            v.id,
            v.name,
            v.family,
            v.duration_s,
            v.loudness_lufs,
            v.created.format("%Y-%m-%d %H:%M")
        );
    }
    Ok(())
}
