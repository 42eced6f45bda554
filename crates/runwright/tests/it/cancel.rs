//! Cancellation from GitLab: graceful (`canceling`: script stopped, after_script runs) and hard (`canceled`:
//! everything stops). No process of the job survives either.

use crate::harness::*;
use runwright_coordinator::JobSpec;
use std::time::Duration;

async fn pid_from(h: &Harness, id: i64, file: &str) -> i32 {
    let path = h.path().join(file);
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never wrote {file}; log:\n{}", h.log());
}

#[tokio::test]
async fn graceful_cancel_stops_the_script_runs_after_script_and_leaves_no_process() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let pidfile = h.path().join("bg.pid");
    let mut spec = JobSpec::shell(
        "cancel-me",
        &[
            // A background process that detaches into its own session: only the mark sweep finds it.
            &format!("setsid sleep 300 & echo $! > {}", pidfile.display()),
            // GitLab's runner learns about a cancel from the answers to its trace patches: keep writing.
            "echo running; while true; do echo tick; sleep 0.3; done",
        ],
    );
    spec.after_script = vec!["echo after status=$CI_JOB_STATUS".into()];
    let id = h.coordinator.enqueue(spec);
    h.wait_trace(id, "running\n").await;
    let bg = pid_from(&h, id, "bg.pid").await;
    assert!(alive(bg));
    h.coordinator.cancel(id);
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "canceled", "{t}");
    assert!(t.contains("after status=canceled\n"), "{t}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alive(bg), "background process {bg} survived the cancel");
}

#[tokio::test]
async fn hard_cancel_aborts_without_after_script() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let pidfile = h.path().join("main.pid");
    let mut spec = JobSpec::shell(
        "abort-me",
        &[&format!(
            "echo $$ > {}; echo running; while true; do echo tick; sleep 0.3; done",
            pidfile.display()
        )],
    );
    spec.after_script = vec!["echo after-ran".into()];
    let id = h.coordinator.enqueue(spec);
    h.wait_trace(id, "running\n").await;
    let pid = pid_from(&h, id, "main.pid").await;
    h.coordinator.force_cancel(id);
    // GitLab marks the job canceled itself; the runner learns it on its next patch and stops.
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !alive(pid),
        "script process {pid} still running after a hard cancel"
    );
    let job = h.coordinator.job(id).expect("job");
    assert_eq!(job.state, "canceled");
    assert!(!job.trace_text().contains("after-ran"));
    // The service goes on.
    let id2 = h
        .coordinator
        .enqueue(JobSpec::shell("next", &["echo next"]));
    assert_eq!(h.final_job(id2).await.state, "success");
}

#[tokio::test]
async fn sigterm_ignoring_script_is_killed_after_the_grace_period() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let pidfile = h.path().join("stubborn.pid");
    let mut spec = JobSpec::shell(
        "stubborn",
        &[&format!(
            "bash -c 'trap \"\" TERM; echo $$ > {}; while true; do echo tick; sleep 0.3; done' ; echo unreachable",
            pidfile.display()
        )],
    );
    spec.timeout = 3600;
    let id = h.coordinator.enqueue(spec);
    let pid = pid_from(&h, id, "stubborn.pid").await;
    h.coordinator.cancel(id);
    let job = h.final_job(id).await;
    assert_eq!(job.state, "canceled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alive(pid), "TERM-ignoring process {pid} survived");
}
