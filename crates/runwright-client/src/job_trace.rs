//! The live trace of one running job, and its final update.
//!
//! Mirrors runner network/trace.go (`clientJobTrace`): while the job runs, a task sends one `PATCH` per update
//! interval with at most 1 MiB of new log, follows `416` resyncs, adopts the interval GitLab asks for (capped at
//! 15 min), keeps the job alive with a `PUT state=running` carrying the log checksum after 30 s without a
//! successful send, and reports `Job-Status` cancel requests through a watch channel. When the job ends,
//! [`JobTrace::finish`] stops that task and runs the final update loop (`protocol.md` §3): flush the rest of the
//! log, `PUT` the final state with checksum and byte size, wait on `202`, resend everything on `412`, and retry
//! the whole attempt with back-off up to the retry limit.
//!
//! State owned: the offset GitLab has acknowledged, the time of the last successful send and the current
//! update interval, shared between the patch task and the final loop (never both active at once).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use runwright_trace::TraceBuffer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::{Client, PatchState, PatchTraceOutcome, UpdateJobState};
use crate::error::ClientError;
use crate::retry::{self, Backoff};
use runwright_api::failure_reason::{map_failure_reason, FailureReason};
use runwright_api::types::{
    JobState, JobTraceOutput, UpdateJobRequest, VersionInfo, STATE_RUNNING,
};

/// GitLab's default update interval (runner common/consts.go `DefaultUpdateInterval`).
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(3);
/// Upper bound for an interval the server asks for (runner common/consts.go `MaxUpdateInterval`).
pub const MAX_UPDATE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Bytes per trace patch (runner common/consts.go `DefaultTracePatchLimit`).
pub const DEFAULT_MAX_PATCH: usize = 1024 * 1024;
/// Keep-alive period without successful sends (runner common/consts.go `MinTraceForceSendInterval`).
pub const DEFAULT_FORCE_SEND_INTERVAL: Duration = Duration::from_secs(30);
/// Final update attempts (runner common/consts.go `DefaultFinalUpdateRetryLimit`).
pub const DEFAULT_FINAL_UPDATE_RETRY_LIMIT: u32 = 10;
/// Back-off between final update attempts (runner common/consts.go `DefaultfinalUpdateBackoffMax`).
const FINAL_BACKOFF_MIN: Duration = Duration::from_secs(1);
const FINAL_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// What GitLab said about cancelling the job, as seen on trace patches and keep-alive updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteCancel {
    /// Nothing: keep running.
    #[default]
    None,
    /// `Job-Status: canceling`: stop the script, still run `after_script`, cache and artifact uploads.
    Graceful,
    /// `Job-Status: canceled|failed`, or `403` on a patch, or an abort answer to a keep-alive update (which
    /// includes `404`, runner network/gitlab.go `createUpdateJobResult`; a keep-alive without any answer is not
    /// an abort here, unlike GitLab's runner): stop everything.
    /// A `404` on a *patch* is ignored while running, as GitLab's runner does. Once `Abort`, it stays `Abort`.
    Abort,
}

/// Tunables of the trace loops; defaults are GitLab's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTraceOptions {
    /// Time between patches until the server asks for another (default 3 s).
    pub update_interval: Duration,
    /// Largest patch body (default 1 MiB).
    pub max_patch: usize,
    /// Keep-alive `PUT` after this long without a successful send (default 30 s).
    pub force_send_interval: Duration,
    /// Attempts of the final update (`job_status_final_update_retry_limit`, default 10).
    pub final_update_retry_limit: u32,
}

impl Default for JobTraceOptions {
    fn default() -> Self {
        JobTraceOptions {
            update_interval: DEFAULT_UPDATE_INTERVAL,
            max_patch: DEFAULT_MAX_PATCH,
            force_send_interval: DEFAULT_FORCE_SEND_INTERVAL,
            final_update_retry_limit: DEFAULT_FINAL_UPDATE_RETRY_LIMIT,
        }
    }
}

/// How the job ended, for the final update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalState {
    pub state: JobState,
    /// Only used when `state` is `Failed`; `None` means `script_failure` (runner common/failure_reason_mapper.go).
    pub failure_reason: Option<FailureReason>,
    /// Sent when non-zero (GitLab's runner omits a zero `exit_code`).
    pub exit_code: Option<i32>,
    /// `features.failure_reasons` of the job payload.
    pub supported_reasons: Vec<String>,
}

