//! The 201 body of `POST /jobs/request`, assembled the way GitLab assembles it: gitlab
//! lib/api/entities/ci/job_request/response.rb (+ job_info.rb, git_info.rb, runner_info.rb, step.rb),
//! app/presenters/ci/build_runner_presenter.rb (refspecs, depth, variables), lib/gitlab/ci/build/step.rb
//! (steps), app/models/ci/build.rb (`persisted_variables`, `features`) and
//! app/models/concerns/enums/ci/commit_status.rb (the failure reasons GitLab advertises).

use crate::entities;
use crate::jobs::JobSpec;
use crate::server::artifacts::DependencySource;
use crate::state::{Job, Runner};
use runwright_api::types::{GitInfo, JobInfo, JobVariable, RunnerInfo, Step};
use serde_json::{json, Value};
use std::collections::HashMap;

/// `Enums::Ci::CommitStatus.failure_reasons.keys` of current GitLab, in enum order; sent as
/// `features.failure_reasons`.
pub const GITLAB_FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "job_execution_server_timeout",
    "stuck_pending_with_matching_runners",
    "stuck_pending_no_matching_runners",
    "no_updates_running",
    "no_updates_canceling",
    "server_timeout_running",
    "server_timeout_canceling",
    "runner_configuration_error",
    "runner_external_dependency_failure",
    "runner_interrupted",
    "protected_environment_failure",
    "insufficient_bridge_permissions",
    "downstream_bridge_project_not_found",
    "invalid_bridge_trigger",
    "upstream_bridge_project_not_found",
    "insufficient_upstream_permissions",
    "bridge_pipeline_is_child_pipeline",
    "downstream_pipeline_creation_failed",
    "secrets_provider_not_found",
    "reached_max_descendant_pipelines_depth",
    "ip_restriction_failure",
    "reached_max_pipeline_hierarchy_size",
    "reached_downstream_pipeline_trigger_rate_limit",
    "duo_workflow_not_allowed",
    "job_router_failure",
    "job_token_expired",
    "id_token_burned_project_path",
    "downstream_project_trigger_resolved_to_empty",
];

/// GitLab's version string the coordinator claims (`CI_SERVER_VERSION`).
pub const SERVER_VERSION: &str = "18.6.0";

/// Everything the payload needs besides the job itself.
pub(crate) struct PayloadContext<'a> {
    /// `http://127.0.0.1:PORT/`
    pub base_url: &'a str,
    /// `127.0.0.1:PORT`
    pub host_port: &'a str,
    pub runner: &'a Runner,
    /// The jobs named in `artifact_dependencies` of queued jobs (`artifacts::dependency_sources`).
    pub artifact_sources: &'a HashMap<i64, DependencySource>,
    /// The served repository's object format (`sha1`, `sha256`): `git_info.repo_object_format`.
    pub object_format: &'a str,
}

fn var(key: &str, value: impl Into<String>) -> JobVariable {
    crate::jobs::variable(key, &value.into())
}

fn secret(key: &str, value: &str) -> JobVariable {
    crate::jobs::masked_variable(key, value)
}

/// GitLab's `ref_slug`: lower-case, every non `[a-z0-9]` becomes `-`, at most 63 chars, no leading/trailing
/// `-` (gitlab lib/gitlab/utils.rb `slugify`).
pub(crate) fn slugify(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    lower.trim_matches('-').to_string()
}

/// The clone URL with job token credentials (gitlab app/models/ci/build.rb `repo_url`).
pub(crate) fn repo_url(base_url: &str, base_host: &str, full_path: &str, token: &str) -> String {
    let scheme = protocol(base_url);
    format!("{scheme}://gitlab-ci-token:{token}@{base_host}/{full_path}.git")
}

/// `http` or `https`, as the coordinator serves (`CI_SERVER_PROTOCOL`).
fn protocol(base_url: &str) -> &'static str {
    if base_url.starts_with("https://") {
        "https"
    } else {
        "http"
    }
}

/// `git_depth`: the `GIT_DEPTH` variable if set (last one wins), else the project default
/// (build_runner_presenter.rb `git_depth`).
pub(crate) fn git_depth(spec: &JobSpec) -> i64 {
    spec.variables
        .iter()
        .rev()
        .find(|v| v.key == "GIT_DEPTH")
        .and_then(|v| v.value.trim().parse::<i64>().ok())
        .unwrap_or(spec.depth)
}

