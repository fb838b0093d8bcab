//! One test per failure-path defect of issue 9, each on the simulated disk (`SimFs`), which can
//! fail any call, persist any part of what was not fsynced, and hold calls at a gate. Each test
//! fails when its fix is taken out of the engine (see `docs/TESTING.md`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use eventlog::sim::{EIO, EMFILE, ENOSPC, FailCalls, Faults, SimFs};
use eventlog::vfs::{FileHandle, LockError, Vfs, VfsFile, write_all_at};
use eventlog::{Durability, Error, ExpectedVersion, NewEvent, Options, Store};

const DIR: &str = "/sim/store";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// A simulated disk whose store directory already exists durably (only the test of the
/// directory's own durability starts without one).
fn disk() -> SimFs {
    disk_seeded(1)
}

fn disk_seeded(seed: u64) -> SimFs {
    let fs = SimFs::seeded(seed);
    fs.create_dir_all(dir()).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs.sync_dir(Path::new("/sim")).unwrap();
    fs
}

fn options(fs: &SimFs) -> Options {
    Options {
        storage: Arc::new(fs.clone()),
        segment_size_bytes: eventlog::MIN_SEGMENT_SIZE_BYTES,
        checkpoint_every_events: 0,
        checkpoint_every_seconds: 0,
        ..Options::default()
    }
}

fn sized(data_bytes: usize) -> NewEvent {
    common::event("s", &format!("\"{}\"", "x".repeat(data_bytes)))
}

fn append(store: &Store, event: &NewEvent) -> eventlog::Result<u64> {
    store
        .append(vec![event.clone()], ExpectedVersion::Any)
        .map(|a| a.events[0].position)
}

fn segments(fs: &SimFs) -> Vec<String> {
    let mut names: Vec<String> = fs
        .list(dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

fn assert_holds(store: &Store, events: &[NewEvent]) {
    let all = store.read_all(0, usize::MAX).unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.id).collect();
    let expected: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, expected);
}

// Defect 1: a failed roll poisoned the store.
#[test]
fn a_roll_that_fails_at_any_step_leaves_no_file_and_appends_resume_once_descriptors_return() {
    let fs = disk();
    let store = Store::open(DIR, options(&fs)).unwrap();
    let mut kept = vec![sized(300), sized(300)];
    for event in &kept {
        append(&store, event).unwrap();
    }
    // The next event needs a new segment. Fail the roll at each step that needs a descriptor:
    // creating the file, fsyncing the directory, opening the preallocator's handle.
    for step in 0..3 {
        fs.inject(Faults {
            fail_calls: Some(FailCalls {
                code: EMFILE,
                skip: step,
                count: 1,
            }),
            ..Faults::default()
        });
        let error = append(&store, &sized(300)).unwrap_err();
        assert!(
            matches!(error, Error::WriteFailed { .. }),
            "step {step}: {error}"
        );
        assert_eq!(fs.failed_calls(), u64::from(step) + 1);
        assert!(store.is_writable(), "a descriptor limit is transient");
        assert_eq!(segments(&fs).len(), 1, "step {step} left a file behind");
    }
    fs.inject(Faults::default());
    let rolled = sized(300);
    assert_eq!(append(&store, &rolled).unwrap(), 2);
    kept.push(rolled);
    assert_eq!(segments(&fs).len(), 2);
    drop(store);
    fs.power_cut_losing_everything_unsynced();
    let store = Store::open(DIR, options(&fs)).unwrap();
    assert_holds(&store, &kept);
}

// Defect 1, second form: small appends went on past the stale file's name.
#[test]
fn appends_that_fit_after_a_failed_roll_do_not_strand_a_segment_that_breaks_the_next_open() {
    let fs = disk();
    let store = Store::open(DIR, options(&fs)).unwrap();
    let mut kept = vec![sized(300), sized(300)];
    for event in &kept {
        append(&store, event).unwrap();
    }
    fs.inject(Faults {
        fail_calls: Some(FailCalls {
            code: EMFILE,
            skip: 1, // the directory fsync, after the file was created
            count: 1,
        }),
        ..Faults::default()
    });
    assert!(append(&store, &sized(300)).is_err());
    for _ in 0..2 {
        let small = sized(1);
        append(&store, &small).unwrap();
        kept.push(small);
    }
    for _ in 0..3 {
        let big = sized(300);
        append(&store, &big).unwrap();
        kept.push(big);
    }
    drop(store);
    let store = Store::open(DIR, options(&fs)).expect("the log opens");
    assert_holds(&store, &kept);
}

