//! The store-level behaviours every backend must show, written once.
//!
//! A backend's tests run all of them with [`conformance_tests!`](crate::conformance_tests),
//! given an async function that makes a fresh, empty store with [`Limits::default`]
//! (crate::Limits) and a guard that keeps its resources (a temporary directory, a database)
//! alive for the test:
//!
//! ```ignore
//! async fn fresh() -> (MyStore, tempfile::TempDir) { ... }
//! events::conformance_tests!(fresh);
//! ```
//!
//! Each check is a public `async fn(store)` here, and the macro makes one `#[tokio::test]`
//! per check, named as the check, so a failure names the behaviour.

use std::collections::HashSet;

use tokio::spawn;
use uuid::Uuid;

use crate::{
    ContentType, DeleteMode, Error, EventStore, ExpectedVersion, Filter, FilterTarget, ListStreams,
    NewEvent, ReadAll, ReadStream, Start, StreamMetadata,
};

/// One test per check, each on a fresh store from `$fresh` (an `async fn() -> (S, Guard)`).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            an_appended_event_reads_back_byte_exactly,
            binary_data_and_its_content_type_read_back_byte_exactly,
            an_unknown_id_or_stream_reads_as_none,
            a_batch_is_atomic_with_consecutive_positions_and_versions,
            a_repeat_with_identical_content_answers_the_original_placement,
            a_repeat_with_other_content_is_an_id_conflict_and_stores_nothing,
            a_batch_repeating_part_of_an_earlier_one_is_an_id_conflict,
            expected_versions_are_checked_and_a_mismatch_tells_the_current_version,
            malformed_appends_and_appends_over_a_limit_store_nothing,
            the_whole_log_pages_forward_and_backward,
            a_stream_pages_forward_and_backward,
            a_page_stops_at_its_byte_bound_but_holds_one_event,
            a_filtered_read_returns_only_matching_events_and_moves_past_the_rest,
            a_subscription_catches_up_then_follows_live_in_order,
            a_filtered_subscription_delivers_only_matching_events,
            stream_state_and_stats_follow_appends,
            streams_are_listed_in_name_order_with_a_prefix,
            concurrent_appends_get_distinct_gap_free_positions,
            concurrent_reads_by_id_each_answer_their_own_event,
            a_soft_deleted_stream_reads_as_none_and_its_versions_continue,
            a_tombstoned_stream_refuses_reads_appends_and_metadata,
            metadata_hides_dead_events_from_stream_and_all_reads_and_subscriptions,
            invalid_metadata_and_deletes_of_nothing_are_refused,
            events_older_than_max_age_vanish_from_reads,
        );
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, guard) = $fresh().await;
                $crate::conformance::$check(store).await;
                drop(guard);
            }
        )*
    };
}

fn event(stream: &str, event_type: &str, data: &str) -> NewEvent {
    NewEvent::json(stream, event_type, data.as_bytes().to_vec())
}

async fn append_one<S: EventStore>(store: &S, stream: &str, data: &str) -> u64 {
    store
        .append(vec![event(stream, "T", data)], ExpectedVersion::Any)
        .await
        .expect("append")
        .events[0]
        .position
}