impl FinalState {
    /// A successful job.
    pub fn success() -> FinalState {
        FinalState {
            state: JobState::Success,
            failure_reason: None,
            exit_code: None,
            supported_reasons: Vec::new(),
        }
    }

    /// A failed job.
    pub fn failed(
        reason: FailureReason,
        exit_code: Option<i32>,
        supported_reasons: Vec<String>,
    ) -> FinalState {
        FinalState {
            state: JobState::Failed,
            failure_reason: Some(reason),
            exit_code,
            supported_reasons,
        }
    }
}

/// The live trace of one job. Dropping it without [`JobTrace::finish`] stops the patch task and sends no
/// final update.
pub struct JobTrace {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for JobTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let progress = self.shared.progress();
        f.debug_struct("JobTrace")
            .field("job_id", &self.shared.job_id)
            .field("sent_offset", &progress.sent_offset)
            .field("update_interval", &progress.update_interval)
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: Client,
    job_id: i64,
    job_token: String,
    info: VersionInfo,
    buffer: TraceBuffer,
    opts: JobTraceOptions,
    debug_trace: AtomicBool,
    progress: Mutex<Progress>,
    cancel_tx: watch::Sender<RemoteCancel>,
}

struct Progress {
    /// Bytes GitLab has (as far as we know).
    sent_offset: u64,
    /// Last successful patch or update (`sentTime`).
    sent_time: Instant,
    update_interval: Duration,
}

impl JobTrace {
    /// Starts the patch task for job `job_id` (runner network/trace.go `start`/`watch`). Must be called within a
    /// tokio runtime. The receiver reports cancel requests from GitLab.
    pub fn start(
        client: Client,
        job_id: i64,
        job_token: String,
        info: VersionInfo,
        buffer: TraceBuffer,
        opts: JobTraceOptions,
    ) -> (JobTrace, watch::Receiver<RemoteCancel>) {
        let update_interval = if opts.update_interval.is_zero() {
            DEFAULT_UPDATE_INTERVAL
        } else {
            opts.update_interval
        };
        let (cancel_tx, cancel_rx) = watch::channel(RemoteCancel::None);
        let shared = Arc::new(Shared {
            client,
            job_id,
            job_token,
            info,
            buffer,
            opts: JobTraceOptions {
                update_interval,
                max_patch: opts.max_patch.max(1),
                ..opts
            },
            debug_trace: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                sent_offset: 0,
                sent_time: Instant::now(),
                update_interval,
            }),
            cancel_tx,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(watch_loop(Arc::clone(&shared), stop_rx));
        (
            JobTrace {
                shared,
                stop: Some(stop_tx),
                task: Some(task),
            },
            cancel_rx,
        )
    }

    /// Marks the job as debug-traced: later patches carry `debug_trace=true` (runner `SetDebugModeEnabled`).
    pub fn set_debug_trace(&self, enabled: bool) {
        self.shared.debug_trace.store(enabled, Ordering::Relaxed);
    }

    /// The latest cancel request seen.
    pub fn remote_cancel(&self) -> RemoteCancel {
        *self.shared.cancel_tx.borrow()
    }

    /// Ends the job: finishes the buffer, stops the patch task (after a patch in flight completes), then runs
    /// the final update loop. `Ok` once GitLab accepted the state — or told us to stop (abort, not found);
    /// `Err` when every attempt failed.
    pub async fn finish(mut self, state: FinalState) -> Result<(), ClientError> {
        self.shared.buffer.finish();
        if let Some(stop) = self.stop.take() {
            // The task may have ended already (after an abort): nothing to stop then.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(job = self.shared.job_id, error = %e, "trace patch task ended abnormally");
            }
        }
        self.shared.final_update(&state).await
    }
}

