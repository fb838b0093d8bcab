//! Checkpoints are only a cache: deleted, truncated, bit-flipped, stale and foreign
//! checkpoints all give the same index as a full replay, and a good one is used.

mod common;

use std::fs;
use std::path::Path;

use common::event;
use eventlog::{ExpectedVersion, Options, RecordedEvent, Store};

fn options() -> Options {
    Options {
        segment_size_bytes: 4096,
        checkpoint_every_events: 0,
        ..common::fast_options()
    }
}

/// A store of 150 events over several segments and streams; returns every event.
fn build(dir: &Path, salt: &str) -> Vec<RecordedEvent> {
    let store = Store::open(dir, options()).unwrap();
    for i in 0..50 {
        let batch = (0..3)
            .map(|j| {
                event(
                    &format!("s{}", (i + j) % 5),
                    &format!("\"{salt}{i}-{j} 火\""),
                )
            })
            .collect();
        store.append(batch, ExpectedVersion::Any).unwrap();
    }
    store.read_all(0, 1000).unwrap()
}

/// Everything observable about the index, for comparing two opens.
fn observe(store: &Store) -> (Vec<RecordedEvent>, Vec<Option<u64>>, Vec<Vec<u64>>) {
    let all = store.read_all(0, 10_000).unwrap();
    for event in &all {
        assert_eq!(store.get(event.id).unwrap().as_ref(), Some(event));
    }
    let streams: Vec<_> = (0..6)
        .map(|s| store.stream_version(&format!("s{s}")))
        .collect();
    let positions = (0..6)
        .map(|s| {
            store
                .read_stream(&format!("s{s}"), 0, 10_000)
                .unwrap()
                .unwrap_or_default()
                .iter()
                .map(|e| e.position)
                .collect()
        })
        .collect();
    (all, streams, positions)
}

fn checkpoint_path(dir: &Path) -> std::path::PathBuf {
    dir.join(eventlog::CHECKPOINT_FILE)
}

fn replayed(dir: &Path) -> (Vec<RecordedEvent>, Vec<Option<u64>>, Vec<Vec<u64>>) {
    let saved = fs::read(checkpoint_path(dir)).ok();
    fs::remove_file(checkpoint_path(dir)).ok();
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    let observed = observe(&store);
    drop(store);
    if let Some(saved) = saved {
        fs::write(checkpoint_path(dir), saved).unwrap();
    }
    observed
}

#[test]
fn a_good_checkpoint_is_used_and_gives_the_same_index_as_a_full_replay() {
    let dir = common::scratch_dir();
    let events = build(dir.path(), "a");
    let full = replayed(dir.path());
    assert_eq!(full.0, events);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 150);
    assert_eq!(store.open_report().replayed_events, 0);
    assert_eq!(observe(&store), full);
}

#[test]
fn a_missing_checkpoint_means_a_full_replay() {
    let dir = common::scratch_dir();
    build(dir.path(), "a");
    let full = replayed(dir.path());
    fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    assert_eq!(store.open_report().replayed_events, 150);
    assert_eq!(observe(&store), full);
}

#[test]
fn truncated_and_bit_flipped_checkpoints_are_rejected_with_the_same_resulting_index() {
    let dir = common::scratch_dir();
    build(dir.path(), "a");
    let full = replayed(dir.path());
    let good = fs::read(checkpoint_path(dir.path())).unwrap();
    let mut variants: Vec<Vec<u8>> = Vec::new();
    for cut in [
        0,
        1,
        7,
        8,
        20,
        good.len() / 2,
        good.len() - 4,
        good.len() - 1,
    ] {
        variants.push(good[..cut].to_vec());
    }
    for at in (0..good.len()).step_by(good.len() / 97 + 1) {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        variants.push(flipped);
    }
    for (number, variant) in variants.into_iter().enumerate() {
        fs::write(checkpoint_path(dir.path()), &variant).unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        let report = store.open_report();
        assert_eq!(report.checkpoint_events, 0, "variant {number} was used");
        assert!(report.checkpoint_rejected.is_some(), "variant {number}");
        assert_eq!(observe(&store), full, "variant {number}");
    }
}

