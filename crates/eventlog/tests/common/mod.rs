//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use eventlog::{Durability, NewEvent, Options};
use uuid::Uuid;

/// An event with a fresh id.
pub fn event(stream: &str, data: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        stream: stream.to_owned(),
        event_type: "Tested".to_owned(),
        data: data.as_bytes().to_vec(),
        metadata: None,
        binary: false,
    }
}

/// Options for fast tests: no fsync (the tests that need fsync say so), small segments, and
/// no background preallocation, so file sizes are exactly what was written (the crash,
/// disk-full and preallocation tests use the defaults).
pub fn fast_options() -> Options {
    Options {
        durability: Durability::Never,
        segment_size_bytes: 64 * 1024,
        preallocate: false,
        ..Options::default()
    }
}

/// A temporary directory on tmpfs when the machine has one: the corruption tests open
/// thousands of stores, and fsyncs on a real disk would dominate their run time. (The crash
/// and durability tests use the real disk.)
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}
