//! What a test (or the local-pipeline mode) enqueues — [`JobSpec`] — and what the coordinator records about a
//! job as runners work on it — [`JobRecord`].

use crate::server::artifacts::StoredArtifact;
use runwright_api::types::{
    Artifact, Cache, Credentials, Dependency, Hook, Image, JobVariable, UpdateJobRequest,
};

/// The project a job belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSpec {
    /// GitLab project id (`CI_PROJECT_ID`).
    pub id: i64,
    /// Full path, e.g. `grp/app` (`CI_PROJECT_PATH`); the clone URL is `<coordinator>/<full_path>.git`.
    pub full_path: String,
    /// Bare repository under the coordinator's `git_root`; `None` means `<full_path>.git`.
    pub repo: Option<String>,
    /// Other projects (full paths) whose repositories this project's job tokens may clone — GitLab's job token
    /// allowlist seen from the other side. A job token always reaches its own project.
    pub token_access: Vec<String>,
    /// `CI_DEFAULT_BRANCH`.
    pub default_branch: String,
}

impl ProjectSpec {
    /// A project with GitLab-like defaults (`main` as default branch, repo `<full_path>.git`).
    pub fn new(id: i64, full_path: &str) -> Self {
        ProjectSpec {
            id,
            full_path: full_path.to_string(),
            repo: None,
            token_access: Vec::new(),
            default_branch: "main".to_string(),
        }
    }

    /// The project's name: last path segment (`CI_PROJECT_NAME`).
    pub fn name(&self) -> &str {
        self.full_path.rsplit('/').next().unwrap_or(&self.full_path)
    }

    /// The namespace: everything before the last segment (`CI_PROJECT_NAMESPACE`).
    pub fn namespace(&self) -> &str {
        self.full_path.rsplit_once('/').map_or("", |(ns, _)| ns)
    }

    /// Directory of the bare repository relative to `git_root`.
    pub fn repo_dir(&self) -> String {
        self.repo
            .clone()
            .unwrap_or_else(|| format!("{}.git", self.full_path))
    }
}

impl Default for ProjectSpec {
    fn default() -> Self {
        ProjectSpec::new(1, "grp/app")
    }
}

/// A placeholder commit sha for jobs that never fetch sources.
pub const DUMMY_SHA: &str = "1111111111111111111111111111111111111111";

