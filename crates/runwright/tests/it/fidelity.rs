//! Issue 16, items 1 and 2: jobs as GitLab really hands them out — `null`s, unreadable payloads, CI Steps
//! (`run:`) — end in the state gitlab-runner gives them, never in a success that ran nothing.

use crate::harness::*;
use runwright_coordinator::JobSpec;
use serde_json::json;
use std::time::{Duration, Instant};

fn runwright_json(h: &Harness, args: &[&str]) -> serde_json::Value {
    let out = h.command().args(args).output().expect("runwright runs");
    assert!(
        out.status.success(),
        "runwright {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn run_steps() -> Vec<serde_json::Value> {
    vec![
        json!({"name": "hello", "script": "echo hello from steps"}),
        json!({"name": "bye", "step": "gitlab.com/gitlab-org/ci-cd/runner-tools/echo-step@v1", "inputs": {"echo": "bye"}}),
    ]
}

/// A `step-runner` for the shell executor's host: prints what gitlab-runner's shim hands it.
fn fake_step_runner(h: &Harness) -> std::path::PathBuf {
    let bin = h.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let path = bin.join("step-runner");
    std::fs::write(
        &path,
        "#!/bin/sh\n[ \"$1\" = ci ] || { echo \"usage: step-runner ci\" >&2; exit 2; }\nprintf 'step-runner ran: %s\\n' \"$STEPS\"\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[tokio::test]
async fn a_run_job_goes_through_the_step_runner_shim_with_its_steps() {
    let mut h = Harness::new().await;
    let bin = fake_step_runner(&h);
    h.single_runner(
        "",
        &format!(
            "  environment = [\"PATH={}:/usr/local/bin:/usr/bin:/bin\"]",
            bin.display()
        ),
    );
    h.start();
    let mut spec = JobSpec::shell("steps", &[]);
    spec.run = Some(run_steps());
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "success", "{trace}");
    assert!(trace.contains("This job uses `run:` (CI Steps)"), "{trace}");
    assert!(trace.contains("$ step-runner ci"), "{trace}");
    let line = trace
        .lines()
        .find(|l| l.contains("step-runner ran: "))
        .unwrap_or_else(|| panic!("step-runner did not run: {trace}"));
    let steps: serde_json::Value =
        serde_json::from_str(line.split_once("step-runner ran: ").map_or("", |(_, s)| s))
            .expect("STEPS is JSON");
    assert_eq!(steps, json!(run_steps()));
}

#[tokio::test]
async fn a_run_job_without_step_runner_fails_instead_of_succeeding() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell("steps", &[]);
    spec.run = Some(run_steps());
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "failed", "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(job.exit_code, Some(127), "{trace}");
    assert!(trace.contains("step-runner"), "{trace}");
    assert!(!trace.contains("Job succeeded"), "{trace}");
}

#[tokio::test]
async fn run_with_script_or_unknown_executor_options_fail_as_runner_fails_them() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    // GitLab leaves `steps` out when `run` is there (response.rb); a payload with both is refused by the runner.
    let mut both = JobSpec::shell("both", &[]);
    both.run = Some(run_steps());
    both.payload_merge = Some(
        json!({"steps": [{"name": "script", "script": ["echo never"], "timeout": 3600,
                                                "when": "on_success", "allow_failure": false}]}),
    );
    let both = h.coordinator.enqueue(both);
    let mut opts = JobSpec::shell("opts", &["echo never"]);
    opts.image = Some(runwright_api::types::Image {
        name: "alpine".into(),
        executor_opts: Some(json!({"docker": {"platform": "amd64", "memory": "1g"}})),
        ..Default::default()
    });
    let opts = h.coordinator.enqueue(opts);
    for (id, message) in [
        (both, "the `run` and `script` keywords cannot be used together"),
        (
            opts,
            "Unsupported \"image\" options [memory] for \"docker executor\"; supported options are [platform user]",
        ),
    ] {
        let job = h.final_job(id).await;
        let trace = job.trace_text();
        assert_eq!(job.state, "failed", "{trace}");
        assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
        // runner common/trace.go ExitCodeUnsupportedOptions.
        assert_eq!(job.exit_code, Some(3));
        assert!(trace.contains(message), "{trace}");
        assert!(!trace.contains("never\n"), "{trace}");
    }
}

