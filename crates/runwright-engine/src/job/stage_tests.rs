//! The stage loop against the recording fake executor (`crate::testing`), one test per way a job ends, each
//! checked against gitlab-runner's `common/build.go` (`executeScript`, `executeUserScripts`, `run`): which
//! stages and steps run, in which order, with which cancellation, and the failure reason, exit code and message
//! GitLab gets. Timeouts run on tokio's paused clock, so a job timeout of an hour takes no time.

use super::*;
use crate::steps::{StepError, StepPosition};
use crate::testing::{Act, Ended, Event, FakeExecutor, Recorder, StepAct, FAKE_HELPER};
use runwright_api::types::{JobVariable, Step};
use runwright_trace::TraceOptions;

const SECOND: Duration = Duration::from_secs(1);

/// A job as GitLab sends it: `steps` (`script`, `release`, …, `after_script`), an hour's timeout, no git.
fn job(steps: &[(&str, &[&str])]) -> JobResponse {
    let mut job = JobResponse {
        id: 7,
        ..Default::default()
    };
    job.runner_info.timeout = 3600;
    job.steps = steps
        .iter()
        .map(|(name, script)| Step {
            name: name.to_string(),
            script: script.iter().map(|s| s.to_string()).collect(),
            when: "on_success".into(),
            ..Default::default()
        })
        .collect();
    with_var(job, "GIT_STRATEGY", "none")
}

/// The usual job: a script and an after_script.
fn script_job() -> JobResponse {
    job(&[("script", &["echo hi"]), ("after_script", &["echo bye"])])
}

fn with_var(mut job: JobResponse, key: &str, value: &str) -> JobResponse {
    job.variables.push(JobVariable {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    });
    job
}

/// GitLab's four transfer stages, as fakes that succeed, in their places around the script.
fn transfer(exec: &FakeExecutor) -> Vec<Arc<dyn JobStep>> {
    transfer_with(exec, StepAct::Succeed, StepAct::Succeed)
}

fn transfer_with(exec: &FakeExecutor, download: StepAct, upload: StepAct) -> Vec<Arc<dyn JobStep>> {
    vec![
        exec.step(
            StepPosition::BeforeScript,
            "restore_cache",
            StepAct::Succeed,
        ),
        exec.step(StepPosition::BeforeScript, "download_artifacts", download),
        exec.step(StepPosition::AfterScript, "archive_cache", StepAct::Succeed),
        exec.step(StepPosition::AfterScript, "upload_artifacts", upload),
    ]
}

/// A helper that fails (gitlab-runner's `artifacts-uploader` ends with `logrus.Fatalln`): its stage exits 1.
const HELPER_FAILED: StepAct = StepAct::Exit(1);

struct Ran {
    outcome: JobOutcome,
    trace: String,
    rec: Recorder,
}

impl Ran {
    fn names(&self) -> Vec<String> {
        self.rec.names()
    }

    /// The `succeeded` each transfer step saw, by name.
    fn steps_saw(&self) -> Vec<(String, bool)> {
        self.rec
            .steps()
            .into_iter()
            .map(|s| (s.name, s.succeeded))
            .collect()
    }

    /// `CI_JOB_STATUS` as after_script's script exports it.
    fn after_script_status(&self) -> String {
        let script = self.rec.stage("after_script").script;
        let line = script
            .lines()
            .rev()
            .find(|l| l.starts_with("export CI_JOB_STATUS="))
            .unwrap_or_else(|| panic!("no CI_JOB_STATUS in after_script: {script}"));
        line.trim_start_matches("export CI_JOB_STATUS=").to_string()
    }
}

/// Runs `job` to its end on `exec` with `steps`; `during` gets the job's control before it starts (to cancel it
/// later from a task of its own).
async fn run_job_with(
    exec: FakeExecutor,
    steps: Vec<Arc<dyn JobStep>>,
    runner: &RunnerConfig,
    job: &JobResponse,
    during: impl FnOnce(&JobControl),
) -> Ran {
    let identity = crate::testing::identity();
    let rec = exec.recorder().clone();
    let env = JobEnv {
        runner,
        identity: &identity,
        executor: &exec,
        working_dir: PathBuf::from("/nonexistent/runwright-fake"),
        concurrent_id: 0,
        concurrent_project_id: 0,
        steps,
    };
    let trace = TraceBuffer::new(TraceOptions::default());
    let control = JobControl::new();
    during(&control);
    let outcome = run_job(&env, job, &trace, &control).await;
    let trace = String::from_utf8_lossy(&trace.read(0, usize::MAX)).into_owned();
    Ran {
        outcome,
        trace,
        rec,
    }
}