/// One job to hand out. Field names follow `.gitlab-ci.yml`; the coordinator turns them into the runner payload
/// the way GitLab does (gitlab lib/api/entities/ci/job_request/response.rb, app/presenters/ci/
/// build_runner_presenter.rb, lib/gitlab/ci/build/step.rb).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub stage: String,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// User variables (after the predefined ones in the payload, so they override them runner-side).
    pub variables: Vec<JobVariable>,
    /// Job timeout in seconds (`runner_info.timeout` and each step's timeout).
    pub timeout: i64,
    pub project: ProjectSpec,
    pub git_ref: String,
    /// `git_ref` is a tag rather than a branch (`ref_type`, refspecs, `CI_COMMIT_TAG`).
    pub tag: bool,
    /// Whether the ref is protected (`git_info.protected`, `CI_COMMIT_REF_PROTECTED`).
    pub protected: bool,
    /// A (detached) merge request pipeline of merge request `!iid`, whose source branch is `git_ref`: the
    /// job's ref is `refs/merge-requests/<iid>/head` (`git_info.ref`, created in the served repository),
    /// fetched through the persistent pipeline ref alone; `CI_COMMIT_REF_NAME` is the source branch and there
    /// is no `CI_COMMIT_BRANCH` (gitlab app/presenters/ci/build_runner_presenter.rb `refspecs`,
    /// app/models/ci/pipeline.rb `source_ref`).
    pub merge_request_iid: Option<i64>,
    pub sha: String,
    pub before_sha: String,
    /// Project default git depth; a `GIT_DEPTH` variable overrides it, as in GitLab.
    pub depth: i64,
    pub allow_git_fetch: bool,
    /// Only the runner with this token may take the job.
    pub runner_token: Option<String>,
    /// Pipeline id (`CI_PIPELINE_ID`, `refs/pipelines/<id>`); `None` allocates a new one.
    pub pipeline_id: Option<i64>,
    pub hooks: Vec<Hook>,
    pub artifacts: Vec<Artifact>,
    pub cache: Vec<Cache>,
    pub dependencies: Vec<Dependency>,
    /// Ids of earlier jobs whose artifacts this job downloads: each becomes a `dependencies` entry after the
    /// ones of [`JobSpec::dependencies`], built when the job is handed out (name, the running job's own
    /// token, and `artifacts_file` if that job has uploaded an `archive` by then).
    pub artifact_dependencies: Vec<i64>,
    pub image: Option<Image>,
    pub services: Vec<Image>,
    pub credentials: Vec<Credentials>,
    /// Runner features (`info.features` keys) the job needs; a runner lacking one makes GitLab drop the job
    /// with `runner_unsupported` (gitlab app/services/ci/register_job_service.rb, app/models/ci/build.rb
    /// `RUNNER_FEATURES`).
    pub required_features: Vec<String>,
    /// CI Steps (`run:`): the job is handed out with `run` (the steps as a JSON string) and without `steps`, as
    /// GitLab does (gitlab lib/api/entities/ci/job_request/response.rb).
    pub run: Option<Vec<serde_json::Value>>,
    /// Hand the job out with `runner_info.timeout` and the steps' `timeout` `null`, as GitLab presents a job
    /// whose `metadata_timeout` is not set yet (a two-phase-commit job before its acknowledgement, GitLab MR
    /// !214370); the runner then applies its default timeout.
    pub null_timeouts: bool,
    /// RFC 7386 JSON merge patch applied to the payload GitLab would send (to tweak single fields).
    pub payload_merge: Option<serde_json::Value>,
    /// Send exactly these bytes as the 201 body instead of GitLab's payload (malformed-payload tests).
    /// `{{JOB_ID}}`, `{{JOB_TOKEN}}` and `{{COORDINATOR_URL}}` are replaced first.
    pub raw_payload: Option<String>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            name: "test".to_string(),
            stage: "test".to_string(),
            before_script: Vec::new(),
            script: Vec::new(),
            after_script: Vec::new(),
            variables: Vec::new(),
            timeout: 3600,
            project: ProjectSpec::default(),
            git_ref: "main".to_string(),
            tag: false,
            protected: false,
            merge_request_iid: None,
            sha: DUMMY_SHA.to_string(),
            before_sha: "0000000000000000000000000000000000000000".to_string(),
            depth: 20,
            allow_git_fetch: true,
            runner_token: None,
            pipeline_id: None,
            hooks: Vec::new(),
            artifacts: Vec::new(),
            cache: Vec::new(),
            dependencies: Vec::new(),
            artifact_dependencies: Vec::new(),
            image: None,
            services: Vec::new(),
            credentials: Vec::new(),
            required_features: Vec::new(),
            run: None,
            null_timeouts: false,
            payload_merge: None,
            raw_payload: None,
        }
    }
}

impl JobSpec {
    /// A shell job: `script` only, `GIT_STRATEGY=none` so nothing is fetched.
    pub fn shell(name: &str, script: &[&str]) -> Self {
        JobSpec {
            name: name.to_string(),
            script: script.iter().map(|s| s.to_string()).collect(),
            variables: vec![variable("GIT_STRATEGY", "none")],
            ..JobSpec::default()
        }
    }

    /// A job whose 201 body is exactly `raw` (after placeholder replacement, see [`JobSpec::raw_payload`]).
    pub fn raw(name: &str, raw: &str) -> Self {
        JobSpec {
            name: name.to_string(),
            raw_payload: Some(raw.to_string()),
            ..JobSpec::default()
        }
    }

    /// Add a public, unmasked variable.
    pub fn with_variable(mut self, key: &str, value: &str) -> Self {
        self.variables.push(variable(key, value));
        self
    }

    /// Restrict the job to one runner.
    pub fn for_runner(mut self, token: &str) -> Self {
        self.runner_token = Some(token.to_string());
        self
    }
}

