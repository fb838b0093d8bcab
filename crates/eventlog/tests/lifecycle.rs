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
