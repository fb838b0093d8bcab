//! Lifecycle records (metadata, soft delete, tombstone) are events of metastreams: the index
//! rebuilt by a full replay or loaded from a checkpoint knows them, and the writer keeps a
//! tombstone final.

mod common;

use std::path::Path;

use common::{event, fast_options};
use eventlog::lifecycle::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE, metastream_of};
use eventlog::{Error, ExpectedVersion, NewEvent, Options, Retention, Store};

fn options() -> Options {
    Options {
        segment_size_bytes: 4096,
        checkpoint_every_events: 0,
        ..fast_options()
    }
}

fn record(stream: &str, event_type: &str, data: &str) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        stream: metastream_of(stream),
        event_type: event_type.into(),
        data: data.as_bytes().to_vec(),
        metadata: None,
        binary: false,
    }
}

fn lifecycle(
    store: &Store,
    stream: &str,
    record: NewEvent,
    expected: ExpectedVersion,
) -> Result<(), Error> {
    let (sender, receiver) = std::sync::mpsc::channel();
    store.submit_lifecycle(
        stream,
        record,
        expected,
        ExpectedVersion::Any,
        move |result| {
            let _ = sender.send(result);
        },
    );
    receiver.recv().unwrap().map(|_| ())
}

fn build(dir: &Path) {
    let store = Store::open(dir, options()).unwrap();
    for i in 0..40 {
        let stream = ["kept", "limited", "dead"][i % 3];
        store
            .append(
                vec![event(stream, &format!("\"{i}\""))],
                ExpectedVersion::Any,
            )
            .unwrap();
    }
    lifecycle(
        &store,
        "limited",
        record("limited", METADATA_EVENT_TYPE, r#"{"$maxCount":2,"$tb":1}"#),
        ExpectedVersion::Any,
    )
    .unwrap();
    lifecycle(
        &store,
        "dead",
        record("dead", TOMBSTONE_EVENT_TYPE, "{}"),
        ExpectedVersion::Exact(12),
    )
    .unwrap();
    store.close();
}

fn check(store: &Store) {
    assert_eq!(
        store.retention("limited"),
        Some(Retention {
            truncate_before: Some(1),
            max_count: Some(2),
            ..Retention::default()
        })
    );
    assert!(store.retention("dead").unwrap().tombstoned);
    assert_eq!(store.retention("kept"), None);
    assert_eq!(store.first_live_version("limited").unwrap(), Some(11));
    let live: Vec<_> = {
        let mut all = store.read_all(0, 1000).unwrap();
        store.retain_live(&mut all);
        all.into_iter().map(|e| (e.stream, e.version)).collect()
    };
    assert!(live.iter().all(|(stream, _)| stream != "dead"));
    let limited: Vec<_> = live
        .iter()
        .filter(|(s, _)| s == "limited")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(limited, vec![11, 12]);
    assert_eq!(live.iter().filter(|(s, _)| s == "kept").count(), 14);
    let liveness = store.liveness();
    assert!(!liveness.is_live("dead", 3, 0));
    assert!(!liveness.is_live("limited", 10, i64::MAX));
    assert!(liveness.is_live("kept", 0, 0));
    let refused = store.append(vec![event("dead", "\"again\"")], ExpectedVersion::Any);
    assert!(
        matches!(refused, Err(Error::StreamDeleted { .. })),
        "{refused:?}"
    );
    let refused = lifecycle(
        store,
        "dead",
        record("dead", METADATA_EVENT_TYPE, "{}"),
        ExpectedVersion::Any,
    );
    assert!(
        matches!(refused, Err(Error::StreamDeleted { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.stream_names("", None, 10),
        vec!["dead".to_owned(), "kept".to_owned(), "limited".to_owned()]
    );
    assert_eq!(store.stream_names("$$", None, 10).len(), 2);
}

#[test]
fn lifecycle_records_survive_a_reopen_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(store.open_report().checkpoint_events > 0);
    check(&store);
}

#[test]
fn lifecycle_records_survive_a_full_replay_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    check(&store);
}

#[test]
fn a_lifecycle_record_is_conditional_on_the_streams_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append(vec![event("s", "1")], ExpectedVersion::Any)
        .unwrap();
    let stale = lifecycle(
        &store,
        "s",
        record("s", METADATA_EVENT_TYPE, r#"{"$tb":1}"#),
        ExpectedVersion::Exact(3),
    );
    assert!(
        matches!(&stale, Err(Error::WrongExpectedVersion { stream, current: Some(0), .. }) if stream == "s"),
        "{stale:?}"
    );
    let misplaced = lifecycle(
        &store,
        "s",
        record("other", METADATA_EVENT_TYPE, "{}"),
        ExpectedVersion::Any,
    );
    assert!(matches!(misplaced, Err(Error::InvalidAppend(_))));
    // The metastream's own version is a second condition (a record built from its last
    // one must not overwrite a change made in between).
    let (sender, receiver) = std::sync::mpsc::channel();
    store.submit_lifecycle(
        "s",
        record("s", METADATA_EVENT_TYPE, r#"{"$tb":1}"#),
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(0),
        move |result| {
            let _ = sender.send(result);
        },
    );
    let stale_metadata = receiver.recv().unwrap();
    assert!(
        matches!(&stale_metadata, Err(Error::WrongExpectedVersion { stream, current: None, .. }) if stream == "$$s"),
        "{stale_metadata:?}"
    );
    assert_eq!(store.head(), 1);
}

/// What reads of `$all` serve must be exactly the events whose retention says they are live:
/// the catalog's liveness bits (dead for good, or to check) decide most events without a
/// lookup, so a bit missed or set wrong would serve a dead event or hide a live one. Many
/// lifecycle changes (limits, truncations, removals, soft deletes, tombstones), several of
/// them in one flush with appends, each checked live, after a reopen from the checkpoint and
/// after a full replay.
#[test]
fn reads_of_all_serve_exactly_the_events_their_retention_keeps() {
    fn check_against_lookups(store: &Store) -> (usize, usize) {
        let all = store.read_all(0, 1_000_000).unwrap();
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| store.is_live(&e.stream, e.version, e.recorded_at_micros))
            .map(|e| e.position)
            .collect();
        let page = store
            .read_all_live_within(0, 1_000_000, usize::MAX)
            .unwrap();
        let served: Vec<u64> = page.events.iter().map(|e| e.position).collect();
        assert_eq!(served, expected, "the live read of $all");
        let mut kept = all.clone();
        store.retain_live(&mut kept);
        let kept: Vec<u64> = kept.iter().map(|e| e.position).collect();
        assert_eq!(kept, expected, "retain_live");
        (all.len(), expected.len())
    }

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let streams = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % 1_000_000).unwrap()
    };
    for _ in 0..80 {
        let (sender, receiver) = std::sync::mpsc::channel();
        let ops = 1 + next() % 6;
        for _ in 0..ops {
            let stream = streams[next() % streams.len()];
            let sender = sender.clone();
            let done = move |result: Result<_, Error>| {
                let _ = sender.send(result.map(|_| ()));
            };
            let metadata = |data: String| record(stream, METADATA_EVENT_TYPE, &data);
            let lifecycle_record = match next() % 10 {
                0..=4 => {
                    let events = (0..1 + next() % 3)
                        .map(|i| event(stream, &format!("{i}")))
                        .collect();
                    store.submit(events, ExpectedVersion::Any, done);
                    continue;
                }
                5 => metadata(format!(r#"{{"$maxCount":{}}}"#, 1 + next() % 3)),
                6 => metadata(format!(r#"{{"$tb":{}}}"#, next() % 6)),
                7 => metadata("{}".to_owned()),
                // A soft delete: past every version so far.
                8 => metadata(format!(
                    r#"{{"$tb":{}}}"#,
                    store.stream_version(stream).map_or(0, |v| v + 1)
                )),
                _ if next() % 3 == 0 => record(stream, TOMBSTONE_EVENT_TYPE, "{}"),
                _ => metadata(r#"{"custom":1}"#.to_owned()),
            };
            store.submit_lifecycle(
                stream,
                lifecycle_record,
                ExpectedVersion::Any,
                ExpectedVersion::Any,
                done,
            );
        }
        drop(sender);
        // Appends to a tombstoned stream are refused: that is part of what is tested.
        for _ in receiver {}
        check_against_lookups(&store);
    }
    let (all, live) = check_against_lookups(&store);
    assert!(live < all, "some events are dead ({live} of {all} live)");
    let tombstoned = streams
        .iter()
        .filter(|s| store.retention(s).is_some_and(|r| r.tombstoned))
        .count();
    assert!(tombstoned > 0 && tombstoned < streams.len(), "{tombstoned}");
    store.close();

    let store = Store::open(dir.path(), options()).unwrap();
    assert!(store.open_report().checkpoint_events > 0);
    assert_eq!(check_against_lookups(&store), (all, live));
    store.close();
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.open_report().checkpoint_events, 0);
    assert_eq!(check_against_lookups(&store), (all, live));
}
