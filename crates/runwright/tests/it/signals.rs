//! Service signals: SIGQUIT drains, SIGTERM aborts with runner_interrupted, SIGHUP and file changes reload.

use crate::harness::*;
use nix::sys::signal::Signal;
use runwright_coordinator::{JobSpec, RunnerOptions};
use std::time::Duration;

#[tokio::test]
async fn sigquit_stops_taking_jobs_and_waits_for_running_ones() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "long",
        &["echo started", "sleep 2", "echo finished"],
    ));
    h.wait_trace(id, "started\n").await;
    h.signal(Signal::SIGQUIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = h.coordinator.enqueue(JobSpec::shell("later", &["true"]));
    let status = h.wait_exit(WAIT).await;
    assert!(status.success(), "{}", h.log());
    let job = h.coordinator.job(id).expect("job");
    assert_eq!(job.state, "success");
    assert!(job.trace_text().contains("finished\n"));
    assert_eq!(h.coordinator.job(later).expect("job").state, "pending");
}

#[tokio::test]
async fn sigterm_aborts_running_jobs_as_runner_interrupted_with_their_trace() {
    let mut h = Harness::new().await;
    h.single_runner("shutdown_timeout = 20", "");
    h.start();
    let mut spec = JobSpec::shell("long", &["echo started", "sleep 300"]);
    spec.after_script = vec!["echo after-ran".into()];
    let id = h.coordinator.enqueue(spec);
    h.wait_trace(id, "started\n").await;
    h.signal(Signal::SIGTERM);
    h.wait_exit(WAIT).await;
    let job = h.coordinator.job(id).expect("job");
    assert_eq!(job.state, "failed", "{}", h.log());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_interrupted"));
    assert!(job.trace_text().contains("started\n"));
    assert!(!job.trace_text().contains("after-ran"));
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn reload_adds_a_runner_and_keeps_old_config_when_the_new_one_is_invalid() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    h.start();
    let running = h.coordinator.enqueue(
        JobSpec::shell("running", &["echo started", "sleep 3", "echo survived"]).for_runner(TOKEN),
    );
    h.wait_trace(running, "started\n").await;

    // An invalid file: logged, old config kept, running job untouched.
    std::fs::write(&h.config_path, "concurrent = \"many\"\n").expect("write");
    h.signal(Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.log().contains("keeping the previous configuration"),
        "{}",
        h.log()
    );

    // A valid file with a second runner: picked up by SIGHUP.
    let body = format!(
        "concurrent = 4\ncheck_interval = 1\n{}{}",
        h.runner_toml("test-runner", TOKEN, ""),
        h.runner_toml("second", TOKEN2, "")
    );
    h.write_config(&body);
    h.signal(Signal::SIGHUP);
    let second = h
        .coordinator
        .enqueue(JobSpec::shell("second", &["echo second"]).for_runner(TOKEN2));
    assert_eq!(h.final_job(second).await.state, "success");
    let job = h.final_job(running).await;
    assert_eq!(job.state, "success");
    assert!(job.trace_text().contains("survived\n"));
}

#[tokio::test]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    h.start();
    let first = h
        .coordinator
        .enqueue(JobSpec::shell("first", &["true"]).for_runner(TOKEN));
    assert_eq!(h.final_job(first).await.state, "success");
    let body = format!(
        "concurrent = 4\ncheck_interval = 1\n{}{}",
        h.runner_toml("test-runner", TOKEN, ""),
        h.runner_toml("added", TOKEN2, "")
    );
    h.write_config(&body);
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("for-added", &["echo added"]).for_runner(TOKEN2));
    assert_eq!(h.final_job(id).await.state, "success", "{}", h.log());
    assert!(
        h.log().contains("configuration file changed"),
        "{}",
        h.log()
    );
}

/// A second SIGTERM (or the shutdown timeout) ends the service at once; a job that ignores SIGTERM, and what it
/// detached with `setsid`, must not outlive it — also on a host without writable cgroups, where only the mark
/// sweep finds the detached process (before: both kept running after the service exited).
#[tokio::test]
async fn a_second_sigterm_exits_at_once_and_leaves_no_job_process_behind() {
    let mut h = Harness::new().await;
    h.single_runner("shutdown_timeout = 120", "");
    let no_cgroups = h.path().join("no-cgroup2-here");
    // Ten minutes between the stage's SIGTERM and its SIGKILL: only the service's exit path can end it sooner.
    h.start_with(|cmd| {
        cmd.env("RUNWRIGHT_KILL_GRACE_SECONDS", "600")
            .env("RUNWRIGHT_CGROUP_ROOT", &no_cgroups);
    });
    let id = h.coordinator.enqueue(JobSpec::shell(
        "stubborn",
        &[
            "trap '' TERM",
            "setsid sleep 619 </dev/null >/dev/null 2>&1 &",
            "echo started",
            "sleep 619",
        ],
    ));
    h.wait_trace(id, "started\n").await;
    assert_eq!(processes_running(&["sleep", "619"]), 2);
    h.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.signal(Signal::SIGTERM);
    let started = std::time::Instant::now();
    let status = h.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", h.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while processes_running(&["sleep", "619"]) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = processes_running(&["sleep", "619"]);
    // A failed run must not leave its sleeps to the next test.
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-x", "-f", "sleep 619"])
        .status();
    assert_eq!(
        left,
        0,
        "the job's sleeps outlived the service:\n{}",
        h.log()
    );
}
