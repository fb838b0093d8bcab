//! Disk full, for real: the store lives on a tiny tmpfs mounted for the test (needs root and
//! `mount`; the test says loudly when it cannot run). Appends fail with `WriteFailed`, reads
//! keep working, and once space returns appends work again with nothing lost or duplicated.

mod common;

use std::path::Path;
use std::process::Command;

use common::event;
use eventlog::{Error, ExpectedVersion, Options, Store};

struct Mount(tempfile::TempDir);

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Mount(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

#[test]
fn a_full_disk_fails_appends_cleanly_keeps_reads_and_recovers_when_space_returns() {
    let Some(mount) = Mount::tmpfs("256k") else {
        eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = mount.path().join("store");
    let options = Options {
        segment_size_bytes: 64 * 1024,
        checkpoint_every_events: 0,
        ..Options::default()
    };
    let store = Store::open(&dir, options.clone()).unwrap();
    let mut acknowledged = Vec::new();
    let payload = format!("\"{}\"", "🔥".repeat(400));
    let failure = loop {
        let e = event("fill", &payload);
        match store.append(vec![e.clone()], ExpectedVersion::Any) {
            Ok(_) => acknowledged.push(e),
            Err(error) => break error,
        }
        assert!(acknowledged.len() < 10_000, "the disk never filled");
    };
    assert!(
        matches!(failure, Error::WriteFailed { .. }),
        "expected WriteFailed, got {failure:?}"
    );
    assert!(failure.is_unavailable());
    assert!(store.is_writable(), "a full disk is not an fsync failure");
    // Reads keep working, and the failed event is nowhere.
    assert_eq!(store.head(), acknowledged.len() as u64);
    let first = store.get(acknowledged[0].id).unwrap().unwrap();
    assert_eq!(first.data, acknowledged[0].data);
    // Retrying while full keeps failing without damage.
    for _ in 0..3 {
        assert!(
            store
                .append(vec![event("fill", &payload)], ExpectedVersion::Any)
                .is_err()
        );
    }
    mount.resize("4m");
    let retried = event("fill", &payload);
    let placed = store
        .append(vec![retried.clone()], ExpectedVersion::Any)
        .unwrap();
    assert_eq!(placed.events[0].position, acknowledged.len() as u64);
    acknowledged.push(retried);
    drop(store);
    let store = Store::open(&dir, options).unwrap();
    let all = store.read_all(0, 100_000).unwrap();
    assert_eq!(all.len(), acknowledged.len(), "lost or duplicated events");
    for (position, (read, expected)) in all.iter().zip(&acknowledged).enumerate() {
        assert_eq!(read.position, position as u64);
        assert_eq!(read.id, expected.id);
        assert_eq!(read.data, expected.data);
    }
}
