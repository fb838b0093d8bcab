//! Damage at every byte: truncation at every offset and a flipped byte at every offset, in a
//! sealed segment and in the last one. Open never panics; every batch before the damage
//! survives; nothing after damage in the middle is served; `repair` gets back to the last valid
//! batch and moves the rest aside.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::event;
use eventlog::{Error, ExpectedVersion, Options, RecordedEvent, Store};

/// A small log in two segments, with single events and batches, multi-byte text throughout.
/// Returns the events in position order and, per batch, the segment and byte range it occupies.
struct Fixture {
    dir: tempfile::TempDir,
    events: Vec<RecordedEvent>,
    /// (segment path, start offset, end offset, events in the batch) in log order.
    batches: Vec<(PathBuf, u64, u64, usize)>,
}

fn options() -> Options {
    Options {
        segment_size_bytes: eventlog::MIN_SEGMENT_SIZE_BYTES,
        ..common::fast_options()
    }
}

fn fixture() -> Fixture {
    let dir = common::scratch_dir();
    let store = Store::open(dir.path(), options()).unwrap();
    let mut batch_sizes = Vec::new();
    for i in 0..12 {
        let size = if i % 3 == 2 { 3 } else { 1 };
        let data = format!(
            "{{\"i\":{i},\"text\":\"🔥火e\u{301}\\n\\u0000\",\"pad\":\"{}\"}}",
            "x".repeat(20)
        );
        let batch = (0..size)
            .map(|_| event(&format!("s{}", i % 2), &data))
            .collect();
        store.append(batch, ExpectedVersion::Any).unwrap();
        batch_sizes.push(size);
    }
    let events = store.read_all(0, 1000).unwrap();
    drop(store);
    fs::remove_file(dir.path().join(eventlog::CHECKPOINT_FILE)).unwrap();
    // Derive byte ranges by walking the segment files with the public decoder.
    let mut batches = Vec::new();
    let mut sizes = batch_sizes.into_iter();
    for path in segment_files(dir.path()) {
        let bytes = fs::read(&path).unwrap();
        let mut at = eventlog::format::SEGMENT_HEADER_LEN as usize;
        while at < bytes.len() {
            let start = at;
            let size = sizes.next().unwrap();
            for _ in 0..size {
                let eventlog::format::Decoded::Record(view) =
                    eventlog::format::decode_record(&bytes[at..])
                else {
                    panic!("fixture record does not decode")
                };
                at += view.record_len;
            }
            batches.push((path.clone(), start as u64, at as u64, size));
        }
    }
    assert!(sizes.next().is_none());
    assert!(
        segment_files(dir.path()).len() >= 2,
        "fixture needs two segments"
    );
    Fixture {
        dir,
        events,
        batches,
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn copy_store(from: &Path) -> tempfile::TempDir {
    let to = common::scratch_dir();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
    }
    to
}

/// Number of events in batches that end at or before `offset` of `segment`, plus all batches
/// of earlier segments.
fn events_before(fixture: &Fixture, segment: &Path, offset: u64) -> usize {
    let mut count = 0;
    for (path, _, end, size) in &fixture.batches {
        if path.as_path() < segment || (path.as_path() == segment && *end <= offset) {
            count += size;
        }
    }
    count
}

fn assert_prefix(store: &Store, fixture: &Fixture, expected: usize, context: &str) {
    let read = store.read_all(0, 1000).unwrap();
    assert_eq!(read.len(), expected, "{context}: wrong number of events");
    assert_eq!(
        &read[..],
        &fixture.events[..expected],
        "{context}: events differ"
    );
    for event in &fixture.events[expected..] {
        assert!(
            store.get(event.id).unwrap().is_none(),
            "{context}: event after the damage served"
        );
    }
}

#[test]
fn truncating_the_last_segment_at_every_offset_keeps_every_whole_batch_before_the_cut() {
    let fixture = fixture();
    let last = segment_files(fixture.dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    for cut in 0..len {
        let copy = copy_store(fixture.dir.path());
        let segment = copy.path().join(last.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let store = Store::open(copy.path(), options())
            .unwrap_or_else(|e| panic!("open after a cut at {cut} failed: {e}"));
        let expected = events_before(&fixture, &last, cut);
        assert_prefix(&store, &fixture, expected, &format!("cut at {cut}"));
        let report = store.open_report().clone();
        let boundary = fixture.batches.iter().any(|b| b.0 == last && b.2 == cut)
            || cut == eventlog::format::SEGMENT_HEADER_LEN;
        if !boundary {
            let torn = report
                .torn_tail
                .expect("a cut inside a batch is a torn tail");
            assert_eq!(torn.bytes, fs::read(&torn.side_file).unwrap().len() as u64);
        }
        // The store keeps working after recovery, and the new event survives a reopen.
        let extra = event("after", "{\"ok\":true}");
        store
            .append(vec![extra.clone()], ExpectedVersion::Any)
            .unwrap();
        drop(store);
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(
            store.get(extra.id).unwrap().unwrap().position,
            expected as u64
        );
    }
}

#[test]
fn truncating_a_sealed_segment_is_reported_as_damage_and_repair_recovers_the_prefix() {
    let fixture = fixture();
    let first = segment_files(fixture.dir.path()).remove(0);
    let len = fs::metadata(&first).unwrap().len();
    for cut in (0..len).step_by(7) {
        let copy = copy_store(fixture.dir.path());
        let segment = copy.path().join(first.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut)
            .unwrap();
        match Store::open(copy.path(), options()) {
            Err(Error::Corrupt { path, offset, .. }) => {
                // At the cut, or (for a cut at a batch boundary) where the next segment fails
                // to continue the log.
                assert!(
                    path == segment || offset == 0,
                    "cut at {cut}: {path:?} {offset}"
                );
                assert!(path != segment || offset <= cut);
            }
            other => panic!("cut at {cut} of a sealed segment: expected Corrupt, got {other:?}"),
        }
        let verify = eventlog::tools::verify(copy.path()).unwrap();
        assert!(!verify.is_clean());
        let repaired = eventlog::tools::repair(copy.path()).unwrap();
        assert!(!repaired.moved.is_empty());
        let store = Store::open(copy.path(), options()).unwrap();
        assert_prefix(
            &store,
            &fixture,
            events_before(&fixture, &first, cut),
            &format!("sealed cut at {cut}"),
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_is_never_served_and_never_panics() {
    let fixture = fixture();
    for segment in segment_files(fixture.dir.path()) {
        let bytes = fs::read(&segment).unwrap();
        let is_last = segment == *segment_files(fixture.dir.path()).last().unwrap();
        for at in 0..bytes.len() {
            let copy = copy_store(fixture.dir.path());
            let damaged_path = copy.path().join(segment.file_name().unwrap());
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xFF;
            fs::write(&damaged_path, &damaged).unwrap();
            let context = format!("{} byte {at}", segment.display());
            // Which batch holds the flipped byte (None: the segment header).
            let batch = fixture
                .batches
                .iter()
                .position(|b| b.0 == segment && b.1 <= at as u64 && (at as u64) < b.2);
            let in_last_batch = batch == Some(fixture.batches.len() - 1);
            match Store::open(copy.path(), options()) {
                Ok(store) => {
                    // Only damage in the final batch of the last segment is a torn tail.
                    assert!(
                        is_last && in_last_batch,
                        "{context}: mid-log damage was accepted"
                    );
                    let expected = fixture.events.len() - fixture.batches.last().unwrap().3;
                    assert_prefix(&store, &fixture, expected, &context);
                }
                Err(Error::Corrupt { path, offset, .. }) => {
                    assert_eq!(path, damaged_path, "{context}");
                    assert!(offset <= at as u64, "{context}: damage reported after it");
                    assert!(!in_last_batch || !is_last, "{context}: torn tail refused");
                    // Repair keeps every batch before the damaged one and moves the rest aside;
                    // a damaged header (the same in every segment) is rewritten, keeping all.
                    let report = eventlog::tools::repair(copy.path()).unwrap();
                    let store = Store::open(copy.path(), options()).unwrap();
                    let expected = match batch {
                        Some(b) => events_before(&fixture, &segment, fixture.batches[b].1),
                        None => {
                            assert_eq!(report.headers_rewritten.len(), 1, "{context}");
                            fixture.events.len()
                        }
                    };
                    assert_prefix(&store, &fixture, expected, &context);
                }
                Err(other) => panic!("{context}: unexpected error {other}"),
            }
        }
    }
}

#[test]
fn a_damaged_record_is_reported_by_reads_not_served() {
    let fixture = fixture();
    let copy = copy_store(fixture.dir.path());
    let store = Store::open(copy.path(), options()).unwrap();
    // Damage a record in a sealed segment behind the open store's back.
    let (path, start, _, _) = fixture.batches[1].clone();
    let path = copy.path().join(path.file_name().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    bytes[start as usize + 100] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let victim = &fixture.events[1];
    match store.get(victim.id) {
        Err(Error::Corrupt {
            path: reported,
            offset,
            ..
        }) => {
            assert_eq!(reported, path);
            assert_eq!(offset, start);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(store.read_all(0, 10), Err(Error::Corrupt { .. })));
    assert_eq!(
        store.get(fixture.events[0].id).unwrap().as_ref(),
        Some(&fixture.events[0])
    );
}
