//! Zero-filling the active segment ahead of the writer.
//!
//! An `fdatasync` after a write that extends a file must also commit the new file size (a
//! journal commit on ext4); after a write into blocks that already exist and hold zeros it
//! only writes the data. Measured here: 0.25 ms against 0.15 ms for a 12 KB group commit. So a
//! background thread keeps the active segment written with zeros (and fsynced) a few MiB
//! ahead of the writer. Recovery treats zeros after the last whole batch as unwritten space.
//!
//! The preallocator never writes where the writer is: under one lock it zero-fills only past
//! both what it already zeroed and what the writer has reserved, and the writer reserves its
//! range under that lock whenever it writes past the zeroed end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::vfs::{FileHandle, write_all_at};

/// Zero-fill this far ahead of the writer.
pub const PREALLOCATE_AHEAD_BYTES: u64 = 16 * 1024 * 1024;
/// Start zero-filling again when fewer zeroed bytes than this are left ahead of the writer.
const PREALLOCATE_LOW_WATER_BYTES: u64 = 8 * 1024 * 1024;
/// Zeros written per step (the lock is held for one step).
const PREALLOCATE_STEP_BYTES: u64 = 256 * 1024;
/// Fsync the zeros after this many bytes, so the writer's fsyncs do not carry them.
const PREALLOCATE_SYNC_BYTES: u64 = 1024 * 1024;
/// Never preallocate into the last this-many free bytes of the file system: zeros written
/// ahead must not be what fills a disk (the checkpoint, the teams database and other programs
/// need the space more).
pub const PREALLOCATE_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Default)]
struct State {
    file: Option<FileHandle>,
    /// Bytes of the file known to be written with zeros or data (the file's length).
    zeroed_end: u64,
    /// End of what the writer has written or is writing.
    writer_end: u64,
    /// Zero-fill up to here.
    target: u64,
    shutdown: bool,
}

/// How the zero-filling runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a thread of its own (the normal case).
    Background,
    /// On the writer's thread, when it asks for more ([`Preallocator::wanted`]): for
    /// deterministic simulated runs.
    Inline,
}

/// Shared between the writer and the preallocator thread.
#[derive(Default)]
pub struct Preallocator {
    state: Mutex<State>,
    wake: Condvar,
    /// Mirror of `state.zeroed_end` for the writer's lock-free fast path.
    zeroed_end: AtomicU64,
    inline: bool,
}

impl Preallocator {
    /// Starts the preallocator thread for `file` (already `len` bytes long).
    pub fn start(file: FileHandle, len: u64, mode: Mode) -> Arc<Preallocator> {
        let preallocator = Arc::new(Preallocator {
            inline: mode == Mode::Inline,
            ..Preallocator::default()
        });
        preallocator.switch(file, len, len);
        if preallocator.inline {
            return preallocator;
        }
        let worker = Arc::clone(&preallocator);
        if let Err(e) = std::thread::Builder::new()
            .name("eventlog-prealloc".into())
            .spawn(move || worker.run())
        {
            tracing::warn!(error = %e, "no preallocation thread; appends extend the segment");
        }
        preallocator
    }

    /// Points the preallocator at a new active segment (after a roll or at start).
    pub fn switch(&self, file: FileHandle, file_len: u64, writer_end: u64) {
        let mut state = self.state.lock().expect("prealloc lock");
        state.file = Some(file);
        state.zeroed_end = file_len;
        state.writer_end = writer_end;
        state.target = 0;
        self.zeroed_end.store(file_len, Ordering::SeqCst);
    }

    /// Stops zero-filling the active segment and hands back the preallocator's descriptor of
    /// it, so that the writer can seal the segment (cut it to its last record) without the
    /// preallocator extending it again. [`Preallocator::switch`] resumes.
    pub fn detach(&self) -> Option<FileHandle> {
        let mut state = self.state.lock().expect("prealloc lock");
        state.target = 0;
        state.file.take()
    }