/// build_runner_presenter.rb `refspecs`: the persistent pipeline ref, then with depth > 0 only the job's
/// branch or tag (neither for a merge request pipeline: its commit comes with the persistent ref), else every
/// branch and tag.
pub(crate) fn refspecs(spec: &JobSpec, pipeline_id: i64) -> Vec<String> {
    let persistent = format!("refs/pipelines/{pipeline_id}");
    let mut specs = vec![format!("+{persistent}:{persistent}")];
    if git_depth(spec) > 0 {
        if spec.tag {
            specs.push(format!("+refs/tags/{r}:refs/tags/{r}", r = spec.git_ref));
        } else if spec.merge_request_iid.is_none() {
            specs.push(format!(
                "+refs/heads/{r}:refs/remotes/origin/{r}",
                r = spec.git_ref
            ));
        }
    } else {
        specs.push("+refs/heads/*:refs/remotes/origin/*".to_string());
        specs.push("+refs/tags/*:refs/tags/*".to_string());
    }
    specs
}

/// `refs/merge-requests/<iid>/head`: where GitLab keeps a merge request's source commit.
pub(crate) fn merge_request_ref(iid: i64) -> String {
    format!("refs/merge-requests/{iid}/head")
}

/// Predefined variables in GitLab's order (`persisted_variables` first, then the predefined/scoped ones),
/// followed by the job's own variables.
fn variables(job: &Job, ctx: &PayloadContext<'_>, repo: &str) -> Vec<JobVariable> {
    let spec = &job.spec;
    let rec = &job.record;
    let project = &spec.project;
    let base = ctx.base_url.trim_end_matches('/');
    let project_url = format!("{base}/{}", project.full_path);
    let scheme = protocol(ctx.base_url);
    let default_port = if scheme == "https" { "443" } else { "80" };
    let (host, port) = ctx
        .host_port
        .rsplit_once(':')
        .unwrap_or((ctx.host_port, default_port));
    let mut v = vec![
        var("CI_PIPELINE_ID", rec.pipeline_id.to_string()),
        var(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", rec.pipeline_id),
        ),
        var("CI_JOB_ID", rec.id.to_string()),
        var("CI_JOB_URL", format!("{project_url}/-/jobs/{}", rec.id)),
        secret("CI_JOB_TOKEN", &rec.token),
        var("CI_JOB_STARTED_AT", ""),
        var("CI_REGISTRY_USER", "gitlab-ci-token"),
        secret("CI_REGISTRY_PASSWORD", &rec.token),
        JobVariable {
            key: "CI_REPOSITORY_URL".to_string(),
            value: repo.to_string(),
            public: false,
            masked: false,
            ..JobVariable::default()
        },
        var("CI", "true"),
        var("GITLAB_CI", "true"),
        var("CI_SERVER_FQDN", ctx.host_port),
        var("CI_SERVER_URL", base),
        var("CI_SERVER_HOST", host),
        var("CI_SERVER_PORT", port),
        var("CI_SERVER_PROTOCOL", scheme),
        var("CI_SERVER_NAME", "GitLab"),
        var("CI_SERVER_VERSION", SERVER_VERSION),
        var("GITLAB_FEATURES", ""),
        var("CI_JOB_NAME", spec.name.clone()),
        var("CI_JOB_NAME_SLUG", slugify(&spec.name)),
        var("CI_JOB_STAGE", spec.stage.clone()),
        var("CI_NODE_TOTAL", "1"),
        var("CI_PIPELINE_IID", rec.pipeline_id.to_string()),
        var(
            "CI_PIPELINE_SOURCE",
            if spec.merge_request_iid.is_some() {
                "merge_request_event"
            } else {
                "push"
            },
        ),
        var("CI_CONFIG_PATH", ".gitlab-ci.yml"),
        var("CI_PROJECT_ID", project.id.to_string()),
        var("CI_PROJECT_NAME", project.name()),
        var("CI_PROJECT_TITLE", project.name()),
        var("CI_PROJECT_DESCRIPTION", ""),
        var("CI_PROJECT_PATH", project.full_path.clone()),
        var("CI_PROJECT_PATH_SLUG", slugify(&project.full_path)),
        var("CI_PROJECT_NAMESPACE", project.namespace()),
        var("CI_PROJECT_NAMESPACE_ID", "1"),
        var(
            "CI_PROJECT_ROOT_NAMESPACE",
            project.full_path.split('/').next().unwrap_or_default(),
        ),
        var("CI_PROJECT_URL", project_url.clone()),
        var("CI_PROJECT_VISIBILITY", "private"),
        var("CI_PROJECT_REPOSITORY_LANGUAGES", ""),
        var("CI_PROJECT_CLASSIFICATION_LABEL", ""),
        var("CI_DEFAULT_BRANCH", project.default_branch.clone()),
        var("CI_COMMIT_SHA", spec.sha.clone()),
        var(
            "CI_COMMIT_SHORT_SHA",
            spec.sha.chars().take(8).collect::<String>(),
        ),
        var("CI_COMMIT_BEFORE_SHA", spec.before_sha.clone()),
        var("CI_COMMIT_REF_NAME", spec.git_ref.clone()),
        var("CI_COMMIT_REF_SLUG", slugify(&spec.git_ref)),
    ];
    if spec.tag {
        v.push(var("CI_COMMIT_TAG", spec.git_ref.clone()));
    } else if let Some(iid) = spec.merge_request_iid {
        // A merge request pipeline has no CI_COMMIT_BRANCH; its ref is the merge request's.
        v.push(var("CI_MERGE_REQUEST_IID", iid.to_string()));
        v.push(var("CI_MERGE_REQUEST_REF_PATH", merge_request_ref(iid)));
        v.push(var(
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
            spec.git_ref.clone(),
        ));
    } else {
        v.push(var("CI_COMMIT_BRANCH", spec.git_ref.clone()));
    }
    v.extend([
        var("CI_COMMIT_REF_PROTECTED", spec.protected.to_string()),
        var("CI_RUNNER_ID", ctx.runner.id.to_string()),
        var("CI_RUNNER_DESCRIPTION", ctx.runner.opts.description.clone()),
        var(
            "CI_RUNNER_TAGS",
            serde_json::to_string(&ctx.runner.opts.tags).unwrap_or_else(|_| "[]".to_string()),
        ),
        var("GITLAB_USER_ID", "1"),
        var("GITLAB_USER_LOGIN", "root"),
        var("GITLAB_USER_NAME", "Administrator"),
        var("GITLAB_USER_EMAIL", "admin@example.com"),
    ]);
    v.extend(spec.variables.iter().cloned());
    v
}