/// Runs `job` with GitLab's four transfer steps around it.
async fn run(exec: FakeExecutor, job: &JobResponse) -> Ran {
    let steps = transfer(&exec);
    run_job_with(exec, steps, &RunnerConfig::default(), job, |_| {}).await
}

/// After `after`, `act` on the job's control (a cancel or an abort from GitLab).
fn at(after: Duration, act: impl FnOnce(&JobControl) + Send + 'static) -> impl FnOnce(&JobControl) {
    move |control: &JobControl| {
        let control = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            act(&control);
        });
    }
}

/// What each transfer step saw of the script's result.
fn saw(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, ok)| (n.to_string(), *ok)).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn failed(reason: FailureReason, exit_code: Option<i32>, message: &str) -> JobOutcome {
    JobOutcome::failed(reason, exit_code, message)
}

/// Every stage and step of a job that runs to its end.
const ALL: &[&str] = &[
    "prepare",
    "prepare_script",
    "get_sources",
    "restore_cache",
    "download_artifacts",
    "step_script",
    "after_script",
    "archive_cache",
    "upload_artifacts",
    "cleanup_file_variables",
    "cleanup",
];

#[tokio::test(start_paused = true)]
async fn a_job_that_succeeds_runs_every_stage_in_gitlabs_order() {
    let job = job(&[
        ("script", &["echo hi"]),
        ("release", &["echo release"]),
        ("after_script", &["echo bye"]),
    ]);
    let ran = run(FakeExecutor::new(), &job).await;
    assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "step_script",
            "step_release",
            "after_script",
            "archive_cache",
            "upload_artifacts",
            "cleanup_file_variables",
            "cleanup",
        ])
    );
    assert!(ran.trace.contains("Job succeeded"), "{}", ran.trace);
    assert!(!ran.trace.contains("ERROR"), "{}", ran.trace);
    // Each stage gets its own script.
    assert!(ran
        .rec
        .stage("prepare_script")
        .script
        .contains("Running on $(hostname)..."));
    assert!(ran
        .rec
        .stage("get_sources")
        .script
        .contains("Skipping Git repository setup"));
    assert!(ran.rec.stage("step_script").script.contains("echo hi"));
    assert!(!ran.rec.stage("step_script").script.contains("echo release"));
    assert!(ran
        .rec
        .stage("step_release")
        .script
        .contains("echo release"));
    let after = ran.rec.stage("after_script").script;
    assert!(
        after.contains("Running after script...") && after.contains("echo bye"),
        "{after}"
    );
    assert_eq!(ran.after_script_status(), "success");
    // Every transfer step sees the script's success, and has the job's time left.
    assert!(
        ran.steps_saw().iter().all(|(_, ok)| *ok),
        "{:?}",
        ran.steps_saw()
    );
    assert!(ran
        .rec
        .steps()
        .iter()
        .all(|s| s.time_left == Duration::from_secs(3600)));
    // Nothing was canceled, nothing took time.
    for e in ran.rec.events() {
        if let Event::Stage(s) = e {
            assert_eq!(s.ended, Ended::Exited(0), "{s:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_executor_that_knows_its_host_saves_the_prepare_script_stage() {
    let exec = FakeExecutor::new().with_host_name("fake-host");
    let ran = run(exec, &script_job()).await;
    assert!(ran.outcome.success, "{}", ran.trace);
    assert!(!ran.names().contains(&"prepare_script".to_string()));
    assert!(
        ran.trace.contains("Running on fake-host..."),
        "{}",
        ran.trace
    );
}

#[tokio::test(start_paused = true)]
async fn after_script_runs_only_when_the_job_has_one() {
    for job in [
        job(&[("script", &["echo hi"])]),
        job(&[("script", &["echo hi"]), ("after_script", &[])]),
    ] {
        let ran = run(FakeExecutor::new(), &job).await;
        assert!(ran.outcome.success, "{}", ran.trace);
        let expected: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|n| *n != "after_script")
            .collect();
        assert_eq!(ran.names(), names(&expected));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_script_fails_the_job_with_its_exit_code_and_after_script_still_runs() {
    let job = job(&[
        ("script", &["exit 3"]),
        ("release", &["echo release"]),
        ("after_script", &["echo bye"]),
    ]);
    let exec = FakeExecutor::new().on("step_script", [Act::Exit(3)]);
    let ran = run(exec, &job).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(3), "exit status 3")
    );
    // The steps after the failing one do not run; after_script and the failure's uploads do.
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(ran.after_script_status(), "failed");
    assert_eq!(
        ran.steps_saw(),
        saw(&[
            ("restore_cache", true),
            ("download_artifacts", true),
            ("archive_cache", false),
            ("upload_artifacts", false),
        ])
    );
    assert!(
        ran.trace.contains("ERROR: Job failed: exit status 3"),
        "{}",
        ran.trace
    );
}

/// GitLab matches `allow_failure: exit_codes` against the exit code the runner reports: the user script's, as
/// the shell gave it (runner executors/shell `NormalizeExitCode`), never one of after_script or a later step.
#[tokio::test(start_paused = true)]
async fn the_scripts_exit_code_reaches_gitlab_unchanged_for_allow_failure_exit_codes() {
    for code in [1, 2, 42, 126, 127, 137, 255] {
        let exec = FakeExecutor::new().on("step_script", [Act::Exit(code)]);
        let ran = run(exec, &script_job()).await;
        assert_eq!(
            ran.outcome,
            failed(
                FailureReason::ScriptFailure,
                Some(code),
                &format!("exit status {code}")
            )
        );
    }

    // A failing after_script does not replace the script's code, even when its errors count.
    for ignore in ["true", "false"] {
        let exec = FakeExecutor::new()
            .on("step_script", [Act::Exit(42)])
            .on("after_script", [Act::Exit(7)]);
        let ran = run(
            exec,
            &with_var(script_job(), "AFTER_SCRIPT_IGNORE_ERRORS", ignore),
        )
        .await;
        assert_eq!(
            ran.outcome,
            failed(FailureReason::ScriptFailure, Some(42), "exit status 42"),
            "AFTER_SCRIPT_IGNORE_ERRORS={ignore}"
        );
        assert!(ran
            .trace
            .contains("after_script failed, but job will continue unaffected: exit status 7"));
    }

    // Nor does a failing upload (runner `pickPriorityError`: the job's error first).
    let exec = FakeExecutor::new().on("step_script", [Act::Exit(42)]);
    let steps = transfer_with(&exec, StepAct::Succeed, HELPER_FAILED);
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &script_job(), |_| {}).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(42), "exit status 42")
    );

    // The runner's own stages carry no exit code a job could allow.
    let exec = FakeExecutor::new().on("prepare_script", [Act::Exit(1)]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(ran.outcome.exit_code, None);
}

