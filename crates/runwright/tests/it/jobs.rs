//! Jobs end to end on the shell executor: success, failure, after_script, timeouts, variables.

use crate::harness::*;
use runwright_api::types::JobVariable;
use runwright_coordinator::JobSpec;

#[tokio::test]
async fn successful_job_reports_success_with_its_output_and_checksum() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "hello",
        &["echo hello from $CI_JOB_NAME", "echo second"],
    ));
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "success", "{trace}");
    assert!(trace.contains("hello from hello\n"), "{trace}");
    assert!(trace.contains("$ echo hello from $CI_JOB_NAME"), "{trace}");
    assert!(trace.contains("section_start:"), "sections: {trace}");
    assert!(trace.contains("step_script"), "{trace}");
    assert!(trace.contains("Job succeeded"), "{trace}");
    assert_eq!(
        job.final_checksum_ok,
        Some(true),
        "checksum of what was patched"
    );
    // Two-phase commit: the first update acknowledges with state=running.
    assert_eq!(
        job.updates.first().map(|u| u.state.as_str()),
        Some("running")
    );
}

#[tokio::test]
async fn script_failure_reports_exit_code_and_stops_at_first_failing_command() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "fails",
        &["echo before", "exit 42", "echo never-printed"],
    ));
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "failed");
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(job.exit_code, Some(42));
    assert!(trace.contains("before\n"));
    assert!(!trace.contains("never-printed\n"), "{trace}");
    assert!(
        trace.contains("ERROR: Job failed: exit status 42"),
        "{trace}"
    );
}

#[tokio::test]
async fn after_script_sees_ci_job_status_for_success_and_failure() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut ok = JobSpec::shell("ok", &["true"]);
    ok.after_script = vec!["echo status=$CI_JOB_STATUS".into()];
    let mut bad = JobSpec::shell("bad", &["false"]);
    bad.after_script = vec!["echo status=$CI_JOB_STATUS".into(), "exit 3".into()];
    let ok_id = h.coordinator.enqueue(ok);
    let bad_id = h.coordinator.enqueue(bad);
    let ok_job = h.final_job(ok_id).await;
    let bad_job = h.final_job(bad_id).await;
    assert_eq!(ok_job.state, "success");
    assert!(ok_job.trace_text().contains("status=success\n"));
    assert_eq!(bad_job.state, "failed");
    assert!(bad_job.trace_text().contains("status=failed\n"));
    assert!(bad_job.trace_text().contains("Running after script..."));
    // after_script's own failure does not change the job's result (AFTER_SCRIPT_IGNORE_ERRORS default).
    assert_eq!(bad_job.exit_code, Some(1));
}

#[tokio::test]
async fn job_timeout_kills_the_script_and_skips_after_script() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell("slow", &["echo started", "sleep 60"]);
    spec.timeout = 2;
    spec.after_script = vec!["echo after-ran".into()];
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "failed");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{trace}"
    );
    assert!(
        trace.contains("execution took longer than 2s seconds"),
        "{trace}"
    );
    assert!(
        !trace.contains("after-ran"),
        "after_script must not run after the job timeout"
    );
}

#[tokio::test]
async fn script_timeout_still_runs_after_script_with_timedout_status() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec =
        JobSpec::shell("slow", &["sleep 60"]).with_variable("RUNNER_SCRIPT_TIMEOUT", "1s");
    spec.after_script = vec!["echo status=$CI_JOB_STATUS".into()];
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    assert_eq!(job.failure_reason.as_deref(), Some("job_execution_timeout"));
    assert!(
        job.trace_text().contains("status=timedout\n"),
        "{}",
        job.trace_text()
    );
}