/// lib/gitlab/ci/build/step.rb: `script` = before_script + script (`when: on_success`), `after_script` only
/// when present (`when: always`, `allow_failure: true`); both carry the job timeout.
fn steps(spec: &JobSpec) -> Vec<Step> {
    let mut steps = vec![Step {
        name: "script".to_string(),
        script: spec
            .before_script
            .iter()
            .chain(spec.script.iter())
            .cloned()
            .collect(),
        timeout: spec.timeout,
        when: "on_success".to_string(),
        allow_failure: false,
    }];
    if !spec.after_script.is_empty() {
        steps.push(Step {
            name: "after_script".to_string(),
            script: spec.after_script.clone(),
            timeout: spec.timeout,
            when: "always".to_string(),
            allow_failure: true,
        });
    }
    steps
}

/// The payload as GitLab's entities serialize it (response.rb and the entities in `entities.rs`), `null`s
/// included.
pub(crate) fn build(job: &Job, ctx: &PayloadContext<'_>) -> Value {
    let spec = &job.spec;
    let rec = &job.record;
    let repo = repo_url(
        ctx.base_url,
        ctx.host_port,
        &spec.project.full_path,
        &rec.token,
    );
    let info = JobInfo {
        id: rec.id,
        name: spec.name.clone(),
        stage: spec.stage.clone(),
        pipeline_id: rec.pipeline_id,
        project_id: spec.project.id,
        project_name: spec.project.name().to_string(),
        project_full_path: spec.project.full_path.clone(),
        namespace_id: Some(1),
        root_namespace_id: Some(1),
        organization_id: Some(1),
        instance_id: String::new(),
        instance_uuid: String::new(),
        user_id: Some(1),
        scoped_user_id: None,
        time_in_queue_seconds: Some(job.queued_at.elapsed().as_secs_f64()),
        project_jobs_running_on_instance_runners_count: "+Inf".to_string(),
        queue_size: Some(0),
        queue_depth: Some(0),
    };
    let git = GitInfo {
        repo_url: repo.clone(),
        ref_name: spec
            .merge_request_iid
            .map_or_else(|| spec.git_ref.clone(), merge_request_ref),
        sha: spec.sha.clone(),
        before_sha: spec.before_sha.clone(),
        ref_type: if spec.tag { "tag" } else { "branch" }.to_string(),
        refspecs: refspecs(spec, rec.pipeline_id),
        depth: git_depth(spec),
        repo_object_format: ctx.object_format.to_string(),
        protected: Some(spec.protected),
    };
    // `metadata_timeout`: unset while a job handed out under two-phase commit waits for its acknowledgement.
    let timeout = (!spec.null_timeouts).then_some(spec.timeout);
    let variables: Vec<Value> = variables(job, ctx, &repo)
        .iter()
        .map(|v| {
            // build.rb: `CI_JOB_STARTED_AT` is `started_at&.iso8601`, `nil` until the job runs — and a job
            // handed out under two-phase commit has not started.
            let value =
                (v.key != "CI_JOB_STARTED_AT" || !v.value.is_empty()).then_some(v.value.as_str());
            entities::variable(v, value)
        })
        .collect();
    let mut dependencies: Vec<Value> = spec.dependencies.iter().map(entities::dependency).collect();
    dependencies.extend(crate::server::artifacts::dependency_entries(
        &spec.artifact_dependencies,
        ctx.artifact_sources,
        &rec.token,
    ));
    let mut response = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        response.insert(k.to_string(), v);
    };
    put("id", json!(rec.id));
    put("token", json!(rec.token));
    put("allow_git_fetch", json!(spec.allow_git_fetch));
    put("job_info", entities::job_info(&info));
    put("git_info", entities::git_info(&git));
    put(
        "runner_info",
        entities::runner_info(&RunnerInfo::default(), timeout),
    );
    put("variables", Value::Array(variables));
    // response.rb: `expose :steps … unless: run_steps.present?`, `expose :run, if: run_steps.present?`.
    if spec.run.is_none() {
        put(
            "steps",
            Value::Array(
                steps(spec)
                    .iter()
                    .map(|s| entities::step(s, timeout))
                    .collect(),
            ),
        );
    }
    put(
        "hooks",
        Value::Array(spec.hooks.iter().map(entities::hook).collect()),
    );
    put(
        "image",
        spec.image.as_ref().map_or(Value::Null, entities::image),
    );
    put(
        "services",
        Value::Array(spec.services.iter().map(entities::service).collect()),
    );
    // presenter `artifacts`: `nil` when the job has no `artifacts:`.
    put(
        "artifacts",
        if spec.artifacts.is_empty() {
            Value::Null
        } else {
            Value::Array(spec.artifacts.iter().map(entities::artifact).collect())
        },
    );
    put(
        "cache",
        Value::Array(spec.cache.iter().map(entities::cache).collect()),
    );
    put(
        "credentials",
        Value::Array(spec.credentials.iter().map(entities::credentials).collect()),
    );
    put(
        "features",
        json!({"trace_sections": true, "failure_reasons": GITLAB_FAILURE_REASONS}),
    );
    put("dependencies", Value::Array(dependencies));
    if let Some(run) = &spec.run {
        // `execution_config.run_steps.to_json`: the steps as a JSON string.
        put(
            "run",
            json!(serde_json::to_string(run).unwrap_or_else(|_| "[]".to_string())),
        );
    }
    let mut value = Value::Object(response);
    if let Some(patch) = &spec.payload_merge {
        merge_patch(&mut value, patch);
    }
    value
}