#[tokio::test(start_paused = true)]
async fn a_failing_upload_fails_a_successful_job_with_the_helpers_exit_code() {
    let exec = FakeExecutor::new();
    let steps = transfer_with(&exec, StepAct::Succeed, HELPER_FAILED);
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &script_job(), |_| {}).await;
    // gitlab-runner's words for a failing stage: the helper said why in the stage's output.
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(1), "exit status 1")
    );
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(ran.rec.stage("upload_artifacts").ended, Ended::Exited(1));
}

#[tokio::test(start_paused = true)]
async fn after_script_fails_a_successful_job_only_when_its_errors_are_not_ignored() {
    // Ignored by default (AFTER_SCRIPT_IGNORE_ERRORS=true): a warning, the job succeeds.
    let exec = FakeExecutor::new().on("after_script", [Act::Exit(7)]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
    assert!(
        ran.trace.contains(
            "WARNING: after_script failed, but job will continue unaffected: exit status 7"
        ),
        "{}",
        ran.trace
    );
    assert!(ran.steps_saw().iter().all(|(_, ok)| *ok));

    let exec = FakeExecutor::new().on("after_script", [Act::Exit(7)]);
    let ran = run(
        exec,
        &with_var(script_job(), "AFTER_SCRIPT_IGNORE_ERRORS", "false"),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(7), "exit status 7")
    );
    // The uploads then save what a failed job saves.
    assert_eq!(
        ran.steps_saw()[2..],
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_cancel_stops_the_script_and_still_runs_after_script_and_the_failure_uploads() {
    let exec = FakeExecutor::new().on("step_script", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &script_job(),
        at(10 * SECOND, JobControl::cancel_gracefully),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(
        ran.rec.stage("step_script").ended,
        Ended::Canceled(10 * SECOND)
    );
    assert_eq!(ran.rec.stage("after_script").ended, Ended::Exited(0));
    assert_eq!(ran.after_script_status(), "canceled");
    assert_eq!(
        ran.steps_saw()[2..],
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
    assert!(
        ran.trace.contains("ERROR: Job failed: canceled"),
        "{}",
        ran.trace
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_cancel_before_the_script_skips_it_and_after_script_still_runs() {
    // A cancel stops the user script only: get_sources finishes, the script never starts.
    let exec = FakeExecutor::new().on("get_sources", [Act::Run(20 * SECOND, 0)]);
    let steps = transfer(&exec);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &script_job(),
        at(5 * SECOND, JobControl::cancel_gracefully),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    assert_eq!(ran.rec.stage("get_sources").ended, Ended::Exited(0));
    let expected: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|n| *n != "step_script")
        .collect();
    assert_eq!(ran.names(), names(&expected));
    assert_eq!(ran.after_script_status(), "canceled");
}

#[tokio::test(start_paused = true)]
async fn a_hard_cancel_kills_the_stage_and_runs_neither_after_script_nor_the_uploads() {
    for (reason, outcome) in [
        (
            AbortReason::Remote,
            failed(FailureReason::JobCanceled, None, "canceled"),
        ),
        (
            AbortReason::RunnerInterrupted,
            failed(
                FailureReason::RunnerInterrupted,
                None,
                "aborted: interrupted by the runner shutting down",
            ),
        ),
    ] {
        let exec = FakeExecutor::new().on("step_script", [Act::Hang]);
        let steps = transfer(&exec);
        let ran = run_job_with(
            exec,
            steps,
            &RunnerConfig::default(),
            &script_job(),
            at(10 * SECOND, move |c| c.abort(reason)),
        )
        .await;
        assert_eq!(ran.outcome, outcome, "{reason:?}");
        assert_eq!(
            ran.names(),
            names(&[
                "prepare",
                "prepare_script",
                "get_sources",
                "restore_cache",
                "download_artifacts",
                "step_script",
                "cleanup_file_variables",
                "cleanup",
            ])
        );
        assert_eq!(
            ran.rec.stage("step_script").ended,
            Ended::Canceled(10 * SECOND)
        );
        assert!(
            ran.trace
                .contains(&format!("ERROR: Job failed: {}", outcome.message)),
            "{}",
            ran.trace
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hard_cancel_after_a_graceful_one_stops_after_script() {
    let exec = FakeExecutor::new()
        .on("step_script", [Act::Hang])
        .on("after_script", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &script_job(),
        |control: &JobControl| {
            at(10 * SECOND, JobControl::cancel_gracefully)(control);
            at(25 * SECOND, |c| c.abort(AbortReason::Remote))(control);
        },
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    assert_eq!(
        ran.rec.stage("step_script").ended,
        Ended::Canceled(10 * SECOND)
    );
    assert_eq!(
        ran.rec.stage("after_script").ended,
        Ended::Canceled(15 * SECOND)
    );
    // No upload after an abort; the executor is still cleaned up.
    assert_eq!(ran.names().last().map(String::as_str), Some("cleanup"));
    assert_eq!(ran.rec.steps().len(), 2, "{:?}", ran.names());
}

#[tokio::test(start_paused = true)]
async fn a_hard_cancel_during_get_sources_ends_the_job_without_a_retry() {
    let exec = FakeExecutor::new().on("get_sources", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &with_var(script_job(), "GET_SOURCES_ATTEMPTS", "3"),
        at(5 * SECOND, |c| c.abort(AbortReason::Remote)),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup_file_variables",
            "cleanup"
        ])
    );
    assert!(!ran.trace.contains("Retrying"), "{}", ran.trace);
}

#[tokio::test(start_paused = true)]
async fn the_job_timeout_stops_the_script_and_skips_after_script_and_the_uploads() {
    let mut job = script_job();
    job.runner_info.timeout = 60;
    let exec = FakeExecutor::new().on("step_script", [Act::Hang]);
    let ran = run(exec, &job).await;
    let message = "execution took longer than 1m0s seconds";
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobExecutionTimeout, None, message)
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "step_script",
            "cleanup_file_variables",
            "cleanup",
        ])
    );
    assert_eq!(
        ran.rec.stage("step_script").ended,
        Ended::Canceled(60 * SECOND)
    );
    assert!(
        ran.trace.contains(&format!("ERROR: Job failed: {message}")),
        "{}",
        ran.trace
    );
}

#[tokio::test(start_paused = true)]
async fn the_job_timeout_during_after_script_ends_the_job_as_a_timeout() {
    let mut job = script_job();
    job.runner_info.timeout = 60;
    let exec = FakeExecutor::new()
        .on("step_script", [Act::Run(50 * SECOND, 0)])
        .on("after_script", [Act::Hang]);
    let ran = run(exec, &job).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::JobExecutionTimeout,
            None,
            "execution took longer than 1m0s seconds"
        )
    );
    assert_eq!(
        ran.rec.stage("after_script").ended,
        Ended::Canceled(10 * SECOND)
    );
    assert_eq!(ran.rec.steps().len(), 2, "{:?}", ran.names());
    assert_eq!(ran.names().last().map(String::as_str), Some("cleanup"));
}

#[tokio::test(start_paused = true)]
async fn the_job_timeout_during_get_sources_says_the_stage_did_not_complete() {
    let mut job = script_job();
    job.runner_info.timeout = 60;
    let exec = FakeExecutor::new().on("get_sources", [Act::Hang]);
    let ran = run(exec, &job).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::JobExecutionTimeout,
            None,
            "execution took longer than 1m0s seconds"
        )
    );
    assert_eq!(
        ran.rec.stage("get_sources").ended,
        Ended::Canceled(60 * SECOND)
    );
    assert!(
        ran.trace.contains(
            "WARNING: get_sources could not run to completion because the timeout was exceeded."
        ),
        "{}",
        ran.trace
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup_file_variables",
            "cleanup"
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn get_sources_timeout_ends_the_job_as_a_timeout() {
    let runner = RunnerConfig {
        get_sources_timeout: Some(30 * SECOND),
        ..Default::default()
    };
    let exec = FakeExecutor::new().on("get_sources", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(exec, steps, &runner, &script_job(), |_| {}).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::JobExecutionTimeout,
            None,
            "get sources timeout: exceeded timeout of 30s"
        )
    );
    assert_eq!(
        ran.rec.stage("get_sources").ended,
        Ended::Canceled(30 * SECOND)
    );
    // runner `executePrepareScripts`: a get_sources timeout ends the job, nothing is uploaded.
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup_file_variables",
            "cleanup"
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn the_script_timeout_stops_the_script_and_after_script_runs_as_timedout() {
    let exec = FakeExecutor::new().on("step_script", [Act::Hang]);
    let ran = run(
        exec,
        &with_var(script_job(), "RUNNER_SCRIPT_TIMEOUT", "30s"),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::JobExecutionTimeout,
            None,
            "execution took longer than 30s seconds"
        )
    );
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(
        ran.rec.stage("step_script").ended,
        Ended::Canceled(30 * SECOND)
    );
    assert_eq!(ran.after_script_status(), "timedout");
    assert_eq!(
        ran.steps_saw()[2..],
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
}

#[tokio::test(start_paused = true)]
async fn after_script_has_its_own_timeout_and_its_timeout_does_not_fail_the_job() {
    for (value, timeout, shown) in [
        (Some("10s"), 10 * SECOND, "10s"),
        // RUNNER_AFTER_SCRIPT_TIMEOUT's default (runner `AfterScriptTimeout`).
        (None, 300 * SECOND, "5m0s"),
    ] {
        let job = match value {
            Some(v) => with_var(script_job(), "RUNNER_AFTER_SCRIPT_TIMEOUT", v),
            None => script_job(),
        };
        let exec = FakeExecutor::new().on("after_script", [Act::Hang]);
        let ran = run(exec, &job).await;
        assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
        assert_eq!(
            ran.rec.stage("after_script").ended,
            Ended::Canceled(timeout)
        );
        assert!(
            ran.trace
                .contains(&format!("WARNING: after_script timed out after {shown}")),
            "{}",
            ran.trace
        );
        assert_eq!(ran.names(), names(ALL));
        assert!(ran.steps_saw().iter().all(|(_, ok)| *ok));
    }
}

#[tokio::test(start_paused = true)]
async fn an_executor_failure_in_the_script_is_a_runner_system_failure() {
    let exec = FakeExecutor::new().on("step_script", [Act::System("lost the container".into())]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::RunnerSystemFailure,
            None,
            "lost the container"
        )
    );
    assert!(
        ran.trace
            .contains("ERROR: Job failed (system failure): lost the container"),
        "{}",
        ran.trace
    );
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(ran.after_script_status(), "failed");
}

