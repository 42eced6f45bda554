//! Wire types of GitLab's runner API (reference `protocol.md` §1–§3).
//!
//! Decoding follows Go's `encoding/json` as gitlab-runner uses it (runner common/spec/spec.go `Job`): a missing
//! key and a `null` both leave the zero value, unknown keys are ignored, and only a value of the wrong type is
//! an error. GitLab's Grape entities expose every unset attribute as `null` (its own request spec expects
//! `'alias' => nil`, `'variables' => nil`, …), so every field here is defaulted: `decode_job_response` drops
//! `null` members before the typed decode, and every list takes `null` items as the item's zero value
//! (`go_list`). The same types serve the client (runner side) and the coordinator, which writes GitLab's exact
//! shapes with its own entity code (runwright-coordinator `entities.rs`).
//!
//! Types that carry secrets (runner and job tokens, variable values, registry passwords, the job token in
//! `git_info.repo_url`) implement `Debug` by hand and print `[REDACTED]` instead.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `info` object sent with register, verify, jobs/request and job update (§1.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub executor: String,
    #[serde(default)]
    pub shell: String,
    #[serde(default)]
    pub features: FeaturesInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigInfo>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigInfo {
    #[serde(default)]
    pub gpus: String,
}

/// Feature flags advertised to GitLab. All keys are always sent (GitLab's runner does the same).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FeaturesInfo {
    pub variables: bool,
    pub image: bool,
    pub services: bool,
    pub artifacts: bool,
    pub cache: bool,
    pub fallback_cache_keys: bool,
    pub shared: bool,
    pub upload_multiple_artifacts: bool,
    pub upload_raw_artifacts: bool,
    pub session: bool,
    pub terminal: bool,
    pub refspecs: bool,
    pub masking: bool,
    pub proxy: bool,
    pub raw_variables: bool,
    pub artifacts_exclude: bool,
    pub multi_build_steps: bool,
    pub trace_reset: bool,
    pub trace_checksum: bool,
    pub trace_size: bool,
    pub vault_secrets: bool,
    pub cancelable: bool,
    pub return_exit_code: bool,
    pub service_variables: bool,
    pub service_multiple_aliases: bool,
    pub image_executor_opts: bool,
    pub service_executor_opts: bool,
    pub cancel_gracefully: bool,
    pub native_steps_integration: bool,
    pub two_phase_job_commit: bool,
    pub job_inputs: bool,
}

/// Body of `POST /api/v4/jobs/request` (§2.1).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRequest {
    pub token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<String>,
    #[serde(default)]
    pub info: VersionInfo,
}

/// A job as GitLab hands it out (201 body of jobs/request, §2.5; runner common/spec/spec.go `Job`).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JobResponse {
    pub id: i64,
    pub token: String,
    pub allow_git_fetch: bool,
    pub job_info: JobInfo,
    pub git_info: GitInfo,
    pub runner_info: RunnerInfo,
    #[serde(deserialize_with = "go_list")]
    pub variables: Vec<JobVariable>,
    #[serde(deserialize_with = "go_list")]
    pub steps: Vec<Step>,
    #[serde(deserialize_with = "go_list")]
    pub hooks: Vec<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(deserialize_with = "go_list")]
    pub services: Vec<Image>,
    #[serde(deserialize_with = "go_list")]
    pub artifacts: Vec<Artifact>,
    #[serde(deserialize_with = "go_list")]
    pub cache: Vec<Cache>,
    #[serde(deserialize_with = "go_list")]
    pub credentials: Vec<Credentials>,
    #[serde(deserialize_with = "go_list")]
    pub dependencies: Vec<Dependency>,
    pub features: GitlabFeatures,
    /// CI Steps (`run:` in the job): GitLab sends them as a JSON **string** holding the steps array, and then
    /// no `steps` (gitlab lib/api/entities/ci/job_request/response.rb `expose :run`; runner spec.go
    /// `Run.UnmarshalJSON`).
    #[serde(skip_serializing_if = "RunSteps::is_empty")]
    pub run: RunSteps,
    /// Not on the wire: what the client that received the job adds for the job's own TLS connections (runner
    /// common/spec/spec.go `Job.TLSData`, `json:"-"`).
    #[serde(skip)]
    pub tls_data: crate::TlsData,
}

