//! Pluggable stages around the user script: restore cache and download artifacts before it, save cache and
//! upload artifacts after it (reference `protocol.md` §7.1 rows 4, 5, 8, 9). A step *writes* its stage's script,
//! as gitlab-runner's `shells/abstract.go` does (`writeRestoreCacheScript`, `writeDownloadArtifactsScript`,
//! `writeArchiveCacheOnSuccessScript`, `writeUploadArtifactsOnSuccessScript`, …): the script calls the helper
//! command (`gitlab-runner-helper cache-extractor …`) and runs where the job's stages run, as the job's user, so
//! the runner process never opens a file of the job. The engine knows where the stages go and how their failures
//! count; `runwright-transfer` implements GitLab's four and the service hands them to the engine
//! (`JobEnv::steps`).

use crate::feature_flags::FeatureFlags;
use crate::script::ScriptWriter;
use crate::variables::Variables;
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::JobResponse;
use runwright_config::RunnerConfig;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPosition {
    /// After get_sources, before the user script.
    BeforeScript,
    /// After after_script.
    AfterScript,
}

/// What a step knows when it writes its stage. Every path is the job's own (as its stages see it), never one
/// of the runner's.
pub struct StepContext<'a> {
    pub job: &'a JobResponse,
    pub runner: &'a RunnerConfig,
    pub project_dir: &'a Path,
    /// `<project dir>.tmp`: where file variables are written, and a scratch place for archives.
    pub tmp_dir: &'a Path,
    /// The local cache directory as the job sees it (`cache_dir` or the executor's default).
    pub cache_dir: &'a Path,
    /// `GIT_STRATEGY=empty` (the cache's project slug gets `-empty`, as the builds dir does).
    pub empty_strategy: bool,
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
    /// The helper command the stage calls, as a program name or absolute path (unquoted): gitlab-runner's
    /// `RunnerCommand` (see `Executor::helper_command`).
    pub helper: &'a str,
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
}

/// A step's failure as the job ends with it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub reason: FailureReason,
    pub message: String,
    /// The exit code GitLab gets with the failure: a failing helper exits 1 (`logrus.Fatalln`), which the stage
    /// reports as the script's exit code.
    pub exit_code: Option<i32>,
}

/// A step's stage: its section (name, title) and the commands the engine puts after the job's exports and the
/// `cd` into the project directory (gitlab-runner `writeExports` + `writeCdBuildDir`).
#[derive(Debug, Clone)]
pub struct StepStage {
    pub name: String,
    pub title: String,
}

#[async_trait]
pub trait JobStep: Send + Sync {
    fn position(&self) -> StepPosition;

    /// Writes the stage's commands into `w`. `Ok(None)` when the job has nothing for this step: no section, no
    /// stage (gitlab-runner `ErrSkipBuildStage`). `Err` fails the job without running anything (gitlab-runner:
    /// an error from the script writer, such as an unknown `cache:policy`).
    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError>;

    /// How often the stage is tried while it fails (gitlab-runner `attemptExecuteStage` with
    /// `RESTORE_CACHE_ATTEMPTS` / `ARTIFACT_DOWNLOAD_ATTEMPTS`).
    fn attempts(&self, _ctx: &StepContext<'_>) -> u32 {
        1
    }

    /// Whether a failing stage fails the job (artifacts: yes; caches only warn, their scripts guard every
    /// helper call).
    fn fails_job(&self) -> bool {
        true
    }

    /// Whether [`JobStep::observe`] wants the stage's output (read back from the trace only then).
    fn observes_output(&self) -> bool {
        false
    }

    /// Told what the stage wrote to the job log once it ended (masked, as GitLab got it), for what the step
    /// counts (cache hits).
    fn observe(&self, _ctx: &StepContext<'_>, _output: &str) {}
}
