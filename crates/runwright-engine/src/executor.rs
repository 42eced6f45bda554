//! The seam between the job engine and the places a job runs (shell today, docker next): the engine generates
//! stage scripts, an executor runs them and streams their output into the trace.

use crate::variables::Variables;
use async_trait::async_trait;
use runwright_api::types::FeaturesInfo;
use runwright_api::types::JobResponse;
use runwright_trace::TraceBuffer;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecutorError {
    /// The stage was stopped because its cancellation token fired; the engine knows why.
    #[error("stage canceled")]
    Canceled,
    /// The executor itself failed (could not start a shell, lost its container, …): `runner_system_failure`.
    #[error("{0}")]
    System(String),
    /// Preparing failed for a reason GitLab classifies on its own (`image_pull_failure`,
    /// `runner_configuration_error`, …).
    #[error("{1}")]
    Failed(runwright_api::failure_reason::FailureReason, String),
}

/// What an executor needs to know about the job to prepare for it.
#[derive(Debug, Clone)]
pub struct PreparedJob {
    pub job_id: i64,
    pub project_dir: PathBuf,
    pub builds_dir: PathBuf,
    /// `<project dir>.tmp`.
    pub tmp_dir: PathBuf,
    /// The local cache directory as the job sees it.
    pub cache_dir: PathBuf,
    /// Marks every process of the job (exported as an environment variable), so stragglers that left the
    /// process group can still be found and killed.
    pub process_mark: String,
    /// The job as GitLab sent it (image, services, project and pipeline ids for names and labels).
    pub job: Arc<JobResponse>,
    /// Where the executor writes what it does before the first stage (pulls, services).
    pub trace: TraceBuffer,
    /// Fires when the job is canceled or times out while the executor prepares: it then releases what it
    /// made and returns `Canceled`.
    pub cancel: CancellationToken,
    /// The job's variables, expanded (service environments, image names).
    pub variables: Variables,
    /// `CI_CONCURRENT_ID`: the job's slot of its runner entry (the `${slot}` of `slot_cgroup_template`).
    pub concurrent_id: usize,
    /// `CI_CONCURRENT_PROJECT_ID`: the per-(runner, project) slot.
    pub concurrent_project_id: usize,
    /// The runner's system ID (`s_…`/`r_…`), part of GitLab's volume names.
    pub system_id: String,
    /// The job's feature flags as the engine resolved them (`[runners.feature_flags]` over the job's variables).
    pub feature_flags: crate::feature_flags::FeatureFlags,
}

#[async_trait]
pub trait Executor: Send + Sync {
    /// GitLab's executor name (`shell`, `docker`).
    fn name(&self) -> &str;
    /// The shell stage scripts are written for (`bash` or `sh`).
    fn shell(&self) -> &str;
    /// Sets the features this executor really supports (reference §1.1).
    fn features(&self, features: &mut FeaturesInfo);
    /// `CI_BUILDS_DIR` when `builds_dir` is not configured.
    fn default_builds_dir(&self) -> PathBuf;
    /// Whether several jobs share the builds dir, so the project dir needs `<short token>/<slot>/` (§7.4).
    fn builds_dir_shared(&self) -> bool;
    /// Whether `GIT_CLONE_PATH` is allowed when `[runners.custom_build_dir] enabled` is unset (runner
    /// executors `DefaultCustomBuildsDirEnabled`: on for docker, off for shell).
    fn default_custom_build_dir_enabled(&self) -> bool {
        false
    }
    /// Whether the project dir is added to git's `safe.directory` when `safe_directory_checkout` is unset
    /// (runner executors `DefaultSafeDirectoryCheckout`: on for docker, off for shell).
    fn default_safe_directory_checkout(&self) -> bool {
        false
    }
    /// The helper command the predefined stages call (`cache-extractor`, `artifacts-uploader`, …), unquoted:
    /// gitlab-runner's `RunnerCommand`. `gitlab-runner-helper` in a helper container; the shell executor runs
    /// the runner's own binary by its absolute path.
    fn helper_command(&self) -> String {
        "gitlab-runner-helper".to_string()
    }
    /// The local cache directory when `cache_dir` is unset, relative to the working directory
    /// (`protocol.md` §6.2: `<cwd>/cache` for the shell executor).
    fn default_cache_dir(&self) -> PathBuf {
        PathBuf::from("cache")
    }
    /// Variables the executor adds to the job's list, after the runner's own (`CI_BUILD_NETWORK_NAME`).
    fn job_variables(
        &self,
        _job: &JobResponse,
        _concurrent_project_id: usize,
    ) -> Vec<(String, String)> {
        Vec::new()
    }
    /// `CI_SHARED_ENVIRONMENT` (jobs share the machine) rather than `CI_DISPOSABLE_ENVIRONMENT`.
    fn shared_environment(&self) -> bool {
        true
    }
    /// The human line under "Preparing the … executor".
    fn description(&self) -> String;
    /// The host name jobs run on, when the executor knows it without running anything (the prepare stage
    /// then prints it directly instead of starting a shell).
    fn host_name(&self) -> Option<String> {
        None
    }
    async fn prepare(&self, job: &PreparedJob) -> Result<Box<dyn ExecutorSession>, ExecutorError>;
}

#[async_trait]
pub trait ExecutorSession: Send + Sync {
    /// Runs one stage script to completion (or until `cancel` fires: then the stage's processes are terminated
    /// and `Err(Canceled)` is returned). Output, stdout and stderr in their order, goes to `trace`.
    async fn run_stage(
        &mut self,
        stage: &str,
        script: &str,
        trace: &TraceBuffer,
        cancel: CancellationToken,
    ) -> Result<i32, ExecutorError>;

    /// The host name the job runs on, when the session knows it (the prepare stage prints it).
    fn host_name(&self) -> Option<String> {
        None
    }

    /// Releases what `prepare` made; kills anything of the job still running.
    async fn cleanup(&mut self);
}
