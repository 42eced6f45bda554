//! The payload corpus (`tests/payloads/`, sources in its README): every body GitLab's entities can produce decodes,
//! and the runner reads from it what gitlab-runner's Go decoder reads.

use runwright_api::decode_job_response;
use runwright_api::types::JobResponse;
use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/payloads")
}

fn load(name: &str) -> JobResponse {
    let path = corpus_dir().join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_job_response(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_payload_of_the_corpus_decodes() {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "corpus shrank: {names:?}");
    for name in &names {
        let job = load(name);
        assert!(job.id > 0 && !job.token.is_empty(), "{name}");
        // A decoded payload encodes and decodes to the same job (what the fuzz target checks too).
        let again = serde_json::to_vec(&job).expect("encodes");
        assert_eq!(
            decode_job_response(&again).expect("decodes again"),
            job,
            "{name}"
        );
    }
}

#[test]
fn services_without_alias_command_or_variables_decode_as_gitlab_sends_them() {
    let job = load("gitlab-spec-picks-a-job.json");
    let s = &job.services;
    assert_eq!(s.len(), 3);
    assert_eq!(
        (
            s[0].name.as_str(),
            s[0].alias.as_str(),
            &s[0].command,
            &s[0].entrypoint
        ),
        ("postgres", "", &None, &None)
    );
    assert!(s[0].variables.is_empty() && s[0].pull_policy.is_none());
    assert_eq!(s[1].alias, "docker");
    assert_eq!(
        s[1].command,
        Some(vec!["sleep".to_string(), "30".to_string()])
    );
    assert_eq!(s[2].variables[0].key, "MYSQL_ROOT_PASSWORD");
    assert_eq!(s[2].variables[0].value, "root123.");
    assert_eq!(
        job.image.as_ref().map(|i| i.entrypoint.clone()),
        Some(Some(vec!["/bin/sh".to_string()]))
    );
    assert_eq!(job.hooks[0].name, "pre_get_sources_script");
    assert_eq!(job.steps[1].name, "after_script");
    assert_eq!(job.cache[0].when, "on_success");
    assert_eq!(job.artifacts[0].artifact_type, "archive");
    assert_eq!(
        job.job_info.project_jobs_running_on_instance_runners_count,
        "+Inf"
    );
    assert_eq!(job.job_info.scoped_user_id, None);
    assert_eq!(job.git_info.protected, Some(false));
}

#[test]
fn a_pending_two_phase_commit_job_with_null_values_and_timeouts_decodes_to_zero_values() {
    let job = load("two-phase-commit-pending-job.json");
    let started = job
        .variables
        .iter()
        .find(|v| v.key == "CI_JOB_STARTED_AT")
        .expect("CI_JOB_STARTED_AT is sent");
    assert_eq!(started.value, "", "null is Go's empty string");
    assert_eq!(
        job.runner_info.timeout, 0,
        "null timeout: the default applies"
    );
    assert_eq!(job.steps[0].timeout, 0);
}

#[test]
fn a_run_keyword_job_has_its_steps_in_run_and_no_script_steps() {
    let job = load("gitlab-spec-run-keyword.json");
    assert!(job.steps.is_empty());
    assert_eq!(job.run.0.len(), 2);
    assert_eq!(job.run.0[0]["name"], "hello_steps");
    // `STEPS` gets the steps re-encoded, as runner's `json.Marshal(j.Run)`.
    let steps: serde_json::Value = serde_json::from_str(&job.run.to_json()).expect("json");
    assert_eq!(steps[1]["script"], "echo bye");
}

#[test]
fn report_artifacts_and_archives_with_null_keys_decode() {
    let job = load("gitlab-spec-report-artifacts.json");
    let a = &job.artifacts;
    assert_eq!(
        (a[0].artifact_type.as_str(), a[0].artifact_format.as_str()),
        ("cobertura", "gzip")
    );
    assert!(!a[0].untracked);
    assert_eq!(a[1].expire_in, "");
    assert_eq!((a[2].name.as_str(), a[2].when.as_str()), ("", ""));
    assert_eq!(a[2].exclude, vec!["dist/tmp/**".to_string()]);
}

#[test]
fn dependencies_carry_artifacts_file_only_when_they_have_artifacts() {
    let job = load("gitlab-spec-dependencies.json");
    assert_eq!(
        job.dependencies[0]
            .artifacts_file
            .as_ref()
            .map(|f| (f.filename.as_str(), f.size)),
        Some(("ci_build_artifacts.zip", 106365))
    );
    assert!(job.dependencies[1].artifacts_file.is_none());
}

#[test]
fn executor_options_ports_credentials_and_release_steps_decode() {
    let job = load("gitlab-spec-executor-opts-and-pull-policy.json");
    let opts = job.image.and_then(|i| i.executor_opts).expect("opts");
    assert_eq!(opts["docker"]["user"], "dave");
    assert_eq!(
        job.services[0].pull_policy,
        Some(vec!["if-not-present".to_string()])
    );

    let job = load("gitlab-spec-ports.json");
    let image = job.image.expect("image");
    assert_eq!(
        (image.ports[0].number, image.ports[0].name.as_str()),
        (80, "default_port")
    );
    assert_eq!(job.services[0].ports[0].number, 8081);

    let job = load("gitlab-spec-registry-credentials.json");
    assert_eq!(job.credentials[0].url, "registry.example.com:5005");

    let job = load("gitlab-spec-release-step.json");
    assert_eq!(job.steps[1].name, "release");

    let job = load("gitlab-spec-tag-no-default-depth.json");
    assert_eq!(
        (job.git_info.ref_type.as_str(), job.git_info.depth),
        ("tag", 0)
    );
    assert_eq!(job.git_info.refspecs.len(), 3);
}

#[test]
fn keys_runwright_does_not_model_are_ignored_as_go_ignores_them() {
    let job = load("gitlab-ee-unmodelled-keys.json");
    assert_eq!(job.features.token_mask_prefixes, vec!["glpat-", "glrt-"]);
    assert_eq!(
        job.runner_info.runner_session_url,
        "https://runner.example.com:8093/session/9a8b7c"
    );
}

#[test]
fn every_attribute_null_decodes_to_zero_values() {
    let job = load("nulls-for-every-unset-attribute.json");
    assert_eq!(job.job_info.name, "nulls");
    assert_eq!(job.job_info.pipeline_id, 0);
    assert!(job.git_info.refspecs.is_empty());
    assert_eq!((job.git_info.depth, job.git_info.protected), (0, None));
    assert_eq!(
        (job.variables[0].value.as_str(), job.variables[0].public),
        ("", false)
    );
    assert_eq!(
        (
            job.steps[0].timeout,
            job.steps[0].when.as_str(),
            job.steps[0].allow_failure
        ),
        (0, "", false)
    );
    assert!(job.hooks[0].script.is_empty());
    let image = job.image.expect("image");
    assert!(image.ports.is_empty() && image.executor_opts.is_none());
    assert_eq!(job.services[0].variables[0].value, "");
    let c = &job.cache[0];
    assert_eq!((c.key.as_str(), c.untracked, c.paths.len()), ("", false, 0));
    assert!(job.credentials.is_empty());
    assert!(job.dependencies[0].artifacts_file.is_none());
    assert!(!job.features.trace_sections);
}

#[test]
fn null_list_items_are_zero_values_and_wrong_types_name_their_path() {
    let json = br#"{"id":3,"token":"glcbt-x","steps":[{"name":"script","script":["a",null,"c"]}],
                    "services":[null,{"name":"redis"}]}"#;
    let job = decode_job_response(json).expect("decodes");
    assert_eq!(job.steps[0].script, vec!["a", "", "c"]);
    assert_eq!(job.services[0].name, "");
    assert_eq!(job.services[1].name, "redis");

    // What Go would also refuse: a value of the wrong type. The path says where; the value is not quoted.
    for (json, path) in [
        (
            r#"{"id":3,"token":"t","services":[{"name":"x","alias":["db"]}]}"#,
            "services[0].alias",
        ),
        (
            r#"{"id":3,"token":"t","variables":[{"key":"K","value":{"secret":"hunter2"}}]}"#,
            "variables[0].value",
        ),
        (
            r#"{"id":3,"token":"t","runner_info":{"timeout":"1h"}}"#,
            "runner_info.timeout",
        ),
        (r#"{"id":3,"token":"t","run":"[{\"name\": }"}"#, "run"),
    ] {
        let err = decode_job_response(json.as_bytes()).expect_err(json);
        assert!(err.contains(path), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert!(decode_job_response(br#"{"token":"t"}"#)
        .expect_err("no id")
        .contains("`id`"));
}