#[tokio::test(start_paused = true)]
async fn a_failing_prepare_ends_the_job_before_any_stage() {
    let exec = FakeExecutor::new().prepare(Act::System("cannot reach dockerd".into()));
    let ran = run(exec, &script_job()).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::RunnerSystemFailure,
            None,
            "preparing the fake executor: cannot reach dockerd"
        )
    );
    // No session, so nothing to clean up either.
    assert_eq!(ran.names(), names(&["prepare"]));

    // An executor's own reason (an image that cannot be pulled) reaches GitLab as it is.
    let exec = FakeExecutor::new().prepare(Act::Failed(
        FailureReason::ImagePullFailure,
        "failed to pull image \"nope\"".into(),
    ));
    let ran = run(exec, &script_job()).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::ImagePullFailure,
            None,
            "failed to pull image \"nope\""
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_prepare_script_is_a_runner_system_failure() {
    let exec = FakeExecutor::new().on("prepare_script", [Act::Exit(1)]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::RunnerSystemFailure, None, "exit status 1")
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "cleanup_file_variables",
            "cleanup"
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn prepare_timeout_covers_the_prepare_script_stage() {
    let runner = RunnerConfig {
        prepare_timeout: Some(30 * SECOND),
        ..Default::default()
    };
    let exec = FakeExecutor::new()
        .prepare(Act::Run(10 * SECOND, 0))
        .on("prepare_script", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(exec, steps, &runner, &script_job(), |_| {}).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::JobExecutionTimeout,
            None,
            "prepare timeout: exceeded timeout of 30s"
        )
    );
    // 30 s for both: 10 s preparing, 20 s of the stage.
    assert_eq!(
        ran.rec.stage("prepare_script").ended,
        Ended::Canceled(20 * SECOND)
    );
    assert!(ran.trace.contains(
        "WARNING: prepare_script could not run to completion because the timeout was exceeded."
    ));
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "cleanup_file_variables",
            "cleanup"
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn get_sources_is_retried_after_clearing_the_worktree() {
    let exec = FakeExecutor::new().on("get_sources", [Act::Exit(1), Act::Exit(1)]);
    let ran = run(exec, &with_var(script_job(), "GET_SOURCES_ATTEMPTS", "3")).await;
    assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
    assert_eq!(
        ran.names()[..6],
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "clear_worktree",
            "get_sources",
            "get_sources",
        ])
    );
    assert_eq!(ran.trace.matches("WARNING: Retrying...").count(), 2);
    assert!(ran
        .rec
        .stage("clear_worktree")
        .script
        .contains("Deleting tracked and untracked files"));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_step_name_fails_the_job_as_a_system_failure() {
    let job = job(&[
        ("script", &["echo hi"]),
        ("bad-name", &["echo no"]),
        ("after_script", &["echo bye"]),
    ]);
    let ran = run(FakeExecutor::new(), &job).await;
    assert_eq!(
        ran.outcome,
        failed(
            FailureReason::RunnerSystemFailure,
            None,
            "invalid step name \"bad-name\""
        )
    );
    assert_eq!(ran.names(), names(ALL));
    assert_eq!(ran.after_script_status(), "failed");
}