/// Data and metadata come back byte for byte, by id, in `$all` and in the stream.
pub async fn an_appended_event_reads_back_byte_exactly<S: EventStore>(store: S) {
    let data = "{\"a\" : \"\\u0000\\n\u{1F525} e\u{301}\", \"cjk\": \"日本語\"}";
    let mut new = event("orders-42", "OrderPlaced", data);
    new.metadata = Some(br#"{"trace":"x"}"#.to_vec());
    let appended = store
        .append(vec![new.clone()], ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert!(!appended.duplicate);
    assert_eq!(
        (appended.events[0].position, appended.events[0].version),
        (0, 0)
    );
    let read = store.get(new.id).await.unwrap().expect("stored");
    assert!(read.same_content(&new));
    assert_eq!((read.id, read.position, read.version), (new.id, 0, 0));
    assert!(read.recorded_at_micros > 1_600_000_000_000_000);
    let page = store.read_all(ReadAll::forward(0, 10)).await.unwrap();
    assert_eq!(page.events, vec![read.clone()]);
    let stream = store
        .read_stream("orders-42", ReadStream::forward(0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.events, vec![read]);
}

/// Bytes that are not JSON (not even UTF-8) are stored as sent, with their content type.
pub async fn binary_data_and_its_content_type_read_back_byte_exactly<S: EventStore>(store: S) {
    let mut binary = event("blobs", "Blob", "");
    binary.data = vec![0, 159, 146, 150, 255, b'{'];
    binary.metadata = Some(vec![0xfe, 0]);
    binary.content_type = ContentType::Binary;
    let json = event("blobs", "Doc", "{}");
    store
        .append(vec![binary.clone(), json.clone()], ExpectedVersion::Any)
        .await
        .unwrap();
    let read = store.get(binary.id).await.unwrap().expect("stored");
    assert!(read.same_content(&binary));
    assert_eq!(read.content_type, ContentType::Binary);
    let page = store.read_all(ReadAll::forward(0, 10)).await.unwrap();
    assert_eq!(page.events[0], read);
    assert_eq!(page.events[1].content_type, ContentType::Json);
    let again = store
        .append(vec![binary], ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(again.duplicate);
}

/// Unknown ids and streams are `None`, not errors.
pub async fn an_unknown_id_or_stream_reads_as_none<S: EventStore>(store: S) {
    assert_eq!(store.get(Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(
        store
            .read_stream("nobody", ReadStream::forward(0, 10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.stream_state("nobody").await.unwrap(), None);
    assert_eq!(store.head().await.unwrap(), 0);
}

/// A batch takes consecutive positions and versions, across streams.
pub async fn a_batch_is_atomic_with_consecutive_positions_and_versions<S: EventStore>(store: S) {
    append_one(&store, "a", "0").await;
    let batch = vec![
        event("a", "T", "1"),
        event("b", "T", "2"),
        event("a", "T", "3"),
    ];
    let appended = store.append(batch, ExpectedVersion::Any).await.unwrap();
    let placed: Vec<_> = appended
        .events
        .iter()
        .map(|p| (p.stream.as_str(), p.version, p.position))
        .collect();
    assert_eq!(placed, vec![("a", 1, 1), ("b", 0, 2), ("a", 2, 3)]);
    assert_eq!(store.head().await.unwrap(), 4);
}

/// Re-appending a stored batch answers where it went, and stores nothing new.
pub async fn a_repeat_with_identical_content_answers_the_original_placement<S: EventStore>(
    store: S,
) {
    let batch = vec![event("s", "T", "1"), event("s", "T", "2")];
    let first = store
        .append(batch.clone(), ExpectedVersion::NoStream)
        .await
        .unwrap();
    append_one(&store, "other", "x").await;
    // The expected version no longer holds, but a repeat is answered before it is checked.
    let again = store
        .append(batch, ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(store.head().await.unwrap(), 3);
}

/// An id stored with other content is a conflict, and nothing of the batch is stored.
pub async fn a_repeat_with_other_content_is_an_id_conflict_and_stores_nothing<S: EventStore>(
    store: S,
) {
    let original = event("s", "T", "1");
    store
        .append(vec![original.clone()], ExpectedVersion::Any)
        .await
        .unwrap();
    let mut changed = original.clone();
    changed.data = b"2".to_vec();
    let fresh = event("s", "T", "3");
    let error = store
        .append(vec![fresh.clone(), changed], ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert_eq!(error, Error::IdConflict { id: original.id });
    assert_eq!(store.get(fresh.id).await.unwrap(), None);
    assert_eq!(store.head().await.unwrap(), 1);
}

/// A batch that is part repeat, part new, is refused whole.
pub async fn a_batch_repeating_part_of_an_earlier_one_is_an_id_conflict<S: EventStore>(store: S) {
    let stored = event("s", "T", "1");
    store
        .append(vec![stored.clone()], ExpectedVersion::Any)
        .await
        .unwrap();
    let error = store
        .append(
            vec![stored.clone(), event("s", "T", "2")],
            ExpectedVersion::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::IdConflict { .. }), "{error:?}");
    assert_eq!(store.head().await.unwrap(), 1);
}

/// `NoStream`, `StreamExists`, `Exact` and `Any`; a mismatch names the current version.
pub async fn expected_versions_are_checked_and_a_mismatch_tells_the_current_version<
    S: EventStore,
>(
    store: S,
) {
    let append = |expected| {
        let store = store.clone();
        async move {
            store
                .append(vec![event("s", "T", "1")], expected)
                .await
                .map(|appended| appended.events[0].version)
        }
    };
    assert_eq!(
        append(ExpectedVersion::StreamExists).await,
        Err(Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::StreamExists,
            current: None
        })
    );
    assert_eq!(
        append(ExpectedVersion::Exact(0)).await,
        Err(Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(0),
            current: None
        })
    );
    assert_eq!(append(ExpectedVersion::NoStream).await, Ok(0));
    assert_eq!(
        append(ExpectedVersion::NoStream).await,
        Err(Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::NoStream,
            current: Some(0)
        })
    );
    assert_eq!(append(ExpectedVersion::Exact(0)).await, Ok(1));
    assert_eq!(
        append(ExpectedVersion::Exact(0)).await,
        Err(Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(0),
            current: Some(1)
        })
    );
    assert_eq!(append(ExpectedVersion::StreamExists).await, Ok(2));
    assert_eq!(append(ExpectedVersion::Any).await, Ok(3));
    assert_eq!(store.head().await.unwrap(), 4);
}

/// Shape and limit checks with the default limits; nothing is stored by any of them.
pub async fn malformed_appends_and_appends_over_a_limit_store_nothing<S: EventStore>(store: S) {
    let invalid = |result: crate::Result<crate::Appended>| {
        assert!(matches!(result, Err(Error::InvalidAppend(_))), "{result:?}")
    };
    invalid(store.append(vec![], ExpectedVersion::Any).await);
    invalid(
        store
            .append(vec![event("", "T", "1")], ExpectedVersion::Any)
            .await,
    );
    invalid(
        store
            .append(vec![event("s", "", "1")], ExpectedVersion::Any)
            .await,
    );
    let twice = event("s", "T", "1");
    invalid(
        store
            .append(vec![twice.clone(), twice], ExpectedVersion::Any)
            .await,
    );
    invalid(
        store
            .append(
                vec![event("a", "T", "1"), event("b", "T", "1")],
                ExpectedVersion::NoStream,
            )
            .await,
    );
    let big = "x".repeat(crate::Limits::default().max_event_size_bytes as usize);
    let result = store
        .append(vec![event("s", "T", &big)], ExpectedVersion::Any)
        .await;
    assert!(
        matches!(
            result,
            Err(Error::LimitExceeded {
                setting: "max_event_size_bytes",
                ..
            })
        ),
        "{result:?}"
    );
    let long = "s".repeat(usize::from(crate::Limits::default().max_stream_name_bytes) + 1);
    let result = store
        .append(vec![event(&long, "T", "1")], ExpectedVersion::Any)
        .await;
    assert!(
        matches!(
            result,
            Err(Error::LimitExceeded {
                setting: "max_stream_name_bytes",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(store.head().await.unwrap(), 0);
}

/// Forward pages chain through `next` to the end; backward pages come newest first.
pub async fn the_whole_log_pages_forward_and_backward<S: EventStore>(store: S) {
    for n in 0..7 {
        append_one(&store, &format!("s{}", n % 2), &n.to_string()).await;
    }
    let mut positions = Vec::new();
    let mut start = 0;
    loop {
        let page = store.read_all(ReadAll::forward(start, 3)).await.unwrap();
        assert_eq!(page.head, 7);
        positions.extend(page.events.iter().map(|e| e.position));
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(positions, (0..7).collect::<Vec<_>>());
    let empty = store.read_all(ReadAll::forward(7, 3)).await.unwrap();
    assert_eq!((empty.events.len(), empty.next), (0, None));

    let page = store
        .read_all(ReadAll::backward(Start::End, 3))
        .await
        .unwrap();
    let read: Vec<_> = page.events.iter().map(|e| e.position).collect();
    assert_eq!((read, page.next), (vec![6, 5, 4], Some(3)));
    let page = store
        .read_all(ReadAll::backward(Start::At(1), 3))
        .await
        .unwrap();
    let read: Vec<_> = page.events.iter().map(|e| e.position).collect();
    assert_eq!((read, page.next), (vec![1, 0], None));
    let page = store
        .read_all(ReadAll::backward(Start::At(100), 1))
        .await
        .unwrap();
    assert_eq!(page.events[0].position, 6);
    assert_eq!(
        store
            .read_all(ReadAll::forward(0, 2))
            .await
            .unwrap()
            .events
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
}

/// Stream pages go by version, both ways; `next` is the version to go on from.
pub async fn a_stream_pages_forward_and_backward<S: EventStore>(store: S) {
    for n in 0..5 {
        append_one(&store, "s", &n.to_string()).await;
        append_one(&store, "noise", "0").await;
    }
    let page = store
        .read_stream("s", ReadStream::forward(1, 2))
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<_> = page.events.iter().map(|e| e.version).collect();
    assert_eq!(
        (versions, page.next, page.last_version),
        (vec![1, 2], Some(3), 4)
    );
    assert_eq!(page.events[0].position, 2);
    let last = store
        .read_stream("s", ReadStream::forward(3, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last.events.len(), last.next), (2, None));
    let past = store
        .read_stream("s", ReadStream::forward(9, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((past.events.len(), past.next), (0, None));
    let back = store
        .read_stream("s", ReadStream::backward(Start::End, 2))
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<_> = back.events.iter().map(|e| e.version).collect();
    assert_eq!((versions, back.next), (vec![4, 3], Some(2)));
    let back = store
        .read_stream("s", ReadStream::backward(Start::At(1), 5))
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<_> = back.events.iter().map(|e| e.version).collect();
    assert_eq!((versions, back.next), (vec![1, 0], None));
}

/// A byte bound cuts a page short (with a `next`), but never to nothing.
pub async fn a_page_stops_at_its_byte_bound_but_holds_one_event<S: EventStore>(store: S) {
    let data = format!("\"{}\"", "x".repeat(1000));
    for _ in 0..4 {
        append_one(&store, "s", &data).await;
    }
    let page = store
        .read_all(ReadAll::forward(0, 10).within(1))
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.next), (1, Some(1)));
    let page = store
        .read_all(ReadAll::forward(0, 10).within(2500))
        .await
        .unwrap();
    assert!((2..4).contains(&page.events.len()), "{}", page.events.len());
    let stream = store
        .read_stream("s", ReadStream::forward(0, 10).within(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stream.events.len(), stream.next), (1, Some(1)));
    let back = store
        .read_all(ReadAll::backward(Start::End, 10).within(1))
        .await
        .unwrap();
    assert_eq!((back.events.len(), back.next), (1, Some(2)));
}

/// Filters by stream prefix and by event-type expression; a page that found nothing still
/// moves on.
pub async fn a_filtered_read_returns_only_matching_events_and_moves_past_the_rest<S: EventStore>(
    store: S,
) {
    for n in 0..6 {
        let (stream, event_type) = if n % 3 == 0 {
            ("order-1", "OrderPlaced")
        } else {
            ("user-1", "UserSeen")
        };
        store
            .append(vec![event(stream, event_type, "1")], ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let filter = Filter::prefixes(FilterTarget::Stream, vec!["order-".into()]).unwrap();
    let page = store
        .read_all(ReadAll::forward(0, 10).filtered(filter.clone()))
        .await
        .unwrap();
    let positions: Vec<_> = page.events.iter().map(|e| e.position).collect();
    assert_eq!((positions, page.next), (vec![0, 3], None));
    let page = store
        .read_all(ReadAll::forward(0, 1).filtered(filter.clone()))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    let next = page.next.expect("more may follow");
    let rest = store
        .read_all(ReadAll::forward(next, 10).filtered(filter.clone()))
        .await
        .unwrap();
    assert_eq!(
        rest.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3]
    );
    let by_type = Filter::regex(FilterTarget::EventType, "^User").unwrap();
    let back = store
        .read_all(ReadAll::backward(Start::End, 2).filtered(by_type))
        .await
        .unwrap();
    let positions: Vec<_> = back.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![5, 4]);
    let none = Filter::prefixes(FilterTarget::Stream, vec!["nothing".into()]).unwrap();
    let page = store
        .read_all(ReadAll::forward(0, 10).filtered(none))
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.next), (0, None));
}

/// Catch up on what is stored, then see new events as they are appended, in order.
pub async fn a_subscription_catches_up_then_follows_live_in_order<S: EventStore>(store: S) {
    for n in 0..3 {
        append_one(&store, "s", &n.to_string()).await;
    }
    let mut subscription = store.subscribe(1, None);
    assert_eq!(subscription.next().await.unwrap().position, 1);
    assert_eq!(subscription.next().await.unwrap().position, 2);
    let writer = {
        let store = store.clone();
        spawn(async move {
            for n in 3..6 {
                append_one(&store, "s", &n.to_string()).await;
            }
        })
    };
    for expected in 3..6 {
        let event = subscription.next().await.unwrap();
        assert_eq!(event.position, expected);
        assert_eq!(event.data, expected.to_string().into_bytes());
    }
    writer.await.unwrap();
}

/// A filtered subscription skips what does not match, live as well as in the catch-up.
pub async fn a_filtered_subscription_delivers_only_matching_events<S: EventStore>(store: S) {
    append_one(&store, "skip", "0").await;
    append_one(&store, "keep-1", "1").await;
    let filter = Filter::prefixes(FilterTarget::Stream, vec!["keep".into()]).unwrap();
    let mut subscription = store.subscribe(0, Some(filter));
    assert_eq!(subscription.next().await.unwrap().position, 1);
    append_one(&store, "skip", "2").await;
    append_one(&store, "keep-2", "3").await;
    assert_eq!(subscription.next().await.unwrap().position, 3);
}

/// Stream state and stats reflect what was appended.
pub async fn stream_state_and_stats_follow_appends<S: EventStore>(store: S) {
    append_one(&store, "a", "0").await;
    append_one(&store, "b", "1").await;
    let last = append_one(&store, "a", "2").await;
    let state = store.stream_state("a").await.unwrap().unwrap();
    assert_eq!(
        (
            state.stream.as_str(),
            state.version,
            state.first_version,
            state.events,
            state.last_position
        ),
        ("a", 1, 0, 2, last)
    );
    assert!(state.updated_at_micros > 1_600_000_000_000_000);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.head, stats.streams, stats.writable), (3, 2, true));
}

/// Streams in byte order of name, by prefix, paged with `after`. A backend without a
/// listing yet answers [`Error::Unsupported`], which this check accepts.
pub async fn streams_are_listed_in_name_order_with_a_prefix<S: EventStore>(store: S) {
    for stream in ["order-2", "user-1", "order-1", "order-3", "order-2"] {
        append_one(&store, stream, "1").await;
    }
    let request = ListStreams {
        prefix: Some("order-".into()),
        after: None,
        limit: 2,
    };
    let list = match store.list_streams(request).await {
        Err(Error::Unsupported { .. }) => return,
        other => other.unwrap(),
    };
    let names: Vec<_> = list.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(
        (names, list.next.as_deref()),
        (vec!["order-1", "order-2"], Some("order-2"))
    );
    assert_eq!(list.streams[1].events, 2);
    let rest = store
        .list_streams(ListStreams {
            prefix: Some("order-".into()),
            after: list.next,
            limit: 2,
        })
        .await
        .unwrap();
    let names: Vec<_> = rest.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!((names, rest.next), (vec!["order-3"], None));
}

/// Many appenders at once: every acknowledged event has its own position, with no gaps, and
/// `$all` in position order holds each exactly once.
pub async fn concurrent_appends_get_distinct_gap_free_positions<S: EventStore>(store: S) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            spawn(async move {
                let mut positions = Vec::new();
                for n in 0..EACH {
                    let stream = format!("w{writer}");
                    let appended = store
                        .append(
                            vec![event(&stream, "T", &n.to_string())],
                            ExpectedVersion::Any,
                        )
                        .await
                        .unwrap();
                    assert_eq!(appended.events[0].version, n as u64);
                    positions.push(appended.events[0].position);
                }
                positions
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for writer in writers {
        for position in writer.await.unwrap() {
            assert!(
                acknowledged.insert(position),
                "position {position} given twice"
            );
        }
    }
    let total = (WRITERS * EACH) as u64;
    assert_eq!(acknowledged, (0..total).collect::<HashSet<_>>());
    let page = store
        .read_all(ReadAll::forward(0, WRITERS * EACH))
        .await
        .unwrap();
    let positions: Vec<_> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (0..total).collect::<Vec<_>>());
}

/// Many reads by id at once (the same id several times, unknown ids, events of a deleted
/// stream) each answer exactly their own event, and a read asked after an append was
/// acknowledged sees it while other reads are in flight (a backend may group concurrent
/// reads into one query: the grouping must not change an answer).
pub async fn concurrent_reads_by_id_each_answer_their_own_event<S: EventStore>(store: S) {
    const EVENTS: usize = 40;
    const READERS: usize = 16;
    const READS_EACH: usize = 30;
    let mut stored = Vec::new();
    for n in 0..EVENTS {
        let new = event(&format!("r{}", n % 4), "T", &format!("{{\"n\":{n}}}"));
        store
            .append(vec![new.clone()], ExpectedVersion::Any)
            .await
            .unwrap();
        stored.push(new);
    }
    store
        .delete_stream("r3", ExpectedVersion::Any, DeleteMode::Soft)
        .await
        .unwrap();
    let expected = |n: usize| -> Option<NewEvent> {
        match n % (EVENTS + 5) {
            i if i >= EVENTS => None,
            i if i % 4 == 3 => None,
            i => Some(stored[i].clone()),
        }
    };
    let unknown: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let id_of = |n: usize| match n % (EVENTS + 5) {
        i if i >= EVENTS => unknown[i - EVENTS],
        i => stored[i].id,
    };
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let store = store.clone();
            let reads: Vec<_> = (0..READS_EACH)
                .map(|k| {
                    // Readers start at different events and stride across them, so every
                    // group holds a mix (and some ids twice).
                    let n = reader * 7 + k * (reader + 1);
                    (id_of(n), expected(n))
                })
                .collect();
            spawn(async move {
                for (id, want) in reads {
                    let got = store.get(id).await.unwrap();
                    match (&got, &want) {
                        (Some(got), Some(want)) => {
                            assert!(got.same_content(want), "{id} answered {got:?}")
                        }
                        (None, None) => {}
                        _ => panic!("{id}: expected {want:?}, answered {got:?}"),
                    }
                }
            })
        })
        .collect();
    let writer = {
        let store = store.clone();
        spawn(async move {
            for n in 0..READS_EACH {
                let new = event("w", "T", &n.to_string());
                store
                    .append(vec![new.clone()], ExpectedVersion::Any)
                    .await
                    .unwrap();
                let read = store.get(new.id).await.unwrap();
                assert!(
                    read.is_some_and(|read| read.same_content(&new)),
                    "an acknowledged append is not read back at once"
                );
            }
        })
    };
    for reader in readers {
        reader.await.unwrap();
    }
    writer.await.unwrap();
}

fn stream_positions(events: &[crate::RecordedEvent], stream: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.version)
        .collect()
}

/// A soft delete hides the stream (reads, state, listing, `$all`); appending again recreates
/// it and its versions continue after the last one it had.
pub async fn a_soft_deleted_stream_reads_as_none_and_its_versions_continue<S: EventStore>(
    store: S,
) {
    for n in 0..3 {
        append_one(&store, "gone", &n.to_string()).await;
    }
    append_one(&store, "kept", "0").await;
    let mismatch = store
        .delete_stream("gone", ExpectedVersion::Exact(1), DeleteMode::Soft)
        .await;
    assert!(
        matches!(
            mismatch,
            Err(Error::WrongExpectedVersion {
                current: Some(2),
                ..
            })
        ),
        "{mismatch:?}"
    );
    store
        .delete_stream("gone", ExpectedVersion::Exact(2), DeleteMode::Soft)
        .await
        .unwrap();
    assert_eq!(
        store
            .read_stream("gone", ReadStream::forward(0, 10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.stream_state("gone").await.unwrap(), None);
    let all = store.read_all(ReadAll::forward(0, 100)).await.unwrap();
    assert!(stream_positions(&all.events, "gone").is_empty());
    let back = store
        .read_all(ReadAll::backward(Start::End, 100))
        .await
        .unwrap();
    assert!(stream_positions(&back.events, "gone").is_empty());
    let listed = store
        .list_streams(ListStreams {
            limit: 10,
            ..ListStreams::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = listed.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(names, vec!["kept"]);

    let appended = store
        .append(vec![event("gone", "T", "3")], ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(appended.events[0].version, 3);
    let page = store
        .read_stream("gone", ReadStream::forward(0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream_positions(&page.events, "gone"), vec![3]);
    let state = store.stream_state("gone").await.unwrap().unwrap();
    assert_eq!(
        (state.version, state.first_version, state.events),
        (3, 3, 1)
    );
}

/// A tombstone is final: reads, appends, metadata and deletes answer
/// [`Error::StreamDeleted`], and the stream's events are gone from `$all`.
pub async fn a_tombstoned_stream_refuses_reads_appends_and_metadata<S: EventStore>(store: S) {
    append_one(&store, "dead", "0").await;
    append_one(&store, "dead", "1").await;
    store
        .delete_stream("dead", ExpectedVersion::Any, DeleteMode::Hard)
        .await
        .unwrap();
    let deleted = |result: &Result<_, Error>| matches!(result, Err(Error::StreamDeleted { .. }));
    assert!(deleted(
        &store
            .read_stream("dead", ReadStream::forward(0, 10))
            .await
            .map(|_| ())
    ));
    assert!(deleted(&store.stream_state("dead").await.map(|_| ())));
    assert!(deleted(&store.stream_metadata("dead").await.map(|_| ())));
    assert!(deleted(
        &store
            .append(vec![event("dead", "T", "2")], ExpectedVersion::Any)
            .await
            .map(|_| ())
    ));
    assert!(deleted(
        &store
            .set_stream_metadata("dead", ExpectedVersion::Any, StreamMetadata::default())
            .await
            .map(|_| ())
    ));
    assert!(deleted(
        &store
            .delete_stream("dead", ExpectedVersion::Any, DeleteMode::Soft)
            .await
    ));
    let all = store.read_all(ReadAll::forward(0, 100)).await.unwrap();
    assert!(stream_positions(&all.events, "dead").is_empty());
}

/// `max_count` and `truncate_before` hide events at once from stream reads (both ways),
/// `$all` (both ways) and new subscriptions; `$all` then has holes.
pub async fn metadata_hides_dead_events_from_stream_and_all_reads_and_subscriptions<
    S: EventStore,
>(
    store: S,
) {
    for n in 0..5 {
        append_one(&store, "s", &n.to_string()).await;
    }
    append_one(&store, "other", "x").await;
    let metadata = StreamMetadata {
        max_count: Some(2),
        custom: Some(br#"{"owner":"ops"}"#.to_vec()),
        ..StreamMetadata::default()
    };
    let placed = store
        .set_stream_metadata("s", ExpectedVersion::NoStream, metadata.clone())
        .await
        .unwrap();
    // The record is the metastream's first event, after the six appended.
    assert_eq!((placed.stream.as_str(), placed.version), ("$$s", 0));
    assert_eq!(placed.position, 6);
    let read = store.stream_metadata("s").await.unwrap().unwrap();
    assert_eq!(read, metadata);
    let forward = store
        .read_stream("s", ReadStream::forward(0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream_positions(&forward.events, "s"), vec![3, 4]);
    let backward = store
        .read_stream("s", ReadStream::backward(Start::End, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream_positions(&backward.events, "s"), vec![4, 3]);
    assert_eq!(backward.next, None);
    let all = store.read_all(ReadAll::forward(0, 100)).await.unwrap();
    assert_eq!(stream_positions(&all.events, "s"), vec![3, 4]);
    let positions: Vec<_> = all.events.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(positions[0], 3, "positions 0..3 are holes now");
    let back = store
        .read_all(ReadAll::backward(Start::End, 100))
        .await
        .unwrap();
    assert_eq!(stream_positions(&back.events, "s"), vec![4, 3]);
    let mut subscription = store.subscribe(0, None);
    assert_eq!(subscription.next().await.unwrap().position, 3);
    let state = store.stream_state("s").await.unwrap().unwrap();
    assert_eq!(
        (state.version, state.first_version, state.events),
        (4, 3, 2)
    );

    // A second write replaces the first (metadata version 0 now).
    let stale = store
        .set_stream_metadata("s", ExpectedVersion::NoStream, StreamMetadata::default())
        .await;
    assert!(
        matches!(stale, Err(Error::WrongExpectedVersion { .. })),
        "{stale:?}"
    );
    let truncate = StreamMetadata {
        truncate_before: Some(1),
        ..StreamMetadata::default()
    };
    let placed = store
        .set_stream_metadata("s", ExpectedVersion::Exact(0), truncate)
        .await
        .unwrap();
    assert_eq!((placed.stream.as_str(), placed.version), ("$$s", 1));
    let forward = store
        .read_stream("s", ReadStream::forward(0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream_positions(&forward.events, "s"), vec![1, 2, 3, 4]);
}

/// Invalid metadata stores nothing; deleting a stream that has no events is "not found";
/// appending to a metastream directly is refused.
pub async fn invalid_metadata_and_deletes_of_nothing_are_refused<S: EventStore>(store: S) {
    append_one(&store, "s", "0").await;
    let invalid = StreamMetadata {
        max_count: Some(0),
        ..StreamMetadata::default()
    };
    let result = store
        .set_stream_metadata("s", ExpectedVersion::Any, invalid)
        .await;
    assert!(
        matches!(result, Err(Error::InvalidMetadata(_))),
        "{result:?}"
    );
    assert_eq!(
        store.stream_metadata("s").await.unwrap(),
        Some(StreamMetadata::default())
    );
    assert_eq!(store.stream_metadata("nothing").await.unwrap(), None);
    for mode in [DeleteMode::Soft, DeleteMode::Hard] {
        let result = store
            .delete_stream("nothing", ExpectedVersion::Any, mode)
            .await;
        assert!(
            matches!(result, Err(Error::StreamNotFound { .. })),
            "{result:?}"
        );
    }
    let result = store
        .append(vec![event("$$s", "$metadata", "{}")], ExpectedVersion::Any)
        .await;
    assert!(matches!(result, Err(Error::InvalidAppend(_))), "{result:?}");
    assert_eq!(store.head().await.unwrap(), 1);
}

/// `max_age_seconds` hides events once they are older, without any write: the check awaits
/// the condition (at most 30 s) instead of sleeping a fixed time.
pub async fn events_older_than_max_age_vanish_from_reads<S: EventStore>(store: S) {
    append_one(&store, "aged", "0").await;
    let metadata = StreamMetadata {
        max_age_seconds: Some(1),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata("aged", ExpectedVersion::Any, metadata)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = store
            .read_stream("aged", ReadStream::forward(0, 10))
            .await
            .unwrap()
            .expect("an expired stream still exists");
        if page.events.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the event never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let all = store.read_all(ReadAll::forward(0, 100)).await.unwrap();
    assert!(stream_positions(&all.events, "aged").is_empty());
    let state = store.stream_state("aged").await.unwrap().unwrap();
    assert_eq!(
        (state.version, state.events, state.first_version),
        (0, 0, 1)
    );
}