#[test]
fn a_stale_checkpoint_is_used_and_only_the_tail_is_replayed() {
    let dir = common::scratch_dir();
    build(dir.path(), "a");
    let stale = fs::read(checkpoint_path(dir.path())).unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        for i in 0..40 {
            store
                .append(
                    vec![event(&format!("s{}", i % 6), "\"tail\"")],
                    ExpectedVersion::Any,
                )
                .unwrap();
        }
    }
    fs::write(checkpoint_path(dir.path()), &stale).unwrap();
    let full = replayed(dir.path());
    assert_eq!(full.0.len(), 190);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 150);
    assert_eq!(store.open_report().replayed_events, 40);
    assert_eq!(observe(&store), full);
}

#[test]
fn a_checkpoint_of_another_log_or_a_longer_past_is_rejected() {
    let dir = common::scratch_dir();
    build(dir.path(), "a");
    let full = replayed(dir.path());
    // Same shape, different ids: the last-record check catches it.
    let other = common::scratch_dir();
    build(other.path(), "b");
    fs::copy(checkpoint_path(other.path()), checkpoint_path(dir.path())).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    assert_eq!(observe(&store), full);
    drop(store);
    // A checkpoint covering more than the log holds now (say, after a repair).
    let longer = common::scratch_dir();
    build(longer.path(), "a");
    {
        let store = Store::open(longer.path(), options()).unwrap();
        store
            .append(vec![event("s1", "1")], ExpectedVersion::Any)
            .unwrap();
    }
    fs::copy(checkpoint_path(longer.path()), checkpoint_path(dir.path())).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    assert_eq!(observe(&store), full);
}

#[test]
fn periodic_checkpoints_are_written_while_appending() {
    let dir = common::scratch_dir();
    let options = Options {
        checkpoint_every_events: 10,
        ..options()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for i in 0..30 {
        store
            .append(vec![event("s", &i.to_string())], ExpectedVersion::Any)
            .unwrap();
    }
    // The background checkpoint may still be running; wait for the file with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !checkpoint_path(dir.path()).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic checkpoint written"
        );
        std::thread::yield_now();
    }
    // Simulate a crash: copy the files while the store is open (no close-time checkpoint).
    let copy = common::scratch_dir();
    let checkpoint = loop {
        // The rename is atomic, so a read sees a whole checkpoint.
        if let Ok(bytes) = fs::read(checkpoint_path(dir.path())) {
            break bytes;
        }
    };
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    fs::write(checkpoint_path(copy.path()), checkpoint).unwrap();
    let reopened = Store::open(copy.path(), options).unwrap();
    assert!(reopened.open_report().checkpoint_events >= 10);
    assert_eq!(reopened.head(), 30);
}

#[test]
fn an_open_that_replayed_a_long_tail_checkpoints_at_once_without_waiting_for_close() {
    let dir = common::scratch_dir();
    build(dir.path(), "a");
    fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let eager = Options {
        checkpoint_every_events: 1000,
        checkpoint_every_seconds: 0,
        ..options()
    };
    // 150 replayed events >= 1000 / 10: a checkpoint is written in the background while the
    // store stays open (as after a crash, where no close would ever write one).
    let store = Store::open(dir.path(), eager).unwrap();
    assert_eq!(store.open_report().replayed_events, 150);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !checkpoint_path(dir.path()).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after a long replay"
        );
        std::thread::yield_now();
    }
    std::mem::forget(store); // no close-time checkpoint: only the one written at open counts
    let copy = common::scratch_dir();
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg" || x == "ckpt") {
            fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let reopened = Store::open(copy.path(), options()).unwrap();
    assert_eq!(reopened.open_report().checkpoint_events, 150);
}
