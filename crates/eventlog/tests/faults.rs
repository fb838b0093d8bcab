//! Deterministic fault simulation: the engine runs on a simulated disk ([`SimFs`]) through
//! thousands of seeded random schedules of appends, reads, checkpoints, injected faults
//! (failing fsync, ENOSPC and EIO on write, short writes) and power cuts that lose or tear
//! everything unsynced. After every recovery: every acknowledged event is present byte-exactly
//! at its acknowledged position, nothing unacknowledged is half-visible (batches are whole),
//! nothing is invented, positions are gap-free, and opening with the checkpoint gives the same
//! index as a full replay.
//!
//! `FAULT_SCHEDULES=20000 cargo test -p eventlog --release --test faults` runs more;
//! `FAULT_SEED=<n>` replays one schedule (the seed is printed when a schedule fails).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use eventlog::sim::{EIO, ENOSPC, Faults, SimFs};
use eventlog::vfs::Vfs;
use eventlog::{Error, ExpectedVersion, NewEvent, Options, Store};
use uuid::Uuid;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: good spread from consecutive seeds.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn options(fs: &SimFs) -> Options {
    Options {
        storage: Arc::new(fs.clone()),
        segment_size_bytes: eventlog::MIN_SEGMENT_SIZE_BYTES,
        checkpoint_every_events: 0,
        // The preallocation thread's timing would make schedules depend on more than the seed.
        preallocate: false,
        ..Options::default()
    }
}

const DIR: &str = "/sim/store";

struct Schedule {
    fs: SimFs,
    rng: Rng,
    store: Option<Store>,
    /// Acknowledged events by position.
    acked: HashMap<u64, NewEvent>,
    /// Batches whose append failed: they may or may not be in the log, but only whole.
    unknown: HashMap<Uuid, Vec<Uuid>>,
    unknown_events: HashMap<Uuid, NewEvent>,
    stopped: bool,
    recoveries: u64,
}

impl Schedule {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    fn event(&mut self) -> NewEvent {
        let id = Uuid::from_u128(u128::from(self.rng.next()) << 64 | u128::from(self.rng.next()));
        let len = self.rng.below(160) as usize;
        NewEvent {
            id,
            stream: format!("s{}", self.rng.below(3)),
            event_type: "Sim".into(),
            data: format!("{{\"t\":\"{}🔥\\n\"}}", "火".repeat(len / 3)).into_bytes(),
            metadata: (self.rng.below(2) == 0).then(|| b"{\"m\":true}".to_vec()),
        }
    }

    fn append(&mut self) {
        let batch: Vec<NewEvent> = (0..1 + self.rng.below(3)).map(|_| self.event()).collect();
        match self.store().append(batch.clone(), ExpectedVersion::Any) {
            Ok(appended) => {
                assert!(
                    !self.stopped,
                    "an append succeeded after the writer stopped"
                );
                for (event, placed) in batch.into_iter().zip(appended.events) {
                    assert_eq!(placed.id, event.id);
                    assert!(
                        self.acked.insert(placed.position, event).is_none(),
                        "position {} acknowledged twice",
                        placed.position
                    );
                }
            }
            Err(error) => {
                match error {
                    Error::WriteFailed { .. } => assert!(!self.stopped),
                    Error::WriterStopped => {
                        self.stopped = true;
                        assert!(!self.store().is_writable());
                    }
                    other => panic!("unexpected append error: {other}"),
                }
                let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
                for event in batch {
                    self.unknown.insert(event.id, ids.clone());
                    self.unknown_events.insert(event.id, event);
                }
            }
        }
    }

    fn read_check(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let positions: Vec<u64> = self.acked.keys().copied().collect();
        let position = positions[self.rng.below(positions.len() as u64) as usize];
        let expected = &self.acked[&position];
        let got = self
            .store()
            .get(expected.id)
            .unwrap()
            .expect("acknowledged event readable");
        assert_eq!(got.position, position);
        assert_eq!(got.data, expected.data);
    }

    fn inject(&mut self) {
        let faults = match self.rng.below(5) {
            0 => Faults {
                fail_next_sync: true,
                ..Faults::default()
            },
            1 => Faults {
                fail_writes: Some((ENOSPC, 1 + self.rng.below(3) as u32)),
                ..Faults::default()
            },
            2 => Faults {
                fail_writes: Some((EIO, 1)),
                ..Faults::default()
            },
            3 => Faults {
                short_next_write: Some(self.rng.below(300) as usize),
                ..Faults::default()
            },
            _ => Faults {
                short_next_write: Some(self.rng.below(300) as usize),
                fail_writes: Some((ENOSPC, 1)),
                ..Faults::default()
            },
        };
        self.fs.inject(faults);
    }