/// `null` as the zero value, as Go's `encoding/json` leaves it (for fields decoded outside
/// `decode_job_response`'s null pass, e.g. by the coordinator).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON list as Go decodes it into a slice: `null` is an empty list and a `null` item is the item's zero
/// value (`["a", null]` → `["a", ""]`).
pub(crate) fn go_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    let items = Option::<Vec<Option<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(items.into_iter().map(Option::unwrap_or_default).collect())
}

/// The `run` steps of a CI Steps job: a JSON array of step objects that GitLab sends encoded in a string.
/// Kept as JSON: runwright hands them to GitLab's `step-runner` unchanged (runner spec.go
/// `ValidateStepsJobRequest`), it does not interpret them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSteps(pub Vec<serde_json::Value>);

impl RunSteps {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps as the JSON text `step-runner ci` reads from `STEPS` (runner: `json.Marshal(j.Run)`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_string())
    }
}

impl Serialize for RunSteps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_json())
    }
}

impl<'de> Deserialize<'de> for RunSteps {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(RunSteps::default());
        };
        // Go decodes the string into `[]schema.Step`: a list of objects, or the payload cannot be read. The
        // message never quotes the text (it could hold a secret).
        let steps: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            D::Error::custom(format!(
                "`run` is not a JSON list of steps (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if steps.iter().any(|s| !s.is_object()) {
            return Err(D::Error::custom("`run` holds a step that is not an object"));
        }
        Ok(RunSteps(steps))
    }
}

/// gitlab lib/api/entities/ci/job_request/job_info.rb; runner spec.go `JobInfo`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JobInfo {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub project_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub project_full_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_namespace_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scoped_user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_in_queue_seconds: Option<f64>,
    /// `"+Inf"`, a count, or `"<max>+"` — a string in GitLab's presenter and in runner's `JobInfo`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub project_jobs_running_on_instance_runners_count: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GitInfo {
    pub repo_url: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
    pub before_sha: String,
    pub ref_type: String,
    #[serde(deserialize_with = "go_list")]
    pub refspecs: Vec<String>,
    pub depth: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repo_object_format: String,
    pub protected: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunnerInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// Job timeout in seconds; 0 (also GitLab's `null` while a two-phase-commit job waits for its
    /// acknowledgement: `metadata_timeout` is set when it starts running) means the default of 7200 (§7.6).
    pub timeout: i64,
    /// GitLab sends `null` when the job has no session (`expose :runner_session_url`).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub runner_session_url: String,
}

/// One job variable (§2.5). `file` and `raw` are absent when false. GitLab sends `"value": null` for a
/// variable built from an unset attribute — `CI_JOB_STARTED_AT` while a two-phase-commit job is still pending
/// (gitlab app/models/ci/build.rb `started_at&.iso8601`): the empty string, as in Go.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JobVariable {
    pub key: String,
    pub value: String,
    pub public: bool,
    pub masked: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    #[serde(skip_serializing)]
    pub internal: bool,
}

/// gitlab step.rb entity (`name, script, timeout, when, allow_failure`); `timeout` is the job's
/// `metadata_timeout`, `null` until the job runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Step {
    pub name: String,
    #[serde(deserialize_with = "go_list")]
    pub script: Vec<String>,
    pub timeout: i64,
    pub when: String,
    pub allow_failure: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hook {
    pub name: String,
    #[serde(deserialize_with = "go_list")]
    pub script: Vec<String>,
}

/// The job's `image` and each of its `services` (gitlab image.rb and service.rb entities; runner spec.go
/// `Image`). GitLab sends `null` for each attribute a service or image does not set: `alias`, `command`,
/// `entrypoint`, `variables`, `pull_policy` of `services: [postgres:16]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Image {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(deserialize_with = "go_list")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "go_list")]
    pub variables: Vec<JobVariable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_opts: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Port {
    pub number: i64,
    pub protocol: String,
    pub name: String,
}

