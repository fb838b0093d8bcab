//! Behaviour of an open store: appends, reads, idempotency, concurrency control, limits,
//! restarts, segment rolling, the directory lock.

mod common;

use common::{event, fast_options};
use eventlog::{Error, ExpectedVersion, Options, Store};
use uuid::Uuid;

#[test]
fn an_appended_event_reads_back_byte_exactly_by_id_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = "{\"text\":\"🔥 火事 e\u{301} \\n line\\u0000 end\",\"cjk\":\"".to_owned()
        + &"漢字".repeat(2000)
        + "\"}";
    let mut original = event("orders-🔥", &data);
    original.metadata = Some(b"{\"trace\":\"\xE2\x9C\x93\"}".to_vec());
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let appended = store
            .append(vec![original.clone()], ExpectedVersion::Any)
            .unwrap();
        assert_eq!(appended.events[0].position, 0);
        assert_eq!(appended.events[0].version, 0);
        assert!(!appended.duplicate);
        let read = store.get(original.id).unwrap().unwrap();
        assert_eq!(read.data, original.data);
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let read = store.get(original.id).unwrap().unwrap();
    assert_eq!(read.data, data.as_bytes());
    assert_eq!(read.metadata, original.metadata);
    assert_eq!(read.stream, "orders-🔥");
    assert_eq!(read.event_type, "Tested");
    assert!(read.recorded_at_micros > 1_700_000_000_000_000);
}

#[test]
fn positions_are_gap_free_and_versions_count_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    for i in 0..10 {
        let stream = if i % 2 == 0 { "even" } else { "odd" };
        let appended = store
            .append(vec![event(stream, &i.to_string())], ExpectedVersion::Any)
            .unwrap();
        assert_eq!(appended.events[0].position, i);
        assert_eq!(appended.events[0].version, i / 2);
    }
    let all = store.read_all(0, 100).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64));
    let odd = store.read_stream("odd", 1, 2).unwrap().unwrap();
    assert_eq!(
        odd.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        vec![b"3".to_vec(), b"5".to_vec()]
    );
    assert_eq!(store.read_all(7, 100).unwrap().len(), 3);
    assert!(store.read_all(10, 100).unwrap().is_empty());
    assert_eq!(store.read_stream("missing", 0, 10).unwrap(), None);
    assert_eq!(store.stream_version("even"), Some(4));
}

#[test]
fn a_batch_is_placed_contiguously_and_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    store
        .append(vec![event("a", "0")], ExpectedVersion::Any)
        .unwrap();
    let batch = vec![event("b", "1"), event("a", "2"), event("b", "3")];
    let appended = store.append(batch.clone(), ExpectedVersion::Any).unwrap();
    let placed: Vec<_> = appended
        .events
        .iter()
        .map(|p| (p.stream.as_str(), p.version, p.position))
        .collect();
    assert_eq!(placed, vec![("b", 0, 1), ("a", 1, 2), ("b", 1, 3)]);
}

#[test]
fn reappending_an_id_with_identical_content_returns_the_original_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = event("s", "{\"n\":1}");
    {
        let store = Store::open(dir.path(), fast_options()).unwrap();
        store
            .append(vec![event("s", "0")], ExpectedVersion::Any)
            .unwrap();
        store
            .append(vec![first.clone()], ExpectedVersion::Any)
            .unwrap();
    }
    let store = Store::open(dir.path(), fast_options()).unwrap();
    let again = store
        .append(vec![first.clone()], ExpectedVersion::Exact(99))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events[0].position, 1);
    assert_eq!(again.events[0].version, 1);
    assert_eq!(store.head(), 2);

    let mut changed = first.clone();
    changed.data = b"{\"n\":2}".to_vec();
    match store.append(vec![changed], ExpectedVersion::Any) {
        Err(Error::IdConflict { id }) => assert_eq!(id, first.id),
        other => panic!("expected an id conflict, got {other:?}"),
    }
    // A batch that repeats part of an earlier batch is a conflict too, and stores nothing.
    let partial = vec![first.clone(), event("s", "new")];
    assert!(matches!(
        store.append(partial, ExpectedVersion::Any),
        Err(Error::IdConflict { .. })
    ));
    assert_eq!(store.head(), 2);
}

