//! A model test: random sequences of appends (single, batch, with expected versions),
//! idempotent repeats, conflicting repeats, reads and reopens, checked against a plain
//! in-memory model of what the log must hold.

mod common;

use eventlog::{Error, ExpectedVersion, NewEvent, Options, Store};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    Current,
    Wrong,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        count: u8,
        expect: Expect,
        data_len: u16,
    },
    Repeat {
        pick: usize,
    },
    Conflict {
        pick: usize,
    },
    Get {
        pick: usize,
    },
    ReadAll {
        from: u64,
        limit: usize,
    },
    ReadStream {
        stream: u8,
        from: u64,
        limit: usize,
    },
    Reopen {
        drop_checkpoint: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        3 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        2 => Just(Expect::Current),
        1 => Just(Expect::Wrong),
    ];
    prop_oneof![
        8 => (0u8..4, 1u8..4, expect, 0u16..700).prop_map(|(stream, count, expect, data_len)| Op::Append { stream, count, expect, data_len }),
        1 => any::<usize>().prop_map(|pick| Op::Repeat { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Conflict { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Get { pick }),
        1 => (0u64..60, 1usize..30).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
        1 => (0u8..4, 0u64..20, 1usize..10).prop_map(|(stream, from, limit)| Op::ReadStream { stream, from, limit }),
        1 => any::<bool>().prop_map(|drop_checkpoint| Op::Reopen { drop_checkpoint }),
    ]
}

/// What the log must hold: events in position order with their versions.
#[derive(Default)]
struct Model {
    events: Vec<(NewEvent, u64)>,
}

impl Model {
    fn stream_len(&self, stream: &str) -> u64 {
        self.events
            .iter()
            .filter(|(e, _)| e.stream == stream)
            .count() as u64
    }
}

fn options() -> Options {
    Options {
        segment_size_bytes: 2048,
        checkpoint_every_events: 7,
        ..common::fast_options()
    }
}

fn check_event(store: &Store, model: &Model, position: usize) {
    let (expected, version) = &model.events[position];
    let got = store
        .get(expected.id)
        .unwrap()
        .expect("modelled event missing");
    assert_eq!(got.position, position as u64);
    assert_eq!(got.version, *version);
    assert_eq!(got.stream, expected.stream);
    assert_eq!(got.data, expected.data);
    assert_eq!(got.metadata, expected.metadata);
}

fn run(ops: Vec<Op>) {
    let dir = common::scratch_dir();
    let mut store = Store::open(dir.path(), options()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                stream,
                count,
                expect,
                data_len,
            } => {
                let stream = format!("s{stream}");
                let current = model.stream_len(&stream).checked_sub(1);
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::Current => {
                        current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
                    }
                    Expect::Wrong => ExpectedVersion::Exact(current.map_or(0, |c| c + 1)),
                };
                let batch: Vec<NewEvent> = (0..count)
                    .map(|i| NewEvent {
                        id: Uuid::new_v4(),
                        stream: stream.clone(),
                        event_type: "T".into(),
                        data: format!("\"{}🔥{i}\"", "d".repeat(data_len as usize)).into_bytes(),
                        metadata: (i % 2 == 0).then(|| b"{\"m\":1}".to_vec()),
                        binary: false,
                    })
                    .collect();
                let should_pass = match expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => current.is_none(),
                    ExpectedVersion::Exact(v) => current == Some(v),
                };
                match store.append(batch.clone(), expected) {
                    Ok(appended) => {
                        assert!(should_pass, "append should have failed the version check");
                        assert!(!appended.duplicate);
                        for (event, placed) in batch.into_iter().zip(appended.events) {
                            assert_eq!(placed.position, model.events.len() as u64);
                            let version = model.stream_len(&event.stream);
                            assert_eq!(placed.version, version);
                            model.events.push((event, version));
                        }
                    }
                    Err(Error::WrongExpectedVersion {
                        current: reported, ..
                    }) => {
                        assert!(!should_pass, "append failed the version check wrongly");
                        assert_eq!(reported, current);
                    }
                    Err(other) => panic!("unexpected append error: {other}"),
                }
            }
            Op::Repeat { pick } if !model.events.is_empty() => {
                let position = pick % model.events.len();
                let (event, version) = model.events[position].clone();
                let appended = store.append(vec![event], ExpectedVersion::Any).unwrap();
                assert!(appended.duplicate);
                assert_eq!(appended.events[0].position, position as u64);
                assert_eq!(appended.events[0].version, version);
            }
            Op::Conflict { pick } if !model.events.is_empty() => {
                let position = pick % model.events.len();
                let mut event = model.events[position].0.clone();
                event.data.extend_from_slice(b" ");
                assert!(matches!(
                    store.append(vec![event], ExpectedVersion::Any),
                    Err(Error::IdConflict { .. })
                ));
            }
            Op::Get { pick } if !model.events.is_empty() => {
                check_event(&store, &model, pick % model.events.len());
            }
            Op::ReadAll { from, limit } => {
                let got = store.read_all(from, limit).unwrap();
                let expected: Vec<_> = model
                    .events
                    .iter()
                    .skip(from as usize)
                    .take(limit)
                    .collect();
                assert_eq!(got.len(), expected.len());
                for (got, (event, _)) in got.iter().zip(expected) {
                    assert_eq!(got.id, event.id);
                    assert_eq!(got.data, event.data);
                }
            }
            Op::ReadStream {
                stream,
                from,
                limit,
            } => {
                let stream = format!("s{stream}");
                let expected: Vec<_> = model
                    .events
                    .iter()
                    .filter(|(e, _)| e.stream == stream)
                    .collect();
                match store.read_stream(&stream, from, limit).unwrap() {
                    None => assert!(expected.is_empty()),
                    Some(got) => {
                        let expected: Vec<_> = expected
                            .into_iter()
                            .skip(from as usize)
                            .take(limit)
                            .collect();
                        assert_eq!(got.len(), expected.len());
                        for (got, (event, version)) in got.iter().zip(expected) {
                            assert_eq!((got.id, got.version), (event.id, *version));
                        }
                    }
                }
            }
            Op::Reopen { drop_checkpoint } => {
                drop(store);
                if drop_checkpoint {
                    std::fs::remove_file(dir.path().join(eventlog::CHECKPOINT_FILE)).ok();
                }
                store = Store::open(dir.path(), options()).unwrap();
                assert!(store.open_report().torn_tail.is_none());
            }
            _ => {}
        }
        assert_eq!(store.head(), model.events.len() as u64);
    }
    for position in 0..model.events.len() {
        check_event(&store, &model, position);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