/// GitLab's presenter fills the archive entry straight from the job's `artifacts:` keys, so any of them may be
/// `null` (gitlab app/presenters/ci/build_runner_presenter.rb `create_archive`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Artifact {
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub untracked: bool,
    #[serde(deserialize_with = "go_list")]
    pub paths: Vec<String>,
    #[serde(deserialize_with = "go_list")]
    pub exclude: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub when: String,
    #[serde(deserialize_with = "null_as_default")]
    pub expire_in: String,
    #[serde(deserialize_with = "null_as_default")]
    pub artifact_type: String,
    #[serde(deserialize_with = "null_as_default")]
    pub artifact_format: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cache {
    pub key: String,
    pub untracked: bool,
    #[serde(deserialize_with = "go_list")]
    pub paths: Vec<String>,
    pub policy: String,
    pub when: String,
    #[serde(deserialize_with = "go_list")]
    pub fallback_keys: Vec<String>,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Credentials {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub username: String,
    pub password: String,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Dependency {
    pub id: i64,
    pub name: String,
    pub token: String,
    pub artifacts_file: Option<DependencyArtifactsFile>,
}

impl Dependency {
    /// Whether the dependency has artifacts to download (runner shells/abstract.go `jobArtifacts`: a
    /// non-empty `artifacts_file.filename`).
    pub fn has_artifacts(&self) -> bool {
        self.artifacts_file
            .as_ref()
            .is_some_and(|f| !f.filename.is_empty())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DependencyArtifactsFile {
    pub filename: String,
    pub size: i64,
}

/// `features` of the job payload: what GitLab itself supports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GitlabFeatures {
    pub trace_sections: bool,
    #[serde(deserialize_with = "go_list")]
    pub failure_reasons: Vec<String>,
    #[serde(deserialize_with = "go_list", skip_serializing_if = "Vec::is_empty")]
    pub token_mask_prefixes: Vec<String>,
}

/// Body of `PUT /api/v4/jobs/:id` (§3).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpdateJobRequest {
    #[serde(default)]
    pub info: VersionInfo,
    pub token: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JobTraceOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobTraceOutput {
    pub checksum: String,
    pub bytesize: u64,
}

/// Final state of a job as sent in `PUT /jobs/:id` (runner common/network.go `JobState`; `running` is only
/// sent as acknowledgment and keep-alive, see [`STATE_RUNNING`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Success,
    Failed,
}

impl JobState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Success => "success",
            JobState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `state` of the two-phase-commit acknowledgment and of keep-alive updates.
pub const STATE_RUNNING: &str = "running";

const REDACTED: &str = "[REDACTED]";

/// Shows whether a secret is set without showing it.
fn secret(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        REDACTED
    }
}

impl std::fmt::Debug for JobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRequest")
            .field("token", &secret(&self.token))
            .field("system_id", &self.system_id)
            .field("last_update", &self.last_update)
            .field("info", &self.info)
            .finish()
    }
}

impl std::fmt::Debug for JobResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobResponse")
            .field("id", &self.id)
            .field("token", &secret(&self.token))
            .field("allow_git_fetch", &self.allow_git_fetch)
            .field("job_info", &self.job_info)
            .field("git_info", &self.git_info)
            .field("runner_info", &self.runner_info)
            .field("variables", &self.variables)
            .field("steps", &self.steps)
            .field("hooks", &self.hooks)
            .field("image", &self.image)
            .field("services", &self.services)
            .field("artifacts", &self.artifacts)
            .field("cache", &self.cache)
            .field("credentials", &self.credentials)
            .field("dependencies", &self.dependencies)
            .field("features", &self.features)
            .field("run", &self.run)
            .field("tls_data", &self.tls_data)
            .finish()
    }
}

impl std::fmt::Debug for GitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitInfo")
            .field("repo_url", &crate::redact::url_str(&self.repo_url))
            .field("ref_name", &self.ref_name)
            .field("sha", &self.sha)
            .field("before_sha", &self.before_sha)
            .field("ref_type", &self.ref_type)
            .field("refspecs", &self.refspecs)
            .field("depth", &self.depth)
            .field("repo_object_format", &self.repo_object_format)
            .field("protected", &self.protected)
            .finish()
    }
}

impl std::fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only public, unmasked values are safe to show.
        let value: &str = if self.public && !self.masked {
            &self.value
        } else {
            secret(&self.value)
        };
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("value", &value)
            .field("public", &self.public)
            .field("masked", &self.masked)
            .field("file", &self.file)
            .field("raw", &self.raw)
            .field("internal", &self.internal)
            .finish()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .finish()
    }
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &secret(&self.token))
            .field("artifacts_file", &self.artifacts_file)
            .finish()
    }
}

