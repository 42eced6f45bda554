//! `meta.json`: what the journal knows about one job. Times are Unix milliseconds (UTC).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Bumped when a field changes meaning; readers skip jobs of a newer version they cannot read.
pub const META_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[default]
    Running,
    Success,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn is_final(self) -> bool {
        self != JobStatus::Running
    }
}

/// The `[[runners]]` entry a job ran on. Only the short token: the runner token never enters the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunnerRef {
    pub name: String,
    pub short_token: String,
    /// GitLab's URL as configured (no credentials: config URLs carry none).
    pub url: String,
    pub system_id: String,
}

/// TLS files of the runner entry, so a restarted service reaches GitLab as the job's service did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// One section of the trace (a stage: `get_sources`, `step_script`, …, or a user's own section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StageTiming {
    pub name: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

impl StageTiming {
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at_ms.map(|f| f - self.started_at_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct JobMeta {
    pub version: u32,
    /// A `runwright exec` job (embedded coordinator): nothing to report to GitLab after a crash.
    pub local: bool,
    pub runner: RunnerRef,
    /// The runner entry's executor (`shell`, `docker`): a recovery removes a docker job's containers.
    pub executor: String,
    pub tls: TlsFiles,
    pub project_id: i64,
    pub project_path: String,
    pub pipeline_id: i64,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub job_id: i64,
    pub job_name: String,
    pub stage: String,
    /// When GitLab queued the job (received − GitLab's `time_in_queue_seconds`), when known.
    pub queued_at_ms: Option<i64>,
    /// When the runner received the job.
    pub received_at_ms: i64,
    /// When GitLab accepted `state=running` (two-phase commit).
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub stages: Vec<StageTiming>,
    pub state: JobStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Bytes in `trace.log` when the metadata was last written (the file itself is the truth).
    pub trace_bytes: u64,
    /// Set when writing the trace failed (disk full, …) or the free-space floor stopped it: the trace stops there.
    pub trace_error: Option<String>,
    /// Most bytes `trace.log` keeps once the job ended (`[journal] max_trace_mb`); 0 in records written before
    /// the cap existed (no cap).
    pub trace_cap: u64,
    /// Bytes of the job's output the cap dropped between the head and the tail (the trace has a note there).
    pub trace_dropped: u64,
    /// `output_limit` of the runner entry in bytes: a recovery cuts the trace where GitLab did.
    pub output_limit: usize,
    /// `features.failure_reasons` of the payload, for the recovery's final update.
    pub supported_failure_reasons: Vec<String>,
    /// The process that ran the job.
    pub service_pid: u32,
    /// `RUNWRIGHT_JOB_MARK` of the job's processes, so a restarted service can kill what survived a crash.
    pub process_mark: Option<String>,
    /// GitLab has the final state (always true for local jobs once they end).
    pub reported: bool,
    /// Finalised by a restarted service, not by the one that ran it.
    pub recovered: bool,
}

impl JobMeta {
    pub fn duration_ms(&self) -> Option<i64> {
        let start = self.started_at_ms.unwrap_or(self.received_at_ms);
        self.finished_at_ms.map(|f| f - start)
    }

    /// Seconds the job waited in GitLab's queue, when known.
    pub fn queue_ms(&self) -> Option<i64> {
        self.queued_at_ms.map(|q| self.received_at_ms - q)
    }
}
