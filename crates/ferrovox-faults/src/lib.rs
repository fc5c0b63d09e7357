//! Disk faults for tests, made by the kernel rather than by a mock: a test asks to run under a
//! [`Fault`], [`under`] runs that same test again in a child process with the fault in force,
//! and the parent passes only if the child ran the test and it passed; then the parent looks at
//! what the child left in the directory they share ([`Scratch`]).
//!
//! - [`Fault::DiskFull`]: a file-size limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored), so a write
//!   past `bytes` fails mid-file with `EFBIG` as a full disk fails it with `ENOSPC`. Files
//!   smaller than the limit are still written, as on a disk with a little room left.
//! - [`Fault::ReadOnly`]: the process gives up the capabilities that let root write where the
//!   permission bits forbid it (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`); a
//!   directory made `0o555` (see [`read_only_dir`]) then refuses new entries with `EACCES`,
//!   for root as for anyone, the way a read-only mount refuses them with `EROFS`.
//!
//! Both are process-wide (the limit) or inherited by every thread the test starts (the
//! capabilities), which is why they live in a child: the other tests of the binary keep
//! running in the parent untouched. Linux only; elsewhere the child fails the test with a
//! reason.

use std::path::{Path, PathBuf};

/// Names the child's fault in its environment; its absence marks the parent.
const FAULT_VAR: &str = "FERROVOX_FAULT";
/// The scratch directory the parent hands its child.
const SCRATCH_VAR: &str = "FERROVOX_FAULT_SCRATCH";

/// A disk fault a test runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No write may take a file past this many bytes.
    DiskFull {
        /// The size a file may reach.
        bytes: u64,
    },
    /// Permission bits bind the process even if it is root.
    ReadOnly,
}

impl Fault {
    fn to_env(self) -> String {
        match self {
            Fault::DiskFull { bytes } => format!("disk-full:{bytes}"),
            Fault::ReadOnly => "read-only".to_string(),
        }
    }
}

/// Which process a [`Scratch::run`] returned in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The child, with the fault in force: do the work that should meet it.
    Child,
    /// The test process, after the child ran the test and it passed: inspect what the child
    /// left in the scratch directory.
    Parent,
}

/// A directory the test process and its child share: a new temporary directory in the test
/// process (removed when dropped), the same directory in the child.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Scratch {
    /// The shared directory.
    pub fn new() -> std::io::Result<Self> {
        match std::env::var_os(SCRATCH_VAR) {
            Some(path) if std::env::var_os(FAULT_VAR).is_some() => Ok(Self {
                path: path.into(),
                _owned: None,
            }),
            _ => {
                let dir = tempfile::Builder::new()
                    .prefix("ferrovox-faults-")
                    .tempdir()?;
                Ok(Self {
                    path: dir.path().to_path_buf(),
                    _owned: Some(dir),
                })
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the calling test under `fault`. In the test process this starts the test binary
    /// again with only the calling test selected and this directory shared, waits, panics
    /// unless exactly that one test ran and passed, and returns [`Side::Parent`]. In the child
    /// it puts the fault in force and returns [`Side::Child`].
    ///
    /// The calling test is found by its thread's name, which the test harness sets to the
    /// test's path; call this on the test's own thread, before the test starts threads.
    pub fn run(&self, fault: Fault) -> Side {
        match std::env::var(FAULT_VAR) {
            Ok(found) => {
                assert_eq!(
                    found,
                    fault.to_env(),
                    "the child runs the fault it was given"
                );
                apply(fault);
                Side::Child
            }
            Err(_) => {
                run_child(fault, &self.path);
                Side::Parent
            }
        }
    }

    /// `name` under the directory, made read-only ([`read_only_dir`]) by the test process
    /// before it starts the child; the child gets the same path.
    pub fn read_only(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.path.join(name);
        if !in_child() {
            read_only_dir(&dir)?;
        }
        Ok(dir)
    }

    /// Panics naming them if any file is left under the directory.
    pub fn assert_nothing_left(&self) {
        let files = self.files();
        assert!(files.is_empty(), "left behind: {files:?}");
    }

    /// Every file under the directory (not directories), as paths relative to it, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.path.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.path) {
                    out.push(rel.to_path_buf());
                }
            }
        }
        out.sort();
        out
    }
}

