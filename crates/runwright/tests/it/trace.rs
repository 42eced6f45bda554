//! The trace on the wire: masking across patch boundaries, 416 resync, 202 on the final update, and transport
//! faults on every endpoint.

use crate::harness::*;
use runwright_coordinator::masked_variable as masked;
use runwright_coordinator::{Endpoint, Fault, JobSpec};
use std::time::Duration;

const SECRET: &str = "s3cr3t-VALUE-that-must-not-leak";

#[tokio::test]
async fn masked_secret_split_across_writes_and_patches_never_reaches_gitlab() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell(
        "secret",
        &[
            // The secret is printed in two halves with a pause longer than the patch interval in between,
            // so the first half would go out in an earlier PATCH than the second.
            "printf 'start %s' \"${MY_SECRET:0:9}\"; sleep 4; printf '%s end\\n' \"${MY_SECRET:9}\"",
            "echo \"whole: $MY_SECRET\"",
            "echo \"token: glpat-abcdefghijklmnop1234\"",
        ],
    );
    spec.variables.push(masked("MY_SECRET", SECRET));
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    assert!(!t.contains(&SECRET[..9]), "first half leaked: {t}");
    assert!(t.contains("start [MASKED] end\n"), "{t}");
    assert!(t.contains("whole: [MASKED]\n"), "{t}");
    assert!(
        !t.contains("abcdefghijklmnop1234"),
        "glpat token leaked: {t}"
    );
    assert!(
        job.patches.len() >= 2,
        "expected several patches: {:?}",
        job.patches
    );
    // The job token is masked too, wherever it appears.
    assert!(!t.contains(&job.token));
}

#[tokio::test]
async fn range_mismatch_416_resyncs_and_the_trace_stays_byte_exact() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator
        .faults()
        .push_n(Endpoint::PatchTrace, Fault::RangeMismatch, 2);
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "resync",
        &["for i in $(seq 1 5); do echo tick-$i; sleep 0.4; done"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(!job.range_truncations.is_empty(), "fault was not applied");
    for i in 1..=5 {
        assert_eq!(
            t.matches(&format!("tick-{i}\n")).count(),
            1,
            "tick-{i} in {t}"
        );
    }
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn final_update_answered_202_is_retried_until_accepted() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator
        .faults()
        .push_n(Endpoint::UpdateJob, Fault::Accepted202, 3);
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("accepted", &["echo hi"]));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success");
    assert_eq!(job.accepted_202, 3);
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn server_errors_and_resets_on_every_endpoint_are_survived() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    for ep in [
        Endpoint::RequestJob,
        Endpoint::UpdateJob,
        Endpoint::PatchTrace,
    ] {
        let faults = h.coordinator.faults();
        faults.push(ep, Fault::Status(500));
        faults.push(ep, Fault::Status(502));
        faults.push(ep, Fault::Reset);
        faults.push(ep, Fault::TooManyRequests { retry_after: 1 });
    }
    h.start();
    let faults = h.coordinator.faults();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "flaky",
        &["for i in $(seq 1 4); do echo part-$i; sleep 0.5; done"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}\n{}", h.log());
    for i in 1..=4 {
        assert_eq!(t.matches(&format!("part-{i}\n")).count(), 1, "{t}");
    }
    assert_eq!(job.final_checksum_ok, Some(true));
    for ep in [
        Endpoint::RequestJob,
        Endpoint::UpdateJob,
        Endpoint::PatchTrace,
    ] {
        assert_eq!(faults.pending(ep), 0, "not all faults on {ep:?} were hit");
    }
    // The service is still healthy: a second job runs.
    let id2 = h
        .coordinator
        .enqueue(JobSpec::shell("after", &["echo again"]));
    assert_eq!(h.final_job(id2).await.state, "success");
    let _ = Duration::ZERO;
}