/// Appends `queued` while the writer is held inside the commit of `first`, so that they form
/// one group commit; returns every outcome in order.
fn grouped(
    fs: &SimFs,
    store: &Store,
    first: NewEvent,
    queued: Vec<NewEvent>,
    faults: Faults,
) -> Vec<eventlog::Result<u64>> {
    let mut answers = Vec::new();
    fs.hold();
    for (number, event) in std::iter::once(first).chain(queued).enumerate() {
        let (sender, receiver) = mpsc::channel();
        store.submit(vec![event], ExpectedVersion::Any, move |result| {
            let _ = sender.send(result.map(|a| a.events[0].position));
        });
        if number == 0 {
            assert!(fs.wait_until_held(Duration::from_secs(10)));
        }
        answers.push(receiver);
    }
    fs.inject(faults);
    fs.release();
    answers
        .into_iter()
        .map(|r| r.recv().unwrap_or(Err(Error::Closed)))
        .collect()
}

// Defect 2: an append acknowledged after the writer stopped.
#[test]
fn after_the_fsync_before_a_roll_fails_the_append_that_needed_the_roll_is_not_acknowledged() {
    let fs = disk();
    let store = Store::open(
        DIR,
        Options {
            preallocate: false,
            ..options(&fs)
        },
    )
    .unwrap();
    append(&store, &sized(10)).unwrap();
    // The first append's write and fsync go through; the group after it holds a small
    // append and one that needs a new segment, and the fsync of the small one fails.
    let outcomes = grouped(
        &fs,
        &store,
        sized(10),
        vec![sized(10), sized(700)],
        Faults {
            fail_calls: Some(FailCalls {
                code: EIO,
                skip: 3,
                count: 1,
            }),
            ..Faults::default()
        },
    );
    assert!(outcomes[0].is_ok());
    assert!(matches!(outcomes[1], Err(Error::WriterStopped)));
    assert!(
        matches!(outcomes[2], Err(Error::WriterStopped)),
        "acknowledged after a failed fsync: {:?}",
        outcomes[2]
    );
    assert!(!store.is_writable());
}

// Defect 3: a failed write's cut was not durable before the segment was sealed.
#[test]
fn a_write_that_lands_partly_then_fails_never_reappears_inside_a_sealed_segment() {
    for seed in 0..64 {
        let fs = disk_seeded(seed);
        let options = Options {
            preallocate: false,
            ..options(&fs)
        };
        let store = Store::open(DIR, options.clone()).unwrap();
        let first = sized(10);
        append(&store, &first).unwrap();
        fs.inject(Faults {
            short_next_write: Some(40),
            fail_writes: Some((ENOSPC, 1)),
            ..Faults::default()
        });
        assert!(matches!(
            append(&store, &sized(10)),
            Err(Error::WriteFailed { .. })
        ));
        let rolled = sized(900);
        append(&store, &rolled).unwrap();
        assert_eq!(segments(&fs).len(), 2);
        drop(store);
        // A full replay (a checkpoint would skip the sealed segment's end).
        fs.remove(&dir().join(eventlog::CHECKPOINT_FILE)).unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.power_cut(seed);
        let store = Store::open(DIR, options)
            .unwrap_or_else(|e| panic!("seed {seed}: the sealed segment is damaged: {e}"));
        assert_holds(&store, &[first, rolled]);
    }
}

fn interval(fs: &SimFs) -> Options {
    Options {
        durability: Durability::Interval {
            every: Duration::from_secs(3600),
        },
        preallocate: false,
        ..options(fs)
    }
}

fn fail_next_sync() -> Faults {
    Faults {
        fail_next_sync: true,
        ..Faults::default()
    }
}

// Defect 4: fsync errors swallowed outside `Durability::Fsync`.
#[test]
fn in_interval_mode_a_failed_fsync_when_sealing_a_segment_stops_the_writer() {
    let fs = disk();
    let store = Store::open(DIR, interval(&fs)).unwrap();
    append(&store, &sized(300)).unwrap();
    fs.inject(fail_next_sync());
    assert!(matches!(
        append(&store, &sized(900)),
        Err(Error::WriterStopped)
    ));
    assert!(!store.is_writable());
    assert!(matches!(
        append(&store, &sized(1)),
        Err(Error::WriterStopped)
    ));
}

