//! The job journal (issue 6): a service killed with SIGKILL mid-job is finalised by the next one from the journal,
//! with its trace and without survivors; the journal keeps the full trace past `output_limit`; `runwright
//! history` and `runwright logs` read it.

use crate::harness::*;
use nix::sys::signal::Signal;
use runwright_coordinator::JobSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn journal_dir(h: &Harness) -> PathBuf {
    h.path().join("journal")
}

/// The one job directory of `id` in the service's journal.
fn job_dir(h: &Harness, id: i64) -> PathBuf {
    let jobs = journal_dir(h).join("jobs");
    let found: Vec<PathBuf> = std::fs::read_dir(&jobs)
        .expect("journal jobs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split('-').nth(1) == Some(&id.to_string()))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one")
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
        .expect("meta json")
}

async fn wait_meta(dir: &Path, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = meta(dir);
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "journal never got there: {m:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigkill_mid_job_is_finalised_from_the_journal_after_restart_and_nothing_survives() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let pids = h.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let id = h.coordinator.enqueue(JobSpec::shell(
        "crashy",
        &[
            "echo started",
            // One process that left the job's process group: only the mark finds it.
            &format!("setsid sleep 300 & echo $! > {}/setsid.pid", pids.display()),
            &format!("echo $$ > {}/shell.pid", pids.display()),
            "echo before-the-kill",
            "sleep 300",
            "echo never-printed",
        ],
    ));
    h.wait_trace(id, "before-the-kill\n").await;
    let shell = read_pid(&pids.join("shell.pid"));
    let escaped = read_pid(&pids.join("setsid.pid"));
    let dir = job_dir(&h, id);
    assert_eq!(meta(&dir)["state"], "running");

    h.signal(Signal::SIGKILL);
    h.wait_exit(WAIT).await;
    // The crash leaves the job's processes behind and the job running on the coordinator.
    assert!(alive(shell) && alive(escaped));
    assert_eq!(h.coordinator.job(id).expect("job").state, "running");

    h.start();
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed", "{}", h.log());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    let trace = job.trace_text();
    assert!(trace.contains("started\n"), "{trace}");
    assert!(trace.contains("before-the-kill\n"), "{trace}");
    assert!(!trace.contains("never-printed"), "{trace}");
    assert!(
        trace.contains("finalised from the job journal after a restart"),
        "{trace}"
    );
    assert_eq!(job.final_checksum_ok, Some(true), "{trace}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(shell) || alive(escaped)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(shell), "the job's shell survived the recovery");
    assert!(!alive(escaped), "a setsid process of the job survived");

    // GitLab has the final state a moment before the journal records that it does.
    let m = wait_meta(&dir, |m| m["reported"] == true).await;
    assert_eq!(m["state"], "failed");
    assert_eq!(m["failure_reason"], "runner_system_failure");
    assert_eq!(m["recovered"], true);
    assert_eq!(m["reported"], true);
    assert!(
        !dir.join("job-token").exists(),
        "token kept after the report"
    );

    // The restarted service goes on taking jobs.
    let next = h
        .coordinator
        .enqueue(JobSpec::shell("next", &["echo next"]));
    assert_eq!(h.final_job(next).await.state, "success");
}
