//! Pluggable stages around the user script: restore cache and download artifacts before it, save cache and
//! upload artifacts after it (reference `protocol.md` §7.1 rows 4, 5, 8, 9). The engine only knows where they
//! run and how their failures count; `runwright-transfer` implements GitLab's four stages and the service
//! hands them to the engine (`JobEnv::steps`).

use crate::feature_flags::FeatureFlags;
use crate::variables::Variables;
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::JobResponse;
use runwright_config::RunnerConfig;
use runwright_trace::{ansi, TraceBuffer};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPosition {
    /// After get_sources, before the user script.
    BeforeScript,
    /// After after_script.
    AfterScript,
}

pub struct StepContext<'a> {
    pub job: &'a JobResponse,
    pub runner: &'a RunnerConfig,
    pub trace: &'a TraceBuffer,
    pub project_dir: &'a Path,
    /// `<project dir>.tmp`: where file variables are written, and a scratch place for archives.
    pub tmp_dir: &'a Path,
    /// The runner's local cache directory, resolved (`cache_dir` or the executor's default).
    pub cache_dir: &'a Path,
    /// `GIT_STRATEGY=empty` (the cache's project slug gets `-empty`, as the builds dir does).
    pub empty_strategy: bool,
    /// Who owns what the steps extract into the project directory (see `Executor::job_owner`).
    pub owner: Option<(u32, u32)>,
    /// The job's variables, expanded.
    pub variables: &'a Variables,
    /// The job's feature flags, resolved (`[runners.feature_flags]` over the job's variables).
    pub feature_flags: &'a FeatureFlags,
    /// Whether the user script succeeded (for `when: on_success/on_failure`).
    pub succeeded: bool,
    /// `ARTIFACT_DOWNLOAD_ATTEMPTS` and `RESTORE_CACHE_ATTEMPTS` (1–10, checked when the job was planned).
    pub artifact_download_attempts: u32,
    pub restore_cache_attempts: u32,
    /// What is left of the job timeout when the step starts (presigned URLs live this long).
    pub time_left: Duration,
    pub cancel: CancellationToken,
}

impl StepContext<'_> {
    /// Expands `$VAR`/`${VAR}` in a key or path the way the runner does (file variables become their path).
    pub fn expand(&self, text: &str) -> String {
        let tmp = self.tmp_dir.to_string_lossy();
        self.variables
            .expand_str(text, &|key| format!("{tmp}/{key}"))
    }

    /// A job variable's value, empty when unset.
    pub fn var(&self, key: &str) -> &str {
        self.variables.value(key).unwrap_or("")
    }

    pub fn line(&self, text: &str) {
        self.trace.write(format!("{text}\n").as_bytes());
    }

    pub fn green(&self, text: &str) {
        self.trace
            .write(format!("{}{text}{}\n", ansi::BOLD_GREEN, ansi::RESET).as_bytes());
    }

    pub fn warn(&self, text: &str) {
        crate::job::warn(self.trace, text);
    }

    pub fn error(&self, text: &str) {
        self.trace
            .write(format!("{}ERROR: {text}{}\n", ansi::BOLD_RED, ansi::RESET).as_bytes());
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub reason: FailureReason,
    pub message: String,
    /// The exit code GitLab gets with the failure: gitlab-runner runs these steps as its helper binary in the
    /// job's shell, and a failing helper exits 1 (`logrus.Fatalln`), which the stage reports as the script's
    /// exit code.
    pub exit_code: Option<i32>,
}

#[async_trait]
pub trait JobStep: Send + Sync {
    fn position(&self) -> StepPosition;
    /// The section name and title when this step has work for the job; `None` skips it without a section.
    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)>;
    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError>;
}