#[test]
fn expected_versions_are_checked_atomically_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    store
        .append(vec![event("s", "0")], ExpectedVersion::NoStream)
        .unwrap();
    assert!(matches!(
        store.append(vec![event("s", "x")], ExpectedVersion::NoStream),
        Err(Error::WrongExpectedVersion {
            current: Some(0),
            ..
        })
    ));
    // Sixteen threads all try to append version 1; exactly one wins.
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                scope.spawn(move || {
                    store
                        .append(vec![event("s", "race")], ExpectedVersion::Exact(0))
                        .is_ok() as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
    assert_eq!(store.stream_version("s"), Some(1));
}

#[test]
fn limits_are_typed_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = fast_options();
    options.limits.max_event_size_bytes = 100;
    options.limits.max_batch_events = 3;
    options.limits.max_stream_name_bytes = 8;
    let store = Store::open(dir.path(), options).unwrap();
    let big = event("s", &"x".repeat(200));
    assert!(matches!(
        store.append(vec![big], ExpectedVersion::Any),
        Err(Error::LimitExceeded {
            setting: "max_event_size_bytes",
            ..
        })
    ));
    let many = (0..4).map(|_| event("s", "1")).collect();
    assert!(matches!(
        store.append(many, ExpectedVersion::Any),
        Err(Error::LimitExceeded {
            setting: "max_batch_events",
            ..
        })
    ));
    assert!(matches!(
        store.append(vec![event("a-long-stream", "1")], ExpectedVersion::Any),
        Err(Error::LimitExceeded {
            setting: "max_stream_name_bytes",
            ..
        })
    ));
    assert!(matches!(
        store.append(vec![event("", "1")], ExpectedVersion::Any),
        Err(Error::InvalidAppend(_))
    ));
    assert!(matches!(
        store.append(vec![], ExpectedVersion::Any),
        Err(Error::InvalidAppend(_))
    ));
    let twice = event("s", "1");
    assert!(matches!(
        store.append(vec![twice.clone(), twice], ExpectedVersion::Any),
        Err(Error::InvalidAppend(_))
    ));
    assert!(matches!(
        store.append(
            vec![event("a", "1"), event("b", "1")],
            ExpectedVersion::NoStream
        ),
        Err(Error::InvalidAppend(_))
    ));
    assert_eq!(store.head(), 0);
}

#[test]
fn segments_roll_at_the_configured_size_and_everything_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let payload = "p".repeat(500);
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), fast_options()).unwrap();
        for i in 0..400 {
            let e = event(&format!("s{}", i % 7), &payload);
            ids.push(e.id);
            store.append(vec![e], ExpectedVersion::Any).unwrap();
        }
        assert!(store.stats().segments >= 3, "{:?}", store.stats());
        let all = store.read_all(0, 1000).unwrap();
        assert_eq!(all.len(), 400);
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments >= 3);
    for size in [64 * 1024, 1024 * 1024] {
        std::fs::remove_file(dir.path().join(eventlog::CHECKPOINT_FILE)).ok();
        let options = Options {
            segment_size_bytes: size,
            ..fast_options()
        };
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(store.open_report().checkpoint_events, 0);
        for (position, id) in ids.iter().enumerate() {
            let e = store.get(*id).unwrap().unwrap();
            assert_eq!(e.position, position as u64);
        }
        let streamed = store.read_stream("s3", 0, 1000).unwrap().unwrap();
        assert_eq!(streamed.len(), 57);
        assert!(
            streamed
                .iter()
                .enumerate()
                .all(|(v, e)| e.version == v as u64)
        );
    }
}