    fn reopen(&mut self, power_cut: bool) {
        drop(self.store.take());
        if power_cut {
            let seed = self.rng.next();
            self.fs.power_cut(seed);
        }
        self.fs.inject(Faults::default());
        self.stopped = false;
        self.recoveries += 1;
        let store = Store::open(DIR, options(&self.fs))
            .unwrap_or_else(|e| panic!("open after recovery failed: {e}"));
        self.verify(&store);
        self.store = Some(store);
    }

    /// The invariants every recovery must keep.
    fn verify(&mut self, store: &Store) {
        let head = store.head();
        let all = store.read_all(0, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, head, "read_all does not cover the head");
        for (position, event) in all.iter().enumerate() {
            assert_eq!(event.position, position as u64, "positions have a gap");
        }
        for (position, expected) in &self.acked {
            let got = all
                .get(*position as usize)
                .unwrap_or_else(|| panic!("acknowledged position {position} lost"));
            assert_eq!(got.id, expected.id, "acknowledged event moved or lost");
            assert_eq!(got.data, expected.data);
            assert_eq!(got.metadata, expected.metadata);
            assert_eq!(got.stream, expected.stream);
        }
        let mut at = 0usize;
        while at < all.len() {
            let event = &all[at];
            if self
                .acked
                .get(&(at as u64))
                .is_some_and(|e| e.id == event.id)
            {
                at += 1;
                continue;
            }
            let batch = self
                .unknown
                .get(&event.id)
                .unwrap_or_else(|| panic!("position {at} holds an event nobody appended"))
                .clone();
            for (offset, id) in batch.iter().enumerate() {
                let present = all.get(at + offset).map(|e| e.id);
                assert_eq!(present, Some(*id), "a failed batch is half-visible");
                assert_eq!(all[at + offset].data, self.unknown_events[id].data);
            }
            // Present now, and durable once anything after it is acknowledged: from here on it
            // is part of the log like an acknowledged event.
            for (offset, id) in batch.iter().enumerate() {
                let event = self.unknown_events.remove(id).expect("unknown event");
                self.unknown.remove(id);
                self.acked.insert((at + offset) as u64, event);
            }
            at += batch.len();
        }
        // A checkpoint must never disagree with the log: a full replay of the same disk gives
        // the same index.
        let copy = self.fs.duplicate();
        let _ = copy.remove(&Path::new(DIR).join(eventlog::CHECKPOINT_FILE));
        let replayed = Store::open(DIR, options(&copy)).unwrap();
        assert_eq!(replayed.open_report().checkpoint_events, 0);
        assert_eq!(
            replayed.read_all(0, usize::MAX).unwrap(),
            all,
            "checkpoint and log disagree"
        );
        for stream in ["s0", "s1", "s2"] {
            assert_eq!(
                replayed.stream_version(stream),
                store.stream_version(stream)
            );
        }
    }
}

fn run_schedule(seed: u64) -> (u64, u64) {
    let fs = SimFs::new();
    let mut schedule = Schedule {
        fs: fs.clone(),
        rng: Rng(seed),
        store: Some(Store::open(DIR, options(&fs)).unwrap()),
        acked: HashMap::new(),
        unknown: HashMap::new(),
        unknown_events: HashMap::new(),
        stopped: false,
        recoveries: 0,
    };
    let steps = 20 + schedule.rng.below(40);
    for _ in 0..steps {
        match schedule.rng.below(100) {
            0..=49 => schedule.append(),
            50..=59 => schedule.read_check(),
            60..=71 => schedule.inject(),
            72..=77 => {
                let _ = schedule.store().checkpoint();
            }
            78..=89 => schedule.reopen(true),
            _ => schedule.reopen(false),
        }
        if schedule.stopped && schedule.rng.below(2) == 0 {
            // Reads keep working while the writer is stopped; then restart the process.
            schedule.read_check();
            schedule.reopen(false);
        }
    }
    schedule.reopen(true);
    (schedule.recoveries, schedule.acked.len() as u64)
}

#[test]
fn thousands_of_seeded_fault_schedules_keep_every_acknowledged_event() {
    if let Some(seed) = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_schedule(seed);
        return;
    }
    let schedules: u64 = std::env::var("FAULT_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut recoveries = 0;
    let mut events = 0;
    for seed in 0..schedules {
        let outcome = std::panic::catch_unwind(|| run_schedule(seed));
        match outcome {
            Ok((r, e)) => {
                recoveries += r;
                events += e;
            }
            Err(_) => panic!("fault schedule failed; replay it with FAULT_SEED={seed}"),
        }
    }
    eprintln!("{schedules} fault schedules: {recoveries} recoveries, {events} events kept");
    assert!(recoveries >= schedules);
}