/// runner common/build.go `executePrepareScripts` → `executeScript`: a get_sources that keeps failing fails the
/// job with its exit code; the user script and after_script are skipped, a failed job's caches and artifacts
/// are still saved.
#[tokio::test(start_paused = true)]
async fn a_failing_get_sources_skips_the_script_and_saves_what_a_failed_job_saves() {
    let exec = FakeExecutor::new().on("get_sources", [Act::Exit(128), Act::Exit(128)]);
    let ran = run(exec, &with_var(script_job(), "GET_SOURCES_ATTEMPTS", "2")).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(128), "exit status 128")
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "clear_worktree",
            "get_sources",
            "archive_cache",
            "upload_artifacts",
            "cleanup_file_variables",
            "cleanup",
        ])
    );
    assert_eq!(
        ran.steps_saw(),
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );

    // The same for a get_sources the runner cannot run at all: a system failure.
    let exec = FakeExecutor::new().on("get_sources", [Act::System("no shell".into())]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::RunnerSystemFailure, None, "no shell")
    );
    assert_eq!(
        ran.steps_saw(),
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_artifact_download_skips_the_script_and_saves_what_a_failed_job_saves() {
    let exec = FakeExecutor::new();
    let steps = transfer_with(&exec, HELPER_FAILED, StepAct::Succeed);
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &script_job(), |_| {}).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(1), "exit status 1")
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "archive_cache",
            "upload_artifacts",
            "cleanup_file_variables",
            "cleanup",
        ])
    );
    assert_eq!(
        ran.steps_saw()[2..],
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
}

