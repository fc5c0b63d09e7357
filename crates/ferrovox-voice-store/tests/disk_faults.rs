//! A directory store on a full disk and in a read-only directory, each fault made by the
//! kernel in a child process (`ferrovox-faults`): the add fails with an error that names the
//! object's path and the cause, and nothing of it is left behind.

mod support;

use ferrovox_faults::{writable_dir, Fault, Scratch, Side};
use ferrovox_voice_store::BlockingVoiceStore;

fn open(scratch: &Scratch) -> BlockingVoiceStore {
    let root = scratch.path().join("store");
    BlockingVoiceStore::open(Some(root.to_str().unwrap())).unwrap()
}

#[test]
fn a_full_disk_fails_the_payload_and_leaves_nothing() {
    let scratch = Scratch::new().unwrap();
    match scratch.run(Fault::DiskFull { bytes: 16 << 10 }) {
        Side::Child => {
            let store = open(&scratch);
            let err = store
                .add(support::voice("anna", 1, 64 << 10, 0))
                .unwrap_err();
            let text = err.to_string();
            assert!(err.is_out_of_space(), "{err:?}");
            assert!(
                text.contains(&scratch.path().display().to_string()),
                "{text}"
            );
            assert!(text.contains("too large"), "{text}");
            assert!(store.list().unwrap().is_empty());
        }
        Side::Parent => {
            scratch.assert_nothing_left();
            // The same add on the same directory works once there is room.
            let store = open(&scratch);
            store.add(support::voice("anna", 1, 64 << 10, 0)).unwrap();
            assert_eq!(store.list().unwrap().len(), 1);
        }
    }
}

/// The payload fits and the metadata that commits it does not: the payload written a moment
/// before is removed again.
#[test]
fn a_full_disk_at_the_commit_removes_the_payload() {
    let scratch = Scratch::new().unwrap();
    match scratch.run(Fault::DiskFull { bytes: 256 }) {
        Side::Child => {
            let store = open(&scratch);
            let err = store.add(support::voice("anna", 1, 128, 0)).unwrap_err();
            let text = err.to_string();
            assert!(err.is_out_of_space(), "{err:?}");
            assert!(text.contains("voice.json"), "{text}");
            assert!(store.list().unwrap().is_empty());
        }
        Side::Parent => scratch.assert_nothing_left(),
    }
}

#[test]
fn a_read_only_directory_fails_with_its_path() {
    let scratch = Scratch::new().unwrap();
    let root = scratch.read_only("store").unwrap();
    match scratch.run(Fault::ReadOnly) {
        Side::Child => {
            let store = open(&scratch);
            let err = store
                .add(support::voice("anna", 1, 1 << 10, 0))
                .unwrap_err();
            let text = err.to_string();
            assert!(!err.is_out_of_space(), "{err:?}");
            assert_eq!(
                err.io_cause().map(|e| e.kind()),
                Some(std::io::ErrorKind::PermissionDenied),
                "{err:?}"
            );
            assert!(text.contains(&root.display().to_string()), "{text}");
            assert!(store.list().unwrap().is_empty());
        }
        Side::Parent => {
            scratch.assert_nothing_left();
            writable_dir(&root).unwrap();
        }
    }
}