#[test]
fn in_interval_mode_a_failed_fsync_in_a_checkpoint_stops_the_writer_and_writes_no_checkpoint() {
    let fs = disk();
    let store = Store::open(DIR, interval(&fs)).unwrap();
    append(&store, &sized(10)).unwrap();
    fs.inject(fail_next_sync());
    assert!(store.checkpoint().is_err());
    assert!(!store.is_writable());
    assert_eq!(fs.read(&dir().join(eventlog::CHECKPOINT_FILE)), None);
}

#[test]
fn in_interval_mode_a_failed_fsync_at_close_writes_no_checkpoint_over_dropped_pages() {
    let fs = disk();
    let store = Store::open(DIR, interval(&fs)).unwrap();
    append(&store, &sized(10)).unwrap();
    append(&store, &sized(10)).unwrap();
    fs.inject(fail_next_sync());
    drop(store);
    assert_eq!(fs.read(&dir().join(eventlog::CHECKPOINT_FILE)), None);
}

#[test]
fn in_interval_mode_the_fsync_error_a_background_checkpoint_meets_stops_the_writer() {
    let fs = disk();
    let store = Store::open(
        DIR,
        Options {
            checkpoint_every_events: 3,
            ..interval(&fs)
        },
    )
    .unwrap();
    append(&store, &sized(10)).unwrap();
    append(&store, &sized(10)).unwrap();
    fs.inject(fail_next_sync());
    // The third event starts a checkpoint, which needs the log fsynced first.
    let _ = append(&store, &sized(10));
    fs.advance_clock(Duration::from_secs(7200));
    assert!(matches!(
        append(&store, &sized(10)),
        Err(Error::WriterStopped)
    ));
    assert!(!store.is_writable());
}

// Defect 5: rot in the last acknowledged batches was cut as a torn tail.
#[test]
fn damage_in_bytes_a_checkpoint_covers_fails_open_instead_of_shortening_the_log() {
    let fs = disk();
    let options = Options {
        segment_size_bytes: 64 * 1024,
        preallocate: false,
        ..options(&fs)
    };
    let store = Store::open(DIR, options.clone()).unwrap();
    let events: Vec<NewEvent> = (0..5).map(|_| sized(50)).collect();
    for event in &events {
        append(&store, event).unwrap();
    }
    drop(store); // writes a checkpoint covering all five
    let segment = dir().join("00000000000000000000.seg");
    let mut bytes = fs.read(&segment).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x20; // inside the last event's data
    fs.overwrite(&segment, &bytes);
    match Store::open(DIR, options.clone()) {
        Err(Error::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segment);
            assert!(offset < last as u64);
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(store) => panic!(
            "opened a log of {} events; position 4 was acknowledged",
            store.head()
        ),
    }
    // Repair is the explicit way to accept the loss: it cuts there and drops the checkpoint.
    let report = eventlog::tools::repair_on(&fs, dir()).unwrap();
    assert_eq!(report.events, 4);
    assert!(report.checkpoint_removed);
    let store = Store::open(DIR, options).unwrap();
    assert_holds(&store, &events[..4]);
}

#[test]
fn a_last_segment_named_past_the_end_of_the_log_fails_open_instead_of_being_replaced() {
    let fs = disk();
    let store = Store::open(DIR, options(&fs)).unwrap();
    for _ in 0..3 {
        append(&store, &sized(300)).unwrap();
    }
    drop(store);
    let names = segments(&fs);
    assert_eq!(
        names,
        ["00000000000000000000.seg", "00000000000000000002.seg"]
    );
    // Without a checkpoint, the only evidence is the segment name: event 1 is lost, and the
    // header-only segment 2 proves it had been acknowledged.
    fs.remove(&dir().join(eventlog::CHECKPOINT_FILE)).unwrap();
    let first = dir().join(&names[0]);
    let bytes = fs.read(&first).unwrap();
    let one_event = (bytes.len() - 16) / 2;
    fs.overwrite(&first, &bytes[..bytes.len() - one_event]);
    let second = dir().join(&names[1]);
    fs.overwrite(&second, &fs.read(&second).unwrap()[..16]);
    match Store::open(DIR, options(&fs)) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, second),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(store) => panic!("opened a log of {} events", store.head()),
    }
    let report = eventlog::tools::repair_on(&fs, dir()).unwrap();
    assert_eq!(report.moved.len(), 1);
    assert_eq!(report.moved[0].from, second);
    let store = Store::open(DIR, options(&fs)).unwrap();
    assert_eq!(store.head(), 1);
}

