//! GitLab's Grape entities for the job payload, attribute for attribute: gitlab
//! lib/api/entities/ci/job_request/{response,job_info,git_info,runner_info,step,hook,image,service,port,artifacts,
//! cache,credentials,dependency}.rb and lib/api/entities/ci/job_artifact_file.rb.
//!
//! Grape writes every exposed attribute, `null` when it is unset, except where the entity says `expose_nil: false`
//! or `if:`/`unless:`. A runner that only ever sees friendlier JSON breaks on GitLab's (issue 16: an alias-less
//! service arrives as `"alias": null`), so the coordinator writes these shapes rather than serializing the wire
//! types, whose `skip_serializing_if` suits the runner side. (JSON object order carries no meaning; serde_json
//! writes keys sorted.)

use runwright_api::types::{
    Artifact, Cache, Credentials, Dependency, GitInfo, Hook, Image, JobInfo, JobVariable, Port,
    RunnerInfo, Step,
};
use serde_json::{json, Map, Value};

/// `Some(v)` as `v`, `None` as `null`.
fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

/// An empty string as `null`: the wire types hold unset text attributes as `""`.
fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<String, Value>>(),
    )
}

/// job_info.rb: `id, name, stage, pipeline_id, project_id, project_name, project_full_path, namespace_id,
/// root_namespace_id, organization_id, instance_id, instance_uuid, user_id, scoped_user_id,
/// time_in_queue_seconds, project_jobs_running_on_instance_runners_count, queue_size, queue_depth`.
pub(crate) fn job_info(i: &JobInfo) -> Value {
    object(vec![
        ("id", json!(i.id)),
        ("name", json!(i.name)),
        ("stage", json!(i.stage)),
        ("pipeline_id", json!(i.pipeline_id)),
        ("project_id", json!(i.project_id)),
        ("project_name", json!(i.project_name)),
        ("project_full_path", json!(i.project_full_path)),
        ("namespace_id", opt(i.namespace_id)),
        ("root_namespace_id", opt(i.root_namespace_id)),
        ("organization_id", opt(i.organization_id)),
        ("instance_id", text_or_null(&i.instance_id)),
        ("instance_uuid", text_or_null(&i.instance_uuid)),
        ("user_id", opt(i.user_id)),
        ("scoped_user_id", opt(i.scoped_user_id)),
        ("time_in_queue_seconds", opt(i.time_in_queue_seconds)),
        (
            "project_jobs_running_on_instance_runners_count",
            json!(i.project_jobs_running_on_instance_runners_count),
        ),
        ("queue_size", opt(i.queue_size)),
        ("queue_depth", opt(i.queue_depth)),
    ])
}

/// git_info.rb: `repo_url, ref, sha, before_sha, ref_type, refspecs, depth (git_depth), repo_object_format,
/// protected`.
pub(crate) fn git_info(g: &GitInfo) -> Value {
    object(vec![
        ("repo_url", json!(g.repo_url)),
        ("ref", json!(g.ref_name)),
        ("sha", json!(g.sha)),
        ("before_sha", json!(g.before_sha)),
        ("ref_type", json!(g.ref_type)),
        ("refspecs", json!(g.refspecs)),
        ("depth", json!(g.depth)),
        ("repo_object_format", json!(g.repo_object_format)),
        ("protected", opt(g.protected)),
    ])
}

/// runner_info.rb: `timeout` (the job's `metadata_timeout`, `null` until the job runs, which a job handed out
/// under two-phase commit has not yet), `runner_session_url` (`null` without a session).
pub(crate) fn runner_info(r: &RunnerInfo, timeout: Option<i64>) -> Value {
    object(vec![
        ("timeout", opt(timeout)),
        ("runner_session_url", text_or_null(&r.runner_session_url)),
    ])
}

/// A variable as `Gitlab::Ci::Variables::Collection::Item#to_runner_variable`: `key, value, public, masked`,
/// with `file`/`raw` only when true. `value: None` is GitLab's `nil` (an unset attribute such as
/// `CI_JOB_STARTED_AT` before the job runs).
pub(crate) fn variable(v: &JobVariable, value: Option<&str>) -> Value {
    let mut pairs = vec![
        ("key", json!(v.key)),
        ("value", opt(value)),
        ("public", json!(v.public)),
        ("masked", json!(v.masked)),
    ];
    if v.file {
        pairs.push(("file", json!(true)));
    }
    if v.raw {
        pairs.push(("raw", json!(true)));
    }
    object(pairs)
}