#[tokio::test]
async fn a_pending_job_with_null_timeouts_and_started_at_runs_with_the_default_timeout() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell(
        "pending",
        &["echo timeout=$CI_JOB_TIMEOUT started=[$CI_JOB_STARTED_AT]"],
    );
    spec.null_timeouts = true;
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "success", "{trace}");
    // runner_info.timeout null → 0 → the default job timeout (runner common/build.go `GetBuildTimeout`).
    assert!(trace.contains("timeout=7200 started=[]\n"), "{trace}");
}

#[tokio::test]
async fn an_unreadable_job_is_failed_and_kept_in_the_journal_with_its_reason() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let raw = r#"{"id": {{JOB_ID}}, "token": "{{JOB_TOKEN}}", "allow_git_fetch": true,
        "job_info": {"id": {{JOB_ID}}, "name": "unreadable", "stage": "build", "project_id": 42,
                     "project_full_path": "grp/app", "pipeline_id": 9},
        "variables": [{"key": "SECRET", "value": {"nested": "hunter2-value"}, "public": false, "masked": true}],
        "steps": [{"name": "script", "script": ["echo never"], "timeout": 3600, "when": "on_success"}]}"#;
    let id = h.coordinator.enqueue(JobSpec::raw("unreadable", raw));
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "failed", "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(
        trace.contains("the job payload from GitLab could not be read")
            && trace.contains("variables[0].value"),
        "{trace}"
    );
    assert!(!trace.contains("hunter2-value"), "{trace}");

    // The journal has it: history (what the dashboard lists too) and its log.
    let config = h.config_path.to_string_lossy().into_owned();
    let deadline = Instant::now() + WAIT;
    let entry = loop {
        let jobs = runwright_json(&h, &["history", "-c", &config, "--json"]);
        if let Some(e) = jobs.as_array().and_then(|a| {
            a.iter()
                .find(|j| j["job_id"] == id && j["status"] == "failed")
        }) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "not in history: {jobs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["job_name"], "unreadable", "{entry}");
    assert_eq!(entry["failure_reason"], "runner_system_failure", "{entry}");
    let out = h
        .command()
        .args(["logs", &id.to_string(), "-c", &config])
        .output()
        .expect("logs");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("variables[0].value"), "{log}");
    // The service goes on.
    let next = h.coordinator.enqueue(JobSpec::shell("next", &["true"]));
    assert_eq!(h.final_job(next).await.state, "success");
}

/// GitLab assigns jobs by `info.features` and drops those needing a feature the runner lacks (`runner_unsupported`):
/// runwright advertises what works and nothing else — no native steps (a `run:` job takes the shim), no
/// session or terminal, no Vault secrets, no job inputs.
#[tokio::test]
async fn the_shell_runner_advertises_only_features_that_work() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell("one", &["true"]));
    h.final_job(id).await;
    let request = h
        .coordinator
        .requests()
        .into_iter()
        .find(|r| r.endpoint == runwright_coordinator::Endpoint::RequestJob && r.body.is_some())
        .expect("a job request");
    let features = &request.body.expect("body")["info"]["features"];
    for on in [
        "variables",
        "shared",
        "artifacts",
        "upload_multiple_artifacts",
        "upload_raw_artifacts",
        "cache",
        "fallback_cache_keys",
        "refspecs",
        "masking",
        "raw_variables",
        "artifacts_exclude",
        "multi_build_steps",
        "return_exit_code",
        "trace_reset",
        "trace_checksum",
        "trace_size",
        "cancelable",
        "cancel_gracefully",
        "two_phase_job_commit",
    ] {
        assert_eq!(features[on], true, "{on}: {features}");
    }
    for off in [
        "native_steps_integration",
        "session",
        "terminal",
        "vault_secrets",
        "job_inputs",
        "proxy",
        "image",
        "services",
    ] {
        assert_eq!(features[off], false, "{off}: {features}");
    }
}
