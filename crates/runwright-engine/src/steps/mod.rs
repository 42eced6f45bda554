//! Pluggable stages around the user script: restore cache and download artifacts before it, save cache and
//! upload artifacts after it (reference `protocol.md` §7.1 rows 4, 5, 8, 9). The engine only knows where they
//! run and how their failures count; [`artifacts`] and [`cache`] implement GitLab's four stages.

pub mod artifacts;
pub mod cache;

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

#[derive(Debug, Clone)]
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

/// `artifacts:when` / `cache:when` against the script's result: empty and `on_success` after success only.
pub(crate) fn when_matches(when: &str, succeeded: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !succeeded,
        _ => succeeded,
    }
}

/// The section of an after-script step, named and titled after the script's result as GitLab's runner does
/// (`archive_cache` / `archive_cache_on_failure`, "Saving cache for successful job").
pub(crate) fn result_section(
    ctx: &StepContext<'_>,
    on_success: &str,
    on_failure: &str,
    title: &str,
) -> (String, String) {
    if ctx.succeeded {
        (on_success.into(), format!("{title} for successful job"))
    } else {
        (on_failure.into(), format!("{title} for failed job"))
    }
}

/// Resolves `paths`/`exclude`/`untracked` in the project directory and prints GitLab's lines about it. `what`
/// (`artifacts`, `cache`) names the archive in the error for a selection over the runner's `max_archive_files`.
pub(crate) async fn select(
    ctx: &StepContext<'_>,
    mut spec: runwright_archive::ArchiveSpec,
    what: &'static str,
) -> Result<runwright_archive::Selection, String> {
    let project = ctx.project_dir.to_path_buf();
    // The selection lives in the service's memory (GitLab's runner makes it in its helper process, in the
    // job's): one job's file count must not exhaust it (issue 17).
    spec.max_files = Some(ctx.runner.max_archive_files());
    let selection = blocking(move || {
        runwright_archive::select_files(&project, &spec).map_err(|e| archive_error(e, what))
    })
    .await?;
    for info in &selection.infos {
        ctx.line(info);
    }
    for w in &selection.warnings {
        ctx.warn(w);
    }
    Ok(selection)
}

/// An archive error as the job log shows it: for one over `max_archive_files`, the limit, whose it is, and how
/// to get under it or raise it.
pub(crate) fn archive_error(e: runwright_archive::Error, what: &str) -> String {
    match e {
        runwright_archive::Error::TooManyFiles { limit } => too_many_files(what, limit),
        // The caller names the archive (`extracting artifacts of build (42): …`, `Extracting cache key: …`).
        runwright_archive::Error::TooManyEntries { limit, .. } => format!(
            "the archive holds more than {limit} entries, over this runner's limit for one archive \
             (max_archive_files in its [[runners]] entry of config.toml; runwright reads an archive's index in the \
             runner's own memory): archive fewer, larger files, or ask the runner's administrator to raise \
             max_archive_files"
        ),
        e => e.to_string(),
    }
}

fn too_many_files(what: &str, limit: usize) -> String {
    format!(
        "{what}: more than {limit} files, directories and symlinks match, over this runner's limit for one \
         archive (max_archive_files in its [[runners]] entry of config.toml; runwright lists an archive's files \
         in the runner's own memory). Archive fewer, larger files (for example, pack the directory into one \
         tar file in the job's script and archive that), or ask the runner's administrator to raise \
         max_archive_files"
    )
}

/// Extraction options for the project directory: the job's owner, everything else safe by default.
pub(crate) fn extract_options(ctx: &StepContext<'_>) -> runwright_archive::ExtractOptions {
    runwright_archive::ExtractOptions {
        owner: ctx.owner,
        // As many entries as the runner would put in one archive (issue 17).
        max_entries: Some(ctx.runner.max_archive_files()),
        ..Default::default()
    }
}

/// Runs blocking archive work off the async threads, turning a panic into an error rather than a crash.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("internal error in an archive task: {e}")),
    }
}
