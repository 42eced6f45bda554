//! Resource bounds the suite keeps honest (issue 7 item 5; the measured figures come from `bench/bounds`): a
//! coordinator answering with a 100 MiB body costs the service at most the client's cap, a clear error where
//! the body was the data asked for, and no job or runner.

use crate::harness::*;
use runwright_coordinator::{Endpoint, Fault, FaultKind, JobSpec};

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

#[tokio::test]
async fn a_100_mib_answer_to_updates_and_patches_costs_no_job() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let f = h.coordinator.faults();
    f.push(
        Endpoint::UpdateJob,
        Fault::OversizedAnswer { bytes: HUNDRED_MIB },
    );
    f.push(
        Endpoint::PatchTrace,
        Fault::OversizedAnswer { bytes: HUNDRED_MIB },
    );
    f.push(
        Endpoint::UpdateJob,
        Fault::OversizedAnswer { bytes: HUNDRED_MIB },
    );
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "big-answers",
        &["for i in 1 2 3; do echo line-$i; sleep 0.5; done"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}\n{}", h.log());
    assert_eq!(job.final_checksum_ok, Some(true));
    for i in 1..=3 {
        assert_eq!(t.matches(&format!("line-{i}\n")).count(), 1, "{t}");
    }
    assert_eq!(
        h.coordinator.faults().injected(FaultKind::OversizedAnswer),
        3
    );
}

#[tokio::test]
async fn a_100_mib_job_payload_is_refused_with_a_clear_error_and_the_next_job_runs() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator.faults().push(
        Endpoint::RequestJob,
        Fault::OversizedAnswer { bytes: HUNDRED_MIB },
    );
    let lost = h
        .coordinator
        .enqueue(JobSpec::shell("huge", &["echo never"]));
    h.start();
    // The refused job stays with GitLab (its payload was never read); the service polls on.
    let deadline = std::time::Instant::now() + WAIT;
    while h.coordinator.faults().injected(FaultKind::OversizedAnswer) == 0 {
        assert!(std::time::Instant::now() < deadline, "{}", h.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let next = h
        .coordinator
        .enqueue(JobSpec::shell("after", &["echo after-ok"]));
    let job = h.final_job(next).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());
    let log = h.log();
    assert!(
        log.contains("is larger than 16 MiB and was refused unread"),
        "{log}"
    );
    assert!(
        h.coordinator.job(lost).is_some_and(|j| !j.is_final()),
        "the refused job was never run"
    );
}