    /// The writer cut the file back to `len` (after a failed write or fsync).
    pub fn truncated(&self, len: u64) {
        let mut state = self.state.lock().expect("prealloc lock");
        state.zeroed_end = len;
        state.writer_end = len;
        state.target = 0;
        self.zeroed_end.store(len, Ordering::SeqCst);
    }

    /// Called by the writer before writing `[start, end)`.
    pub fn reserve(&self, end: u64) {
        if end <= self.zeroed_end.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.state.lock().expect("prealloc lock");
        state.writer_end = state.writer_end.max(end);
    }

    /// Called by the writer after a commit that ended at `end`: asks for more zeros when the
    /// zeroed space ahead runs low, up to `limit` (the segment size).
    pub fn wanted(&self, end: u64, limit: u64) {
        let zeroed = self.zeroed_end.load(Ordering::SeqCst);
        if zeroed >= limit || zeroed.saturating_sub(end) >= PREALLOCATE_LOW_WATER_BYTES {
            return;
        }
        let mut state = self.state.lock().expect("prealloc lock");
        let target = (end + PREALLOCATE_AHEAD_BYTES).min(limit);
        if target > state.target {
            state.target = target;
            if self.inline {
                self.fill(state);
            } else {
                self.wake.notify_one();
            }
        }
    }

    /// Zero-fills up to the target on the caller's thread ([`Mode::Inline`]).
    fn fill(&self, mut state: std::sync::MutexGuard<'_, State>) {
        let zeros = vec![0u8; PREALLOCATE_STEP_BYTES as usize];
        let Some(file) = state.file.clone() else {
            return;
        };
        let mut written = false;
        loop {
            let start = state.zeroed_end.max(state.writer_end);
            if start >= state.target {
                break;
            }
            let end = (start + PREALLOCATE_STEP_BYTES).min(state.target);
            if let Err(e) = write_all_at(&*file, &zeros[..(end - start) as usize], start) {
                tracing::debug!(error = %e, "preallocation stopped");
                state.target = 0;
                break;
            }
            written = true;
            state.zeroed_end = end;
            self.zeroed_end.store(end, Ordering::SeqCst);
        }
        if written {
            // Errors here are the writer's to meet on its own descriptor.
            let _ = file.sync_data();
        }
    }

    /// Stops the thread (it finishes its current step).
    pub fn stop(&self) {
        let mut state = self.state.lock().expect("prealloc lock");
        state.shutdown = true;
        state.file = None;
        self.wake.notify_one();
    }

    fn run(&self) {
        let zeros = vec![0u8; PREALLOCATE_STEP_BYTES as usize];
        let mut unsynced = 0u64;
        let mut state = self.state.lock().expect("prealloc lock");
        loop {
            if state.shutdown {
                return;
            }
            let start = state.zeroed_end.max(state.writer_end);
            let Some(file) = state.file.clone().filter(|_| start < state.target) else {
                if unsynced > 0 {
                    let file = state.file.clone();
                    drop(state);
                    if let Some(file) = file {
                        let _ = file.sync_data();
                    }
                    unsynced = 0;
                    state = self.state.lock().expect("prealloc lock");
                    continue;
                }
                state = self.wake.wait(state).expect("prealloc lock");
                continue;
            };
            let end = (start + PREALLOCATE_STEP_BYTES).min(state.target);
            if file
                .free_space()
                .is_some_and(|free| free < PREALLOCATE_MIN_FREE_BYTES + (end - start))
            {
                // Low on space: let the writer extend the file as it goes instead.
                state.target = 0;
                continue;
            }
            if let Err(e) = write_all_at(&*file, &zeros[..(end - start) as usize], start) {
                // Not fatal: the writer extends the file itself. Stop trying for this segment.
                tracing::debug!(error = %e, "preallocation stopped");
                state.target = 0;
                continue;
            }
            state.zeroed_end = end;
            self.zeroed_end.store(end, Ordering::SeqCst);
            unsynced += end - start;
            if unsynced >= PREALLOCATE_SYNC_BYTES {
                drop(state);
                let _ = file.sync_data();
                unsynced = 0;
                state = self.state.lock().expect("prealloc lock");
            }
        }
    }
}