/// step.rb: `name, script, timeout, when, allow_failure`.
pub(crate) fn step(s: &Step, timeout: Option<i64>) -> Value {
    object(vec![
        ("name", json!(s.name)),
        ("script", json!(s.script)),
        ("timeout", opt(timeout)),
        ("when", json!(s.when)),
        ("allow_failure", json!(s.allow_failure)),
    ])
}

/// hook.rb: `name, script`.
pub(crate) fn hook(h: &Hook) -> Value {
    object(vec![("name", json!(h.name)), ("script", json!(h.script))])
}

/// port.rb: `number, protocol, name`.
fn port(p: &Port) -> Value {
    object(vec![
        ("number", json!(p.number)),
        ("protocol", json!(p.protocol)),
        ("name", json!(p.name)),
    ])
}

fn executor_opts(i: &Image) -> Value {
    // lib/gitlab/ci/build/image.rb: `@executor_opts = image.fetch(:executor_opts, {})`, `{}` for the string form.
    i.executor_opts.clone().unwrap_or_else(|| json!({}))
}

/// image.rb: `name, entrypoint, ports, executor_opts, pull_policy`.
pub(crate) fn image(i: &Image) -> Value {
    object(vec![
        ("name", json!(i.name)),
        ("entrypoint", opt(i.entrypoint.clone())),
        ("ports", Value::Array(i.ports.iter().map(port).collect())),
        ("executor_opts", executor_opts(i)),
        ("pull_policy", opt(i.pull_policy.clone())),
    ])
}

/// service.rb: `name, entrypoint, ports, executor_opts, pull_policy, alias, command, variables`.
///
/// lib/gitlab/ci/build/image.rb builds a service from a string (`services: [postgres:16]`) with only a name,
/// `ports: []` and `executor_opts: {}` — so `alias`, `command`, `entrypoint`, `variables` and `pull_policy` are
/// `nil` — and from a hash with `variables` always a list (`[]` when none). A service here with nothing but a
/// name is written in the string form; each service variable is `{key, value}` (what YAML gives).
pub(crate) fn service(s: &Image) -> Value {
    let string_form = s.alias.is_empty()
        && s.command.is_none()
        && s.entrypoint.is_none()
        && s.variables.is_empty()
        && s.pull_policy.is_none()
        && s.ports.is_empty()
        && s.executor_opts.is_none();
    let variables = if string_form {
        Value::Null
    } else {
        Value::Array(
            s.variables
                .iter()
                .map(|v| object(vec![("key", json!(v.key)), ("value", json!(v.value))]))
                .collect(),
        )
    };
    object(vec![
        ("name", json!(s.name)),
        ("entrypoint", opt(s.entrypoint.clone())),
        ("ports", Value::Array(s.ports.iter().map(port).collect())),
        ("executor_opts", executor_opts(s)),
        ("pull_policy", opt(s.pull_policy.clone())),
        ("alias", text_or_null(&s.alias)),
        ("command", opt(s.command.clone())),
        ("variables", variables),
    ])
}

/// artifacts.rb: `name, untracked (expose_nil: false), paths, exclude (expose_nil: false), when, expire_in,
/// artifact_type, artifact_format`. The presenter builds an archive entry from the job's `artifacts:` keys (unset
/// ones `nil`; `exclude` dropped unless present) and each report with `.compact` (no `untracked`), so an
/// unset `name`, `when` or `expire_in` is `null` (app/presenters/ci/build_runner_presenter.rb).
pub(crate) fn artifact(a: &Artifact) -> Value {
    let report = a.artifact_type != "archive";
    let mut pairs = vec![("name", text_or_null(&a.name))];
    if !report && a.untracked {
        pairs.push(("untracked", json!(true)));
    }
    pairs.push(("paths", json!(a.paths)));
    if !a.exclude.is_empty() {
        pairs.push(("exclude", json!(a.exclude)));
    }
    pairs.extend([
        ("when", text_or_null(&a.when)),
        ("expire_in", text_or_null(&a.expire_in)),
        ("artifact_type", json!(a.artifact_type)),
        ("artifact_format", text_or_null(&a.artifact_format)),
    ]);
    object(pairs)
}

