//! How a running job is stopped from outside: GitLab's graceful cancel (`Job-Status: canceling`), a hard abort
//! (`canceled`/`failed`/403), or the service shutting down (reference `protocol.md` §7.8, §9.3).

use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// GitLab says the job is canceled or failed, or refuses our updates.
    Remote,
    /// The service is shutting down forcefully (SIGTERM/SIGINT): `runner_interrupted`.
    RunnerInterrupted,
}

/// Shared between the service (which learns about cancellation) and the engine (which acts on it).
#[derive(Debug, Clone, Default)]
pub struct JobControl {
    abort: CancellationToken,
    graceful: CancellationToken,
    reason: Arc<Mutex<Option<AbortReason>>>,
    /// The job's process mark when the service chose it (the journal records it before the job starts, so a
    /// restarted service can kill what a crash left running); `None`: the engine makes one up.
    process_mark: Option<Arc<str>>,
}

impl JobControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `mark` as the value of the job's process mark (`RUNWRIGHT_JOB_MARK`).
    pub fn with_process_mark(mut self, mark: impl Into<Arc<str>>) -> Self {
        self.process_mark = Some(mark.into());
        self
    }

    pub fn process_mark(&self) -> Option<&str> {
        self.process_mark.as_deref()
    }

    /// Stops the job now: the current stage is killed and nothing but cleanup runs afterwards.
    pub fn abort(&self, reason: AbortReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.abort.cancel();
    }

    /// GitLab's `canceling`: stop the script, still run after_script and the failure uploads.
    pub fn cancel_gracefully(&self) {
        self.graceful.cancel();
    }

    pub fn abort_reason(&self) -> Option<AbortReason> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    pub fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    pub fn is_canceling(&self) -> bool {
        self.graceful.is_cancelled()
    }

    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    pub fn graceful_token(&self) -> &CancellationToken {
        &self.graceful
    }
}
