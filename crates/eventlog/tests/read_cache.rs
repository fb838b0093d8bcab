//! The read-by-id cache (`Options::read_cache_bytes`): an event read by id once is served
//! again without reading its record, and a scavenge empties the cache of the segments it
//! rewrote. What is served from it is shown by damaging the record on disk behind the open
//! store's back: a read from the file reports the damage, a read from the cache does not.

mod common;

use std::path::{Path, PathBuf};

use eventlog::scavenge::{Candidate, ScavengeOptions};
use eventlog::{Error, ExpectedVersion, Options, Store};

/// Flips one byte of the first occurrence of `needle` in the store's segment files (rewritten
/// in place: the open store's descriptor sees the damage); answers the file.
fn damage(dir: &Path, needle: &[u8]) -> PathBuf {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            return path;
        }
    }
    panic!("no segment holds {:?}", String::from_utf8_lossy(needle));
}

fn options(read_cache_bytes: usize) -> Options {
    Options {
        read_cache_bytes,
        ..common::fast_options()
    }
}

#[test]
fn an_event_read_by_id_is_read_again_from_memory_and_without_a_cache_from_the_file() {
    for (read_cache_bytes, cached) in [(1 << 20, true), (0, false)] {
        let dir = common::scratch_dir();
        let store = Store::open(dir.path(), options(read_cache_bytes)).unwrap();
        let event = common::event("orders", r#"{"payload":"read-me-twice"}"#);
        store
            .append(vec![event.clone()], ExpectedVersion::Any)
            .unwrap();
        let first = store.get(event.id).unwrap().expect("appended");
        assert_eq!(first.data, event.data);
        damage(dir.path(), b"read-me-twice");
        let again = store.get(event.id);
        if cached {
            assert_eq!(again.unwrap(), Some(first), "served from the cache");
        } else {
            assert!(
                matches!(again, Err(Error::Corrupt { .. })),
                "without a cache every read checks the record: {again:?}"
            );
        }
        // Range reads never use the cache: they report the damage either way.
        assert!(matches!(store.read_all(0, 10), Err(Error::Corrupt { .. })));
    }
}

#[test]
fn a_scavenge_empties_the_cache_and_serves_what_it_wrote() {
    let dir = common::scratch_dir();
    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    let gone = common::event("dead-1", r#"{"secret":"erase-me"}"#);
    let kept = common::event("live-1", r#"{"payload":"kept-event"}"#);
    store
        .append(vec![gone.clone()], ExpectedVersion::Any)
        .unwrap();
    store
        .append(vec![kept.clone()], ExpectedVersion::Any)
        .unwrap();
    // Both read by id, so both are cached.
    assert!(store.get(gone.id).unwrap().is_some());
    let before = store.get(kept.id).unwrap().expect("appended");
    store.seal_active_segment().unwrap();
    let is_dead = |event: &Candidate<'_>| event.stream.starts_with("dead-");
    let report = store
        .scavenge(&is_dead, ScavengeOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(report.events_removed, 1);
    assert_eq!(store.get(gone.id).unwrap(), None, "an erased event is gone");
    // The kept event now lives in the rewritten segment. Were it still cached, damage to
    // its new record would go unseen.
    damage(dir.path(), b"kept-event");
    assert!(
        matches!(store.get(kept.id), Err(Error::Corrupt { .. })),
        "the scavenge emptied the cache: the read went to the rewritten file"
    );
    // Repaired, it reads as before (and is cached again).
    damage(dir.path(), b"jept-event");
    assert_eq!(store.get(kept.id).unwrap(), Some(before));
}