/// One patch per interval until stopped or aborted (runner network/trace.go `watch`).
async fn watch_loop(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        let interval = shared.progress().update_interval;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {
                if !shared.incremental_update().await {
                    // Aborted: no more patches; `finish` still runs the final update.
                    return;
                }
            }
        }
    }
}

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        // Plain numbers: a poisoned lock holds consistent values.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fast(&self) -> bool {
        self.client.fast_retries()
    }

    fn signal(&self, cancel: RemoteCancel) {
        self.cancel_tx.send_if_modified(|current| {
            let next = match (*current, cancel) {
                (RemoteCancel::Abort, _) | (_, RemoteCancel::None) => return false,
                (RemoteCancel::Graceful, RemoteCancel::Graceful) => return false,
                (_, next) => next,
            };
            tracing::warn!(job = self.job_id, cancel = ?next, "GitLab requests to stop the job");
            *current = next;
            true
        });
    }

    /// Adopts an interval from the server, capped (runner network/trace.go `setUpdateInterval`).
    fn set_update_interval(&self, interval: Option<Duration>) {
        if let Some(interval) = interval.filter(|i| !i.is_zero()) {
            self.progress().update_interval = interval.min(MAX_UPDATE_INTERVAL);
        }
    }

    /// `false` when the job is to be aborted (runner network/trace.go `incrementalUpdate`).
    async fn incremental_update(&self) -> bool {
        let patch = self.send_patch().await;
        if patch.cancel_requested {
            self.signal(RemoteCancel::Graceful);
        }
        match patch.state {
            PatchState::Succeeded => {
                // Touch the job when nothing was sent for a while: that is how an abort is discovered.
                let touch = self.touch_job().await;
                if touch.cancel_requested {
                    self.signal(RemoteCancel::Graceful);
                }
                if touch.state == UpdateJobState::Abort {
                    self.signal(RemoteCancel::Abort);
                    return false;
                }
            }
            PatchState::Abort => {
                self.signal(RemoteCancel::Abort);
                return false;
            }
            // 404 is ignored while running; range mismatch and failures are retried next tick.
            PatchState::NotFound | PatchState::RangeMismatch | PatchState::Failed => {}
        }
        true
    }

    /// Whether the buffer holds bytes GitLab has not acknowledged. GitLab's runner tests `!=`; with `>` a
    /// server claiming more than we have cannot spin the flush loop forever.
    fn any_trace_to_send(&self) -> bool {
        self.buffer.len() > self.progress().sent_offset
    }

    /// One patch from the acknowledged offset (runner network/trace.go `sendPatch`).
    async fn send_patch(&self) -> PatchTraceOutcome {
        let offset = self.progress().sent_offset;
        let content = self.buffer.read(offset, self.opts.max_patch);
        let debug = self.debug_trace.load(Ordering::Relaxed);
        let result = self
            .client
            .patch_trace(self.job_id, &self.job_token, offset, &content, debug)
            .await;
        if content.is_empty() {
            return result;
        }
        self.set_update_interval(result.update_interval);
        if matches!(
            result.state,
            PatchState::Succeeded | PatchState::RangeMismatch
        ) {
            let mut p = self.progress();
            p.sent_time = Instant::now();
            p.sent_offset = result.new_offset;
        }
        result
    }

    fn output(&self) -> (String, JobTraceOutput) {
        let checksum = self.buffer.checksum();
        let output = JobTraceOutput {
            checksum: checksum.clone(),
            bytesize: self.buffer.len(),
        };
        (checksum, output)
    }

    /// Keep-alive `PUT state=running` after `force_send_interval` of silence (runner network/trace.go `touchJob`).
    async fn touch_job(&self) -> crate::client::UpdateJobOutcome {
        let due = self.progress().sent_time.elapsed() > self.opts.force_send_interval;
        if !due {
            return crate::client::UpdateJobOutcome {
                state: UpdateJobState::Succeeded,
                cancel_requested: false,
                update_interval: None,
            };
        }
        let (checksum, output) = self.output();
        let req = UpdateJobRequest {
            info: self.info.clone(),
            token: self.job_token.clone(),
            state: STATE_RUNNING.to_owned(),
            failure_reason: None,
            checksum: Some(checksum),
            output: Some(output),
            exit_code: None,
        };
        let result = self
            .client
            .update_job(self.job_id, &self.job_token, &req)
            .await;
        self.set_update_interval(result.update_interval);
        if result.state == UpdateJobState::Succeeded {
            self.progress().sent_time = Instant::now();
        }
        result
    }

    /// Final `PUT` (runner network/trace.go `sendUpdate`).
    async fn send_update(&self, fin: &FinalState) -> UpdateJobState {
        let (checksum, output) = self.output();
        let failure_reason = (fin.state == JobState::Failed).then(|| {
            map_failure_reason(
                fin.failure_reason.map_or("", FailureReason::as_str),
                &fin.supported_reasons,
            )
        });
        let req = UpdateJobRequest {
            info: self.info.clone(),
            token: self.job_token.clone(),
            state: fin.state.as_str().to_owned(),
            failure_reason,
            checksum: Some(checksum),
            output: Some(output),
            exit_code: fin.exit_code.filter(|c| *c != 0),
        };
        let result = self
            .client
            .update_job(self.job_id, &self.job_token, &req)
            .await;
        self.set_update_interval(result.update_interval);
        match result.state {
            UpdateJobState::Succeeded => self.progress().sent_time = Instant::now(),
            UpdateJobState::TraceValidationFailed => {
                // GitLab's copy does not match our checksum: send everything again from 0.
                let mut p = self.progress();
                p.sent_time = Instant::now();
                p.sent_offset = 0;
            }
            _ => {}
        }
        result.state
    }

    /// Patches until GitLab has the whole log (runner network/trace.go `ensureAllTraceSent`). `Err` when a patch
    /// failed: the attempt is over.
    async fn ensure_all_trace_sent(&self) -> Result<(), String> {
        while self.any_trace_to_send() {
            let patch = self.send_patch().await;
            match patch.state {
                PatchState::Succeeded => {}
                // GitLab will not take more: go on to the final update, which will tell.
                PatchState::Abort | PatchState::NotFound => return Ok(()),
                PatchState::RangeMismatch => self.wait_interval().await,
                PatchState::Failed => {
                    return Err(format!("trace patch at offset {} failed", patch.new_offset));
                }
            }
        }
        Ok(())
    }

    async fn wait_interval(&self) {
        let wait = retry::capped(self.progress().update_interval, self.fast());
        tokio::time::sleep(wait).await;
    }

    /// One attempt: flush, then `PUT` until GitLab gives a definite answer.
    async fn final_attempt(&self, fin: &FinalState) -> Result<(), String> {
        // Fall back to the default interval and let GitLab raise it (runner network/trace.go `finalUpdate`).
        self.progress().update_interval = self.opts.update_interval;
        loop {
            // Before every update: the update may have rewound the trace (412).
            self.ensure_all_trace_sent().await?;
            match self.send_update(fin).await {
                UpdateJobState::Succeeded => return Ok(()),
                UpdateJobState::Abort | UpdateJobState::NotFound => {
                    // Also GitLab's normal answer to a `failed` final update (`Job-Status: failed`), so not a
                    // warning: either way the job is finished on GitLab's side.
                    tracing::info!(
                        job = self.job_id,
                        "final update: GitLab reports the job finished (or no longer accepts updates)"
                    );
                    return Ok(());
                }
                UpdateJobState::Accepted | UpdateJobState::TraceValidationFailed => {
                    self.wait_interval().await
                }
                UpdateJobState::Failed => return Err("job update failed".to_owned()),
                // The job's fate on GitLab is unknown: try again (a later attempt may find it finished, `403`).
                UpdateJobState::NoAnswer => return Err("no answer to the job update".to_owned()),
            }
        }
    }

    /// The final update loop with its retry limit and back-off (`protocol.md` §3).
    async fn final_update(&self, fin: &FinalState) -> Result<(), ClientError> {
        let limit = self.opts.final_update_retry_limit.max(1);
        let mut backoff = Backoff::new(FINAL_BACKOFF_MIN, FINAL_BACKOFF_MAX);
        let mut last = String::new();
        for attempt in 1..=limit {
            match self.final_attempt(fin).await {
                Ok(()) => return Ok(()),
                Err(why) => {
                    last = why;
                    if attempt < limit {
                        let wait = retry::capped(backoff.next_wait(), self.fast());
                        tracing::warn!(
                            job = self.job_id,
                            attempt,
                            limit,
                            error = %last,
                            duration = ?wait,
                            "final update failed, retrying"
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        tracing::error!(job = self.job_id, attempts = limit, error = %last, "final update gave up");
        Err(ClientError::FinalUpdateFailed {
            job_id: self.job_id,
            attempts: limit,
            last,
        })
    }
}
