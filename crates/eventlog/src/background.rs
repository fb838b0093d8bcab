//! Manners for the engine's background work (the checkpoint thread, a scavenge).
//!
//! Background work is CPU-bound for up to seconds at a time: a checkpoint serializes and
//! checksums the whole index, a scavenge checksums every record of the segments it reads and
//! rebuilds the id table. On a machine with few cores it shares a core with the writer, the
//! appenders and the readers, who mostly sleep (on an fsync, on a socket) and need the core
//! for a few microseconds when they wake. Linux's scheduler (EEVDF since 6.6) does not always
//! preempt a running thread for a woken one: the woken thread can wait until the running
//! one's slice ends (milliseconds), and that wait is the tail latency of a get or an append
//! while a checkpoint or a scavenge runs (docs/PERFORMANCE.md, issues 9 and 11).
//!
//! So background loops call [`let_others_run`] every [`WORK_BETWEEN_YIELDS`] bytes or so of
//! work (a few tens of microseconds): a `sched_yield`, which costs well under a microsecond
//! when nobody is waiting and hands the core over when somebody is.

use crate::vfs::VfsFile;

/// About how many bytes a background loop processes between two [`let_others_run`] calls.
pub(crate) const WORK_BETWEEN_YIELDS: usize = 256 * 1024;

/// Lets a woken thread that waits for this core run now rather than at the end of this
/// thread's time slice. Never call it while holding a lock others wait for.
pub(crate) fn let_others_run() {
    std::thread::yield_now();
}

/// Calls [`let_others_run`] once every [`WORK_BETWEEN_YIELDS`] bytes counted with
/// [`Courtesy::did`].
#[derive(Default)]
pub(crate) struct Courtesy {
    since_yield: usize,
}

impl Courtesy {
    /// Counts `bytes` of work; yields when enough has been done since the last yield.
    pub(crate) fn did(&mut self, bytes: usize) {
        self.since_yield += bytes;
        if self.since_yield >= WORK_BETWEEN_YIELDS {
            self.since_yield = 0;
            let_others_run();
        }
    }
}

/// Bytes given back to the file system per step by [`free_in_steps`].
const FREE_STEP_BYTES: u64 = 32 * 1024 * 1024;

/// Shrinks a file that no longer has a name (a replaced or removed checkpoint) to nothing in
/// steps of [`FREE_STEP_BYTES`], each made durable, so that the file system frees its blocks
/// over several journal commits. Closing the last handle of a file
/// of hundreds of MB frees them in one commit, which with the `discard` mount option also
/// trims them, and every fsync of the machine (the appenders') waits for it: a stall of
/// 100-300 ms (docs/PERFORMANCE.md). Only for files no other process reads: the truncation
/// reaches every descriptor of the inode (so never for segments, which a backup may be
/// copying).
/// Best effort: on an error the rest is freed when the handle closes.
pub(crate) fn free_in_steps(old: &dyn VfsFile) {
    let Ok(mut len) = old.len() else { return };
    while len > FREE_STEP_BYTES {
        len -= FREE_STEP_BYTES;
        if old.set_len(len).and_then(|()| old.sync_data()).is_err() {
            return;
        }
    }
}