#[test]
fn a_checkpoint_that_covers_more_than_the_log_holds_fails_open_until_repair_accepts_the_loss() {
    let fs = disk();
    let options = Options {
        segment_size_bytes: 64 * 1024,
        preallocate: false,
        ..options(&fs)
    };
    let store = Store::open(DIR, options.clone()).unwrap();
    let events: Vec<NewEvent> = (0..5).map(|_| sized(50)).collect();
    for event in &events {
        append(&store, event).unwrap();
    }
    drop(store);
    // The last event's bytes vanish cleanly (say, a file restored from an older copy).
    let segment = dir().join("00000000000000000000.seg");
    let bytes = fs.read(&segment).unwrap();
    let cut = bytes.len() - (bytes.len() - 16) / 5;
    fs.overwrite(&segment, &bytes[..cut]);
    assert!(matches!(
        Store::open(DIR, options.clone()),
        Err(Error::Corrupt { .. })
    ));
    let verified = eventlog::tools::verify_on(&fs, dir()).unwrap();
    assert!(!verified.is_clean(), "{verified}");
    let report = eventlog::tools::repair_on(&fs, dir()).unwrap();
    assert!(report.checkpoint_removed, "{report}");
    let store = Store::open(DIR, options).unwrap();
    assert_holds(&store, &events[..4]);
}

// Defect 6: the store directory's own entry was never fsynced.
#[test]
fn a_new_store_directory_and_its_first_event_survive_a_power_cut() {
    let fs = SimFs::new();
    let store = Store::open("/sim/fresh/store", options(&fs)).unwrap();
    let event = sized(10);
    append(&store, &event).unwrap();
    drop(store);
    fs.power_cut_losing_everything_unsynced();
    let store = Store::open("/sim/fresh/store", options(&fs)).unwrap();
    assert_holds(&store, &[event]);
}

// Defect 7: the background checkpoint held the index lock while it wrote its file.
#[test]
fn appends_and_reads_go_on_while_a_background_checkpoint_is_stuck_writing_its_file() {
    let fs = SimFs::threaded();
    fs.create_dir_all(dir()).unwrap();
    let store = Store::open(
        DIR,
        Options {
            checkpoint_every_events: 3,
            preallocate: false,
            segment_size_bytes: 64 * 1024,
            ..options(&fs)
        },
    )
    .unwrap();
    fs.hold_path(&dir().join("index.ckpt.tmp"));
    let first = sized(10);
    append(&store, &first).unwrap();
    append(&store, &sized(10)).unwrap();
    append(&store, &sized(10)).unwrap(); // starts the checkpoint, which gets stuck
    assert!(fs.wait_until_held(Duration::from_secs(10)));
    let (done, finished) = mpsc::channel();
    let writer = store.clone();
    std::thread::spawn(move || {
        let appended = append(&writer, &sized(10));
        let read = writer.get(first.id);
        let _ = done.send((appended.is_ok(), read.is_ok_and(|e| e.is_some())));
    });
    let outcome = finished.recv_timeout(Duration::from_secs(20));
    fs.release();
    assert_eq!(
        outcome,
        Ok((true, true)),
        "an append or a read waited for the checkpoint's file"
    );
}

// Defect 8: smaller ones.
#[test]
fn a_checkpoint_whose_offsets_do_not_increase_is_rejected() {
    let fs = disk();
    let options = Options {
        segment_size_bytes: 64 * 1024,
        ..options(&fs)
    };
    let store = Store::open(DIR, options.clone()).unwrap();
    let events: Vec<NewEvent> = (0..10).map(|_| sized(20)).collect();
    for event in &events {
        append(&store, event).unwrap();
    }
    drop(store);
    let path = dir().join(eventlog::CHECKPOINT_FILE);
    let mut bytes = fs.read(&path).unwrap();
    // magic, events, seed, slots, segment count, 1 segment, 10 ids, then the offsets.
    let offsets = 8 + 8 + 8 + 8 + 4 + 16 + 16 * 10;
    let (a, b) = (offsets + 4 * 3, offsets + 4 * 4);
    let third: [u8; 4] = bytes[a..a + 4].try_into().unwrap();
    bytes.copy_within(b..b + 4, a);
    bytes[b..b + 4].copy_from_slice(&third);
    let body = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    fs.overwrite(&path, &bytes);
    let store = Store::open(DIR, options).unwrap();
    assert!(store.open_report().checkpoint_rejected.is_some());
    assert_holds(&store, &events);
}