#[tokio::test]
async fn variables_file_variables_expansion_and_config_environment() {
    let mut h = Harness::new().await;
    h.single_runner("", "  environment = [\"FROM_CONFIG=cfg-$CI_JOB_NAME\"]");
    h.start();
    let mut spec = JobSpec::shell(
        "vars",
        &[
            "echo cfg=$FROM_CONFIG",
            "echo file-path-ok=$(test -f \"$MY_FILE\" && echo yes)",
            "echo file-content=$(cat \"$MY_FILE\")",
            "echo raw=$RAW_VAR",
            "echo expanded=$EXPANDED",
            "echo dup=$DUP",
            "echo project-dir-ok=$(test \"$PWD\" = \"$CI_PROJECT_DIR\" && echo yes)",
        ],
    );
    spec.variables.push(JobVariable {
        key: "MY_FILE".into(),
        value: "file body".into(),
        file: true,
        public: false,
        ..Default::default()
    });
    spec.variables.push(JobVariable {
        key: "RAW_VAR".into(),
        value: "$CI_JOB_NAME-raw".into(),
        raw: true,
        public: true,
        ..Default::default()
    });
    spec = spec
        .with_variable("EXPANDED", "${CI_JOB_NAME}-x")
        .with_variable("DUP", "first")
        .with_variable("DUP", "last");
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    for want in [
        "cfg=cfg-vars\n",
        "file-path-ok=yes\n",
        "file-content=file body\n",
        "raw=$CI_JOB_NAME-raw\n",
        "expanded=vars-x\n",
        "dup=last\n",
        "project-dir-ok=yes\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    // File variables are removed with the job's temp dir.
    let leftovers: Vec<_> = walk(&h.work_dir())
        .into_iter()
        .filter(|p| p.ends_with("MY_FILE"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "file variable left on disk: {leftovers:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn builds_dir_layout_uses_short_token_and_concurrent_project_id() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "where",
        &["echo dir=$CI_PROJECT_DIR", "echo builds=$CI_BUILDS_DIR"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    let builds = h.work_dir().join("builds");
    let short = runwright_config::short_token(TOKEN);
    let expected = format!("dir={}/{short}/0/", builds.display());
    assert!(t.contains(&expected), "expected {expected:?} in {t}");
    assert!(t.contains(&format!("builds={}\n", builds.display())), "{t}");
}

#[tokio::test]
async fn output_limit_truncates_what_gitlab_receives_and_the_job_continues() {
    let mut h = Harness::new().await;
    h.single_runner("", "  output_limit = 1");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "chatty",
        &[
            "for i in $(seq 1 200); do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
            "echo done > marker",
        ],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success");
    assert!(job.trace.len() < 2048, "trace is {} bytes", job.trace.len());
    assert!(t.contains("exceeded"), "output limit notice missing: {t}");
    assert!(!t.contains("line-200-"), "{t}");
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn run_user_runs_scripts_as_that_user() {
    if !can_run_as_nobody() {
        return;
    }
    let mut h = Harness::new().await;
    h.single_runner_as_nobody();
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("whoami", &["echo user=$(id -un)"]));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());
    assert!(
        job.trace_text().contains("user=nobody\n"),
        "{}",
        job.trace_text()
    );
}

#[tokio::test]
async fn posix_sh_runs_the_same_scripts_as_bash() {
    let mut h = Harness::new().await;
    h.single_runner("", "  shell = \"sh\"");
    h.start();
    let mut spec = JobSpec::shell(
        "sh",
        &[
            "echo \"quote ' and tab\there\"",
            "echo file=$(cat \"$MY_FILE\")",
        ],
    )
    .with_variable("WEIRD", "it's \"quoted\"\nand multi-line");
    spec.variables.push(JobVariable {
        key: "MY_FILE".into(),
        value: "in a file".into(),
        file: true,
        ..Default::default()
    });
    spec.script.push("printf '%s|' \"$WEIRD\"; echo".into());
    spec.after_script = vec!["echo after=$CI_JOB_STATUS".into()];
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("Using Shell (sh) executor"), "{t}");
    assert!(t.contains("quote ' and tab\there\n"), "{t}");
    assert!(t.contains("file=in a file\n"), "{t}");
    assert!(t.contains("it's \"quoted\"\nand multi-line|\n"), "{t}");
    assert!(t.contains("after=success\n"), "{t}");
}

/// A job whose task panics (a bug; injected here) is failed towards GitLab at once, and the service keeps
/// running other jobs.
#[tokio::test]
async fn a_panicking_job_is_failed_and_the_service_goes_on() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let doomed = h.coordinator.enqueue(
        JobSpec::shell("doomed", &["echo never"]).with_variable("RUNWRIGHT_TEST_PANIC", "1"),
    );
    let job = h.final_job(doomed).await;
    assert_eq!(job.state, "failed", "{}", h.log());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(h.log().contains("panicked"), "{}", h.log());
    let fine = h
        .coordinator
        .enqueue(JobSpec::shell("fine", &["echo still-here"]));
    let job = h.final_job(fine).await;
    assert_eq!(job.state, "success", "{}", h.log());
    assert!(job.trace_text().contains("still-here\n"));
}

#[tokio::test]
async fn every_feature_flag_is_exported_with_its_resolved_value_and_the_runners_feature_flags_win()
{
    let mut h = Harness::new().await;
    h.single_runner(
        "",
        "  [runners.feature_flags]\n    FF_TIMESTAMPS = false\n    FF_USE_FASTZIP = false\n    FF_NOT_IN_RUNNER = true",
    );
    h.start();
    let id = h.coordinator.enqueue(
        JobSpec::shell("flags", &["env | grep '^FF_' | sort"])
            // The TOML wins over the job…
            .with_variable("FF_TIMESTAMPS", "true")
            // …the job over the default…
            .with_variable("FF_HASH_CACHE_KEYS", "1")
            // …a value that is no Go bool warns and keeps the default…
            .with_variable("FF_MASK_ALL_DEFAULT_TOKENS", "maybe")
            // …and a name that is not a flag is an ordinary variable.
            .with_variable("FF_MADE_UP", "anything"),
    );
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    let exported: std::collections::BTreeMap<&str, &str> = t
        .lines()
        .filter_map(|l| l.strip_prefix("FF_").and_then(|l| l.split_once('=')))
        .collect();
    // gitlab-runner 19.4's 52 flags, and the made-up one.
    assert_eq!(exported.len(), 53, "{exported:?}");
    for (name, value) in [
        ("TIMESTAMPS", "false"),
        ("USE_FASTZIP", "false"),
        ("HASH_CACHE_KEYS", "true"),
        ("MASK_ALL_DEFAULT_TOKENS", "true"),
        ("USE_DIRECT_DOWNLOAD", "true"),
        ("NETWORK_PER_BUILD", "false"),
        ("TEST_FEATURE", "false"),
        ("USE_NATIVE_CONTAINER_STOP", "false"),
        ("MADE_UP", "anything"),
    ] {
        assert_eq!(exported.get(name).copied(), Some(value), "FF_{name} in {t}");
    }
    assert!(
        !exported.contains_key("NOT_IN_RUNNER"),
        "not a flag, not exported: {t}"
    );
    // The TOML turned the timestamps off: the log GitLab got has no headers.
    assert!(
        !job.raw_trace_text().contains(" 00O "),
        "{}",
        job.raw_trace_text()
    );
    // The header names the flags that differ from their defaults, in gitlab-runner's words and order.
    assert!(
        t.contains(
            "  feature flags: FF_USE_FASTZIP:false, FF_TIMESTAMPS:false, FF_HASH_CACHE_KEYS:true"
        ),
        "{t}"
    );
    assert!(
        t.contains("WARNING: FF_MASK_ALL_DEFAULT_TOKENS: could not parse feature flag, expected bool, got maybe"),
        "{t}"
    );
}

#[tokio::test]
async fn ci_job_image_is_the_expanded_image_name_and_file_variables_contents_expand() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell(
        "image",
        &[
            "echo \"image=${CI_JOB_IMAGE-unset}\"",
            "echo \"conf=$(cat \"$CONF\")\"",
            "echo \"raw-conf=$(cat \"$RAW_CONF\")\"",
        ],
    )
    .with_variable("IMG_TAG", "1.2");
    spec.image = Some(runwright_api::types::Image {
        name: "registry.example/app:$IMG_TAG".into(),
        ..Default::default()
    });
    spec.variables.push(JobVariable {
        key: "CONF".into(),
        value: "job=$CI_JOB_NAME tag=${IMG_TAG}".into(),
        file: true,
        ..Default::default()
    });
    spec.variables.push(JobVariable {
        key: "RAW_CONF".into(),
        value: "job=$CI_JOB_NAME".into(),
        file: true,
        raw: true,
        ..Default::default()
    });
    let with_image = h.coordinator.enqueue(spec);
    let without = h.coordinator.enqueue(JobSpec::shell(
        "no-image",
        &["echo \"image=${CI_JOB_IMAGE-unset}\""],
    ));

    let job = h.final_job(with_image).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("\nimage=registry.example/app:1.2\n"), "{t}");
    assert!(
        t.contains("\nconf=job=image tag=1.2\n"),
        "a file variable's contents expand: {t}"
    );
    assert!(
        t.contains("\nraw-conf=job=$CI_JOB_NAME\n"),
        "unless it is raw: {t}"
    );
    let job = h.final_job(without).await;
    assert!(
        job.trace_text().contains("\nimage=unset\n"),
        "{}",
        job.trace_text()
    );
}