/// cache.rb: `key, untracked, paths, policy, when, fallback_keys` (the YAML entry fills `untracked`, `policy`
/// and `when` with their defaults; app/models/ci/build.rb adds `fallback_keys: []`).
pub(crate) fn cache(c: &Cache) -> Value {
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    object(vec![
        ("key", json!(c.key)),
        ("untracked", json!(c.untracked)),
        ("paths", json!(c.paths)),
        ("policy", json!(or(&c.policy, "pull-push"))),
        ("when", json!(or(&c.when, "on_success"))),
        ("fallback_keys", json!(c.fallback_keys)),
    ])
}

/// credentials.rb: `type, url, username, password`.
pub(crate) fn credentials(c: &Credentials) -> Value {
    object(vec![
        ("type", json!(c.kind)),
        ("url", json!(c.url)),
        ("username", json!(c.username)),
        ("password", json!(c.password)),
    ])
}

/// dependency.rb: `id, name, token`, and `artifacts_file` (job_artifact_file.rb: `filename, size`) only when the
/// job has artifacts (`if: job.artifacts?`).
pub(crate) fn dependency(d: &Dependency) -> Value {
    let mut pairs = vec![
        ("id", json!(d.id)),
        ("name", json!(d.name)),
        ("token", json!(d.token)),
    ];
    if let Some(f) = &d.artifacts_file {
        pairs.push((
            "artifacts_file",
            object(vec![
                ("filename", json!(f.filename)),
                ("size", json!(f.size)),
            ]),
        ));
    }
    object(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_form_service_has_gitlabs_nulls() {
        // jobs_request_post_spec.rb "picks a job": `{ 'name' => 'postgres', 'entrypoint' => nil, 'alias' => nil,
        // 'command' => nil, 'ports' => [], 'variables' => nil, 'executor_opts' => {}, 'pull_policy' => nil }`.
        let s = service(&Image {
            name: "postgres".into(),
            ..Image::default()
        });
        assert_eq!(
            s,
            json!({"name": "postgres", "entrypoint": null, "ports": [], "executor_opts": {}, "pull_policy": null,
                   "alias": null, "command": null, "variables": null})
        );
    }

    #[test]
    fn a_hash_form_service_has_a_variables_list() {
        // "when service has pull_policy": `'variables' => []`.
        let s = service(&Image {
            name: "postgres:11.9".into(),
            pull_policy: Some(vec!["if-not-present".into()]),
            ..Image::default()
        });
        assert_eq!(s["variables"], json!([]));
        assert_eq!(s["alias"], Value::Null);
    }

    #[test]
    fn an_image_has_executor_opts_and_a_null_pull_policy() {
        // "when image has docker options": `'pull_policy' => nil, 'entrypoint' => nil, 'ports' => []`.
        let i = image(&Image {
            name: "ruby".into(),
            ..Image::default()
        });
        assert_eq!(
            i,
            json!({"name": "ruby", "entrypoint": null, "ports": [], "executor_opts": {}, "pull_policy": null})
        );
    }

    #[test]
    fn report_artifacts_have_no_untracked_and_archives_no_empty_exclude() {
        let report = artifact(&Artifact {
            name: "cobertura-coverage.xml".into(),
            paths: vec!["cobertura.xml".into()],
            when: "always".into(),
            artifact_type: "cobertura".into(),
            artifact_format: "gzip".into(),
            ..Artifact::default()
        });
        assert!(report.get("untracked").is_none());
        assert_eq!(report["expire_in"], Value::Null);
        let archive = artifact(&Artifact {
            paths: vec!["out/".into()],
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        });
        assert!(archive.get("exclude").is_none());
        assert_eq!(archive["name"], Value::Null);
    }

    #[test]
    fn a_pending_job_shows_null_timeouts_and_variable_values() {
        assert_eq!(
            runner_info(&RunnerInfo::default(), None),
            json!({"timeout": null, "runner_session_url": null})
        );
        assert_eq!(
            variable(
                &JobVariable {
                    key: "CI_JOB_STARTED_AT".into(),
                    public: true,
                    ..JobVariable::default()
                },
                None
            ),
            json!({"key": "CI_JOB_STARTED_AT", "value": null, "public": true, "masked": false})
        );
    }
}