#[test]
fn repair_rewrites_a_damaged_header_of_segment_0_and_keeps_every_later_segment() {
    let fs = disk();
    let store = Store::open(DIR, options(&fs)).unwrap();
    let events: Vec<NewEvent> = (0..6).map(|_| sized(300)).collect();
    for event in &events {
        append(&store, event).unwrap();
    }
    drop(store);
    assert!(segments(&fs).len() >= 3);
    let first = dir().join("00000000000000000000.seg");
    let mut bytes = fs.read(&first).unwrap();
    bytes[3] ^= 0xFF;
    fs.overwrite(&first, &bytes);
    fs.remove(&dir().join(eventlog::CHECKPOINT_FILE)).unwrap();
    assert!(matches!(
        Store::open(DIR, options(&fs)),
        Err(Error::Corrupt { .. })
    ));
    let report = eventlog::tools::repair_on(&fs, dir()).unwrap();
    assert!(report.moved.is_empty(), "moved aside: {:?}", report.moved);
    assert_eq!(report.headers_rewritten.len(), 1);
    assert_eq!(report.events, 6);
    let store = Store::open(DIR, options(&fs)).unwrap();
    assert_holds(&store, &events);
}

/// A file system that records the largest single read, to check that recovery reads a long
/// damaged tail in bounded pieces.
#[derive(Debug)]
struct Measured {
    inner: SimFs,
    largest_read: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct MeasuredFile {
    inner: FileHandle,
    largest_read: Arc<AtomicUsize>,
}

impl VfsFile for MeasuredFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.largest_read.fetch_max(buf.len(), Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl Measured {
    fn wrap(&self, file: FileHandle) -> FileHandle {
        Arc::new(MeasuredFile {
            inner: file,
            largest_read: Arc::clone(&self.largest_read),
        })
    }
}

impl Vfs for Measured {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn is_dir(&self, dir: &Path) -> bool {
        self.inner.is_dir(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, write: bool) -> std::io::Result<FileHandle> {
        self.inner.open(path, write).map(|f| self.wrap(f))
    }
    fn create_new(&self, path: &Path) -> std::io::Result<FileHandle> {
        self.inner.create_new(path).map(|f| self.wrap(f))
    }
    fn create_truncate(&self, path: &Path) -> std::io::Result<FileHandle> {
        self.inner.create_truncate(path).map(|f| self.wrap(f))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, dir: &Path) -> Result<Box<dyn Send + Sync>, LockError> {
        self.inner.lock(dir)
    }
    fn deterministic(&self) -> bool {
        true
    }
}

#[test]
fn recovery_reads_a_long_damaged_tail_in_bounded_pieces() {
    let fs = disk();
    let options = Options {
        segment_size_bytes: 64 * 1024 * 1024,
        preallocate: false,
        ..options(&fs)
    };
    let store = Store::open(DIR, options.clone()).unwrap();
    let kept = sized(10);
    append(&store, &kept).unwrap();
    drop(store);
    fs.remove(&dir().join(eventlog::CHECKPOINT_FILE)).unwrap();
    // A torn record followed by 24 MiB that hold no record.
    let segment: PathBuf = dir().join("00000000000000000000.seg");
    let file = fs.open(&segment, true).unwrap();
    let end = file.len().unwrap();
    write_all_at(&*file, b"LBEV\xff\x00\x00\x00", end).unwrap();
    write_all_at(&*file, &vec![0xAB; 24 << 20], end + 8).unwrap();
    file.sync_data().unwrap();
    let largest_read = Arc::new(AtomicUsize::new(0));
    let measured = Measured {
        inner: fs.clone(),
        largest_read: Arc::clone(&largest_read),
    };
    let store = Store::open(
        DIR,
        Options {
            storage: Arc::new(measured),
            ..options
        },
    )
    .unwrap();
    assert!(store.open_report().torn_tail.is_some());
    assert_holds(&store, &[kept]);
    let largest = largest_read.load(Ordering::Relaxed);
    assert!(
        largest <= 5 << 20,
        "read {largest} bytes at once for a 24 MiB tail"
    );
}