/// A transfer stopped by an abort does not count as its own failure: the job ends as canceled, nothing more
/// runs.
#[tokio::test(start_paused = true)]
async fn a_hard_cancel_during_a_download_ends_the_job_as_canceled() {
    let exec = FakeExecutor::new();
    let steps = transfer_with(&exec, StepAct::Hang, StepAct::Succeed);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &script_job(),
        at(5 * SECOND, |c| c.abort(AbortReason::Remote)),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    assert_eq!(
        ran.names(),
        names(&[
            "prepare",
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "cleanup_file_variables",
            "cleanup",
        ])
    );
}

/// Each transfer step writes its stage's script, which calls the executor's helper command; the engine runs it
/// as a stage like any other, never doing the transfer itself.
#[tokio::test(start_paused = true)]
async fn transfer_steps_are_stages_calling_the_executors_helper_command() {
    let ran = run(FakeExecutor::new(), &script_job()).await;
    assert!(ran.outcome.success, "{}", ran.trace);
    for step in ran.rec.steps() {
        assert_eq!(step.helper, FAKE_HELPER, "{step:?}");
        let stage = ran.rec.stage(&step.name);
        assert!(
            stage
                .script
                .contains(&format!("{FAKE_HELPER} fake-step {}", step.name)),
            "{}",
            stage.script
        );
        // After the job's exports, in the project directory (runner `writeExports`, `writeCdBuildDir`).
        assert!(
            stage.script.contains("export GITLAB_ENV="),
            "{}",
            stage.script
        );
        assert!(
            stage
                .script
                .contains("cd /nonexistent/runwright-fake/builds/"),
            "{}",
            stage.script
        );
        assert!(
            ran.trace.contains(&format!("Fake {}", step.name)),
            "{}",
            ran.trace
        );
    }
    assert_eq!(ran.rec.steps().len(), 4);
}