impl std::fmt::Debug for UpdateJobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateJobRequest")
            .field("info", &self.info)
            .field("token", &secret(&self.token))
            .field("state", &self.state)
            .field("failure_reason", &self.failure_reason)
            .field("checksum", &self.checksum)
            .field("output", &self.output)
            .field("exit_code", &self.exit_code)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_reference_payload_with_nulls_and_unknown_keys() {
        let json = r#"{"id":4711,"token":"glcbt-abc","allow_git_fetch":true,
          "job_info":{"id":4711,"name":"test","stage":"test","pipeline_id":9,"project_id":42,
             "project_name":"app","project_jobs_running_on_instance_runners_count":"+Inf","queue_size":3},
          "git_info":{"repo_url":"https://x/y.git","ref":"main","sha":"a","before_sha":"b","ref_type":"branch",
             "refspecs":null,"depth":20,"protected":true},
          "runner_info":{"timeout":3600},
          "variables":[{"key":"A","value":"1","public":true,"masked":false},
                       {"key":"S","value":"s","public":false,"masked":true,"file":true,"raw":true}],
          "steps":[{"name":"script","script":["echo hi"],"timeout":3600,"when":"on_success","allow_failure":false}],
          "image":null,"services":null,"artifacts":null,"cache":null,"dependencies":null,
          "features":{"trace_sections":true,"failure_reasons":["script_failure"]},"future_key":{"x":1}}"#;
        let job: JobResponse = serde_json::from_str(json).expect("decodes");
        assert_eq!(job.id, 4711);
        assert_eq!(job.git_info.ref_name, "main");
        assert!(job.variables[1].file && job.variables[1].raw);
        assert!(job.git_info.refspecs.is_empty());
        let back = serde_json::to_value(&job.variables[0]).expect("encodes");
        assert!(back.get("file").is_none(), "file absent when false");
    }

    #[test]
    fn decodes_nulls_gitlab_sends_for_unset_session_and_artifact_keys() {
        // Shapes of gitlab-runner-mock's payload, which follow GitLab's entities: no session ⇒ null URL; an
        // `artifacts: paths:` entry without name/when/expire_in/untracked ⇒ nulls.
        let json = r#"{"id":1,"token":"t","runner_info":{"timeout":3600,"runner_session_url":null},
          "artifacts":[{"name":null,"untracked":null,"paths":["out/"],"when":null,"expire_in":null,
                        "artifact_type":"archive","artifact_format":null}]}"#;
        let job: JobResponse = serde_json::from_str(json).expect("decodes");
        assert_eq!(job.runner_info.timeout, 3600);
        assert!(job.runner_info.runner_session_url.is_empty());
        let a = &job.artifacts[0];
        assert_eq!(
            (a.name.as_str(), a.untracked, a.when.as_str()),
            ("", false, "")
        );
        assert_eq!(a.paths, vec!["out/".to_string()]);
        assert_eq!(a.artifact_type, "archive");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let json = r#"{"id":1,"token":"glcbt-SECRET1",
          "git_info":{"repo_url":"https://gitlab-ci-token:glcbt-SECRET1@host/g/p.git"},
          "variables":[{"key":"PUB","value":"visible","public":true,"masked":false},
                       {"key":"M","value":"SECRET2","public":true,"masked":true},
                       {"key":"P","value":"SECRET3","public":false,"masked":false}],
          "credentials":[{"type":"registry","url":"r","username":"u","password":"SECRET4"}],
          "dependencies":[{"id":2,"name":"b","token":"SECRET5"}]}"#;
        let job: JobResponse = serde_json::from_str(json).expect("decodes");
        let shown = format!("{job:?}");
        for s in ["SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"] {
            assert!(!shown.contains(s), "{s} leaked: {shown}");
        }
        assert!(shown.contains("visible"));
        let req = JobRequest {
            token: "glrt-SECRET6".into(),
            system_id: "s_1".into(),
            last_update: None,
            info: VersionInfo::default(),
        };
        assert!(!format!("{req:?}").contains("SECRET6"));
        let upd = UpdateJobRequest {
            token: "glcbt-SECRET7".into(),
            ..Default::default()
        };
        assert!(!format!("{upd:?}").contains("SECRET7"));
    }
}