/// A public, unmasked variable as GitLab sends it (`{"key","value","public":true,"masked":false}`).
pub fn variable(key: &str, value: &str) -> JobVariable {
    JobVariable {
        key: key.to_string(),
        value: value.to_string(),
        public: true,
        masked: false,
        ..JobVariable::default()
    }
}

/// A masked project variable as GitLab sends it (`"public":false,"masked":true`).
pub fn masked_variable(key: &str, value: &str) -> JobVariable {
    JobVariable {
        public: false,
        masked: true,
        ..variable(key, value)
    }
}

/// GitLab's job statuses as far as the runner API shows them (`Job-Status` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Running,
    Canceling,
    Canceled,
    Success,
    Failed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Canceling => "canceling",
            Status::Canceled => "canceled",
            Status::Success => "success",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn is_final(self) -> bool {
        matches!(self, Status::Canceled | Status::Success | Status::Failed)
    }

    /// `Ci::HasStatus::EXECUTING_STATUSES` (running, canceling).
    pub(crate) fn is_executing(self) -> bool {
        matches!(self, Status::Running | Status::Canceling)
    }
}

/// What the coordinator knows about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: i64,
    pub name: String,
    /// The job token (`glcbt-…`).
    pub token: String,
    pub pipeline_id: i64,
    /// `pending`, `running`, `canceling`, `canceled`, `success` or `failed`.
    pub state: String,
    /// Handed out to a runner that advertised `two_phase_job_commit` and not yet acknowledged with
    /// `state=running` (GitLab keeps such a job `pending`).
    pub waiting_for_ack: bool,
    /// GitLab's failure reason after mapping (unknown names become `unknown_failure`).
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The stored trace.
    pub trace: Vec<u8>,
    /// Accepted trace patches: (start offset, length).
    pub patches: Vec<(u64, usize)>,
    /// Stored lengths an injected `Fault::RangeMismatch` truncated the trace to (feature `faults`).
    pub range_truncations: Vec<u64>,
    /// The job's log is a debug log: a trace patch at offset 0 said `debug_trace=true` (GitLab's
    /// `Ci::Build#append_trace` → `enable_debug_trace!`).
    pub debug_trace: bool,
    /// Every authenticated `PUT /jobs/:id` body, in order.
    pub updates: Vec<UpdateJobRequest>,
    /// Whether the checksum (and bytesize, if sent) of the accepted final update matched the stored trace;
    /// `None` if the final update carried no checksum (or there was none yet).
    pub final_checksum_ok: Option<bool>,
    /// How many times a final update was answered `202 Accepted`.
    pub accepted_202: u32,
    /// Token of the runner the job was handed to.
    pub runner_token: Option<String>,
    /// `system_id` of the request that took the job.
    pub system_id: Option<String>,
    /// The runner advertised `cancel_gracefully` when it took the job.
    pub cancel_gracefully: bool,
    /// The 201 body sent to the runner.
    pub payload: Option<Vec<u8>>,
    /// Artifacts uploaded for this job, in upload order (at most one per `artifact_type`).
    pub artifacts: Vec<StoredArtifact>,
}

impl JobRecord {
    /// The trace as GitLab's log viewer reads it (lossy): the per-line timestamps of `FF_TIMESTAMPS` dropped and
    /// continued lines joined ([`runwright_trace::timestamp::strip`]); a trace without them as it is.
    pub fn trace_text(&self) -> String {
        String::from_utf8_lossy(&runwright_trace::timestamp::strip(&self.trace)).into_owned()
    }

    /// The stored trace as text (lossy), timestamps and all.
    pub fn raw_trace_text(&self) -> String {
        String::from_utf8_lossy(&self.trace).into_owned()
    }

    /// The job reached `success`, `failed` or `canceled`.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failed" | "canceled")
    }

    /// The payload as JSON (if it was valid JSON).
    pub fn payload_json(&self) -> Option<serde_json::Value> {
        self.payload
            .as_deref()
            .and_then(|p| serde_json::from_slice(p).ok())
    }
}