/// The bytes of a raw payload with its placeholders replaced.
pub(crate) fn raw(template: &str, job: &Job, base_url: &str) -> Vec<u8> {
    template
        .replace("{{JOB_ID}}", &job.record.id.to_string())
        .replace("{{JOB_TOKEN}}", &job.record.token)
        .replace("{{COORDINATOR_URL}}", base_url)
        .into_bytes()
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_obj) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_obj) = target {
        for (k, v) in patch_obj {
            if v.is_null() {
                target_obj.remove(k);
            } else {
                merge_patch(target_obj.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::variable;

    #[test]
    fn merge_request_jobs_have_the_merge_request_ref_and_no_branch() {
        let spec = JobSpec {
            git_ref: "feature".into(),
            merge_request_iid: Some(3),
            ..JobSpec::default()
        };
        // The persistent ref alone (build_runner_presenter.rb: `branch?` is false for merge requests).
        assert_eq!(
            refspecs(&spec, 9),
            vec!["+refs/pipelines/9:refs/pipelines/9"]
        );
        assert_eq!(merge_request_ref(3), "refs/merge-requests/3/head");
    }

    #[test]
    fn refspecs_follow_presenter() {
        let mut spec = JobSpec::default();
        assert_eq!(
            refspecs(&spec, 9),
            vec![
                "+refs/pipelines/9:refs/pipelines/9",
                "+refs/heads/main:refs/remotes/origin/main"
            ]
        );
        spec.tag = true;
        spec.git_ref = "v1".into();
        assert_eq!(refspecs(&spec, 9)[1], "+refs/tags/v1:refs/tags/v1");
        spec.variables.push(variable("GIT_DEPTH", "0"));
        assert_eq!(
            refspecs(&spec, 9),
            vec![
                "+refs/pipelines/9:refs/pipelines/9",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*"
            ]
        );
    }

    #[test]
    fn slugify_like_gitlab() {
        assert_eq!(slugify("Feature/Foo_Bar"), "feature-foo-bar");
        assert_eq!(slugify("-x-"), "x");
        assert_eq!(slugify(&"a".repeat(70)).len(), 63);
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 4}, "d": [1]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 4}, "d": [1]}));
    }
}
