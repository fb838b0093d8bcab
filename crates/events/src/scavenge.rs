//! Scavenge progress, as every backend reports it (`GET /admin/scavenge/{id}`).

use uuid::Uuid;

/// Where a scavenge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScavengeState {
    /// Still going through segments.
    Running,
    /// Finished: every sealed segment it found was rewritten or kept.
    Done,
    /// Stopped on an error (see [`ScavengeStatus::error`]); segments done so far stay done.
    Failed,
}

impl ScavengeState {
    /// `running`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScavengeState::Running => "running",
            ScavengeState::Done => "done",
            ScavengeState::Failed => "failed",
        }
    }
}

/// One scavenge's progress. Byte counts are of segment files (the embedded engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScavengeStatus {
    /// The scavenge's id (the path of `GET /admin/scavenge/{id}`).
    pub id: Uuid,
    /// Running, done or failed.
    pub state: ScavengeState,
    /// Sealed segments when the scavenge began, and how many it has gone through.
    pub segments_total: u64,
    /// Sealed segments gone through so far.
    pub segments_done: u64,
    /// Bytes of those segments before, and of the ones done after.
    pub bytes_before: u64,
    /// Bytes of the segments done, after their rewrite.
    pub bytes_after: u64,
    /// Dead events whose bytes were removed.
    pub events_removed: u64,
    /// Why it failed (for `Failed`).
    pub error: Option<String>,
}