/// runner common/build.go `attemptExecuteStage`: a failing download stage is tried again per
/// `ARTIFACT_DOWNLOAD_ATTEMPTS`, with `Retrying...` between the attempts.
#[tokio::test(start_paused = true)]
async fn a_failing_download_stage_is_tried_again_per_artifact_download_attempts() {
    let exec = FakeExecutor::new().on("download_artifacts", [Act::Exit(1), Act::Exit(1)]);
    let steps = transfer(&exec);
    let job = with_var(script_job(), "ARTIFACT_DOWNLOAD_ATTEMPTS", "3");
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &job, |_| {}).await;
    assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
    assert_eq!(ran.rec.stages("download_artifacts").len(), 3);
    assert_eq!(ran.trace.matches("WARNING: Retrying...").count(), 2);

    // Out of attempts: the job fails with the helper's exit code, the script is skipped.
    let exec = FakeExecutor::new().on("download_artifacts", [Act::Exit(1), Act::Exit(1)]);
    let steps = transfer(&exec);
    let job = with_var(script_job(), "ARTIFACT_DOWNLOAD_ATTEMPTS", "2");
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &job, |_| {}).await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::ScriptFailure, Some(1), "exit status 1")
    );
    assert!(!ran.names().contains(&"step_script".to_string()));
}