#[test]
fn a_second_open_of_the_same_directory_fails_with_a_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    match Store::open(dir.path(), fast_options()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected a lock error, got {other:?}"),
    }
    drop(store);
    Store::open(dir.path(), fast_options()).unwrap();
}

#[test]
fn appends_after_close_fail_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    let e = event("s", "1");
    store.append(vec![e.clone()], ExpectedVersion::Any).unwrap();
    store.close();
    assert!(matches!(
        store.append(vec![event("s", "2")], ExpectedVersion::Any),
        Err(Error::Closed)
    ));
    assert!(store.get(e.id).unwrap().is_some());
    assert!(store.get(Uuid::now_v7()).unwrap().is_none());
}

#[test]
fn concurrent_durable_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..32 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..20 {
                    store
                        .append(
                            vec![event(&format!("t{t}"), &i.to_string())],
                            ExpectedVersion::Any,
                        )
                        .unwrap();
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!(stats.events, 640);
    assert!(stats.fsyncs < 640, "no group commit: {stats:?}");
}

#[test]
fn preallocated_zeros_after_the_last_batch_are_not_damage_and_sealed_segments_are_cut_to_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_size_bytes: 256 * 1024,
        ..Options::default()
    };
    let payload = "z".repeat(900);
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), options.clone()).unwrap();
        for _ in 0..400 {
            let e = event("s", &payload);
            ids.push(e.id);
            store.append(vec![e], ExpectedVersion::Any).unwrap();
        }
        // The active segment is zero-filled ahead of the writer in the background.
        let active = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .max()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&active).unwrap().len() < 256 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the segment was not preallocated"
            );
            std::thread::yield_now();
        }
    }
    let report = eventlog::tools::verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events, 400);
    let store = Store::open(dir.path(), options).unwrap();
    assert!(store.open_report().torn_tail.is_none());
    assert_eq!(store.head(), 400);
    for (position, id) in ids.iter().enumerate() {
        assert_eq!(store.get(*id).unwrap().unwrap().position, position as u64);
    }
    // Every sealed segment ends exactly at its last record.
    let stats = store.stats();
    assert!(stats.segments >= 2);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop();
    for sealed in segments {
        let bytes = std::fs::read(&sealed).unwrap();
        assert_ne!(
            bytes.last(),
            Some(&0),
            "{} keeps preallocated zeros",
            sealed.display()
        );
    }
}

#[test]
fn bounded_reads_stop_at_the_byte_budget_but_always_return_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    for _ in 0..10 {
        store
            .append(vec![event("s", &"x".repeat(1000))], ExpectedVersion::Any)
            .unwrap();
    }
    assert_eq!(store.read_all_within(0, 100, 3000).unwrap().len(), 3);
    assert_eq!(store.read_all_within(0, 100, 1).unwrap().len(), 1);
    assert_eq!(store.read_all_within(8, 100, usize::MAX).unwrap().len(), 2);
    let stream = store
        .read_stream_within("s", 2, 100, 2500)
        .unwrap()
        .unwrap();
    assert_eq!(
        stream.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(
        store
            .read_stream_within("s", 0, 100, 0)
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_read_only_log_reader_serves_a_store_that_is_open_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast_options()).unwrap();
    let e = event("s", "{\"ok\":\"🔥\"}");
    store.append(vec![e.clone()], ExpectedVersion::Any).unwrap();
    assert!(matches!(
        eventlog::tools::check_unlocked(dir.path()),
        Err(Error::Locked { .. })
    ));
    let reader = eventlog::tools::LogReader::open(dir.path()).unwrap();
    assert_eq!(reader.len(), 1);
    assert_eq!(reader.read(0, 10).unwrap()[0].data, e.data);
    // The store still works: the reader took no lock and wrote nothing.
    store
        .append(vec![event("s", "2")], ExpectedVersion::Any)
        .unwrap();
    drop(store);
    eventlog::tools::check_unlocked(dir.path()).unwrap();
}