fn run_child(fault: Fault, scratch: &Path) {
    let current = std::thread::current();
    let test = current
        .name()
        .filter(|n| *n != "main")
        .expect("Scratch::run is called on a test's own thread (named after the test)");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--test-threads", "1", "--nocapture"])
        .env(FAULT_VAR, fault.to_env())
        .env(SCRATCH_VAR, scratch)
        .output()
        .expect("starting the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} under {fault:?} failed in its child ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The child's report, for a reader of the parent's output.
    eprint!("{stderr}");
}

/// Whether this process is the child a [`Scratch::run`] started: for set-up the child alone
/// needs before the fault takes effect, or that only the parent should do.
pub fn in_child() -> bool {
    std::env::var_os(FAULT_VAR).is_some()
}

/// Makes `dir` (created if missing) refuse new entries under [`Fault::ReadOnly`]: mode `0o555`.
pub fn read_only_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o555)
}

/// Undoes [`read_only_dir`] so the directory can be removed.
pub fn writable_dir(dir: &Path) -> std::io::Result<()> {
    set_mode(dir, 0o755)
}

#[cfg(unix)]
fn set_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Err(std::io::Error::other("permission bits are unix-only"))
}

#[cfg(target_os = "linux")]
fn apply(fault: Fault) {
    match fault {
        Fault::DiskFull { bytes } => linux::limit_file_size(bytes),
        Fault::ReadOnly => linux::drop_permission_override(),
    }
    .unwrap_or_else(|e| panic!("putting {fault:?} in force: {e}"));
}

#[cfg(not(target_os = "linux"))]
fn apply(fault: Fault) {
    panic!("{fault:?} is made with Linux's resource limits and capabilities; this is not Linux");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Error, Result};

    pub fn limit_file_size(bytes: u64) -> Result<()> {
        // SIGXFSZ would kill the process at the limit; ignored, the write fails with EFBIG.
        // SAFETY: installing SIG_IGN for one signal touches no Rust state.
        if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(Error::last_os_error());
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit for the call to fill and then read.
        if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } != 0 {
            return Err(Error::last_os_error());
        }
        limit.rlim_cur = bytes.min(limit.rlim_max);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) } != 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    const CAP_V3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_FOWNER: u32 = 3;

    /// Drops the capabilities from this thread (threads started later inherit them); dropping
    /// needs no privilege.
    pub fn drop_permission_override() -> Result<()> {
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: version 3 reads two CapData records; both pointers are valid for the call.
        if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
            return Err(Error::last_os_error());
        }
        let drop = (1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_FOWNER);
        data[0].effective &= !drop;
        data[0].permitted &= !drop;
        data[0].inheritable &= !drop;
        // SAFETY: as above, with the records capget filled.
        if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Write};

    #[test]
    fn a_write_past_the_limit_fails_as_on_a_full_disk() {
        let scratch = Scratch::new().unwrap();
        let path = scratch.path().join("f");
        match scratch.run(Fault::DiskFull { bytes: 4096 }) {
            Side::Child => {
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&[0u8; 4096]).unwrap();
                let err = f.write_all(&[0u8; 1]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::FileTooLarge, "{err}");
            }
            // The limit was the child's alone.
            Side::Parent => {
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&[0u8; 1]).unwrap();
            }
        }
    }

    #[test]
    fn a_read_only_directory_refuses_even_root_in_every_thread() {
        let scratch = Scratch::new().unwrap();
        let dir = scratch.read_only("ro").unwrap();
        match scratch.run(Fault::ReadOnly) {
            Side::Child => {
                let err = std::fs::File::create(dir.join("f")).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
                let dir = dir.clone();
                std::thread::spawn(move || assert!(std::fs::create_dir(dir.join("d")).is_err()))
                    .join()
                    .unwrap();
            }
            Side::Parent => {
                scratch.assert_nothing_left();
                writable_dir(&dir).unwrap();
            }
        }
    }

    #[test]
    fn a_child_that_fails_fails_the_test() {
        let scratch = Scratch::new().unwrap();
        if in_child() {
            // In the child of the test below: fail on purpose.
            assert!(scratch.run(Fault::ReadOnly) == Side::Child);
            panic!("the child's failure");
        }
        let caught = std::panic::catch_unwind(|| scratch.run(Fault::ReadOnly));
        let message = caught.unwrap_err();
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("the child's failure"), "{text}");
    }
}