/// Cache stages never fail the job (their helper calls are guarded; a stage that fails anyway only warns).
#[tokio::test(start_paused = true)]
async fn a_failing_cache_stage_only_warns() {
    let exec = FakeExecutor::new()
        .on("restore_cache", [Act::Exit(2)])
        .on("archive_cache", [Act::Exit(3)]);
    let ran = run(exec, &script_job()).await;
    assert_eq!(ran.outcome, JobOutcome::succeeded(), "{}", ran.trace);
    assert!(
        ran.trace.contains("WARNING: restore_cache: exit status 2"),
        "{}",
        ran.trace
    );
    assert!(
        ran.trace.contains("WARNING: archive_cache: exit status 3"),
        "{}",
        ran.trace
    );
    assert_eq!(ran.names(), names(ALL));
}

/// A step that cannot write its script (an unknown `cache:policy`) fails the job before its stage runs; the
/// failed job's caches and artifacts are still saved.
#[tokio::test(start_paused = true)]
async fn a_step_that_cannot_write_its_script_fails_the_job_without_a_stage() {
    let exec = FakeExecutor::new();
    let refused = StepError {
        reason: FailureReason::ScriptFailure,
        message: "unknown cache policy \"pul\" (use pull, push or pull-push)".into(),
        exit_code: None,
    };
    let steps = transfer_with(&exec, StepAct::Refuse(refused.clone()), StepAct::Succeed);
    let ran = run_job_with(exec, steps, &RunnerConfig::default(), &script_job(), |_| {}).await;
    assert_eq!(ran.outcome, failed(refused.reason, None, &refused.message));
    assert!(!ran.names().contains(&"download_artifacts".to_string()));
    assert!(!ran.names().contains(&"step_script".to_string()));
    assert_eq!(
        ran.steps_saw()[2..],
        saw(&[("archive_cache", false), ("upload_artifacts", false)])
    );
}

/// gitlab-runner `writeCleanupScript`: the file variables, the temporary dir and the git lock files go in a
/// stage of the job's, run also after an abort; the runner process removes nothing itself.
#[tokio::test(start_paused = true)]
async fn cleanup_file_variables_is_a_stage_even_after_an_abort() {
    let mut job = with_var(script_job(), "GIT_STRATEGY", "fetch");
    job.variables.push(JobVariable {
        key: "SECRET_FILE".into(),
        value: "s3cr3t".into(),
        file: true,
        ..Default::default()
    });
    let exec = FakeExecutor::new().on("step_script", [Act::Hang]);
    let steps = transfer(&exec);
    let ran = run_job_with(
        exec,
        steps,
        &RunnerConfig::default(),
        &job,
        at(5 * SECOND, |c| c.abort(AbortReason::Remote)),
    )
    .await;
    assert_eq!(
        ran.outcome,
        failed(FailureReason::JobCanceled, None, "canceled")
    );
    let names = ran.names();
    assert_eq!(
        names[names.len() - 2..],
        ["cleanup_file_variables", "cleanup"]
    );
    let cleanup = ran.rec.stage("cleanup_file_variables");
    assert_eq!(cleanup.ended, Ended::Exited(0));
    let script = &cleanup.script;
    // The file variable's path, never its content written again.
    assert!(script.contains(".tmp/SECRET_FILE"), "{script}");
    assert!(!script.contains("s3cr3t"), "{script}");
    assert!(
        script.contains("rm -r -f /nonexistent/runwright-fake/builds/"),
        "{script}"
    );
    assert!(script.contains(".git/index.lock"), "{script}");
    assert!(
        ran.trace
            .contains("Cleaning up project directory and file based variables"),
        "{}",
        ran.trace
    );
}
