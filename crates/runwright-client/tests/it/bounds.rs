//! Answers the client must not trust: huge bodies (read within a cap, never buffered whole) and answers that
//! stall past the client's timeout (issue 7, found by the fault soak).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use runwright_api::types::{UpdateJobRequest, VersionInfo};
use runwright_client::{
    FinalState, JobTrace, JobTraceOptions, PatchState, RequestJobOutcome, UpdateJobState,
};
use runwright_trace::{TraceBuffer, TraceOptions};

use crate::support::*;

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

fn running() -> UpdateJobRequest {
    UpdateJobRequest {
        token: JOB_TOKEN.into(),
        state: "running".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_100_mib_job_answer_is_refused_quickly_with_a_clear_error() {
    for sized in [true, false] {
        let server = RawGitLab::start(move |_, _| RawAnswer::Stream {
            head: "HTTP/1.1 201 Created\r\nContent-Type: application/json".into(),
            prefix: job_json(4711).to_string().into_bytes(),
            body: HUNDRED_MIB,
            sized,
        })
        .await;
        let client = fast_client(&server.url());
        let t = Instant::now();
        let outcome = client
            .request_job(RUNNER_TOKEN, "s_0123456789ab", &VersionInfo::default())
            .await;
        let took = t.elapsed();
        let RequestJobOutcome::Failed(msg) = &outcome else {
            panic!("sized {sized}: {outcome:?}");
        };
        assert!(
            msg.contains("larger than 16 MiB")
                && msg.contains("/api/v4/jobs/request")
                && msg.contains("201"),
            "{msg}"
        );
        assert!(!msg.contains(RUNNER_TOKEN), "{msg}");
        assert!(took < Duration::from_secs(10), "sized {sized}: {took:?}");
        assert_eq!(server.seen.load(Ordering::SeqCst), 1, "not retried");
        // The client stopped reading at the cap (plus what the socket buffers held).
        let written = server.written.load(Ordering::SeqCst);
        assert!(
            written < 40 * 1024 * 1024,
            "sized {sized}: {written} bytes sent"
        );
    }
}

#[tokio::test]
async fn a_100_mib_answer_to_an_update_or_a_patch_is_cut_and_the_call_succeeds() {
    let server = RawGitLab::start(|_, head| RawAnswer::Stream {
        head: if head.starts_with("PUT") {
            "HTTP/1.1 200 OK\r\nJob-Status: running\r\nContent-Type: text/plain".into()
        } else {
            "HTTP/1.1 202 Accepted\r\nJob-Status: running\r\nRange: 0-3".into()
        },
        prefix: Vec::new(),
        body: HUNDRED_MIB,
        sized: false,
    })
    .await;
    let client = fast_client(&server.url());
    let t = Instant::now();
    let update = client.update_job(4711, JOB_TOKEN, &running()).await;
    assert_eq!(update.state, UpdateJobState::Succeeded);
    let patch = client.patch_trace(4711, JOB_TOKEN, 0, b"abc", false).await;
    assert_eq!(patch.state, PatchState::Succeeded);
    assert_eq!(patch.new_offset, 3);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let written = server.written.load(Ordering::SeqCst);
    assert!(written < 80 * 1024 * 1024, "{written} bytes sent");
}

#[tokio::test]
async fn a_stalled_job_request_is_not_sent_again_but_a_stalled_update_is() {
    // POST /jobs/request may have handed out a job by the time it times out: not repeated.
    let server = RawGitLab::start(|_, _| RawAnswer::Hold(Duration::from_secs(3))).await;
    let client = client_with_timeout(&server.url(), Duration::from_millis(500));
    let outcome = client
        .request_job(RUNNER_TOKEN, "s_0123456789ab", &VersionInfo::default())
        .await;
    assert!(
        matches!(outcome, RequestJobOutcome::Failed(_)),
        "{outcome:?}"
    );
    assert_eq!(server.seen.load(Ordering::SeqCst), 1);

    // PUT is idempotent on GitLab's side: sent again after a timeout.
    let server = RawGitLab::start(|n, _| match n {
        0 => RawAnswer::Hold(Duration::from_secs(3)),
        _ => RawAnswer::Stream {
            head: "HTTP/1.1 200 OK\r\nJob-Status: running".into(),
            prefix: Vec::new(),
            body: 0,
            sized: true,
        },
    })
    .await;
    let client = client_with_timeout(&server.url(), Duration::from_millis(500));
    let update = client.update_job(4711, JOB_TOKEN, &running()).await;
    assert_eq!(update.state, UpdateJobState::Succeeded);
    assert_eq!(server.seen.load(Ordering::SeqCst), 2);

    // Without any answer at all the outcome says so, rather than "GitLab aborted the job".
    let server = RawGitLab::start(|_, _| RawAnswer::Hold(Duration::from_secs(3))).await;
    let client = client_with_timeout(&server.url(), Duration::from_millis(300));
    let update = client.update_job(4711, JOB_TOKEN, &running()).await;
    assert_eq!(update.state, UpdateJobState::NoAnswer);
}

/// Found by the fault soak: the answer to a final update stalled past the client's timeout, the client took
/// that for GitLab aborting the job, and the job stayed `running` on GitLab.
#[tokio::test]
async fn final_update_whose_answer_stalled_past_the_timeout_is_sent_again() {
    let server = RawGitLab::start(|n, _| match n {
        // The first final update and its transport retries stall.
        0..=4 => RawAnswer::Hold(Duration::from_secs(2)),
        _ => RawAnswer::Stream {
            head: "HTTP/1.1 200 OK\r\nJob-Status: success".into(),
            prefix: Vec::new(),
            body: 0,
            sized: true,
        },
    })
    .await;
    let client = client_with_timeout(&server.url(), Duration::from_millis(300));
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _cancel) = JobTrace::start(
        client,
        4711,
        JOB_TOKEN.to_owned(),
        VersionInfo::default(),
        buffer,
        JobTraceOptions {
            update_interval: Duration::from_secs(60),
            ..Default::default()
        },
    );
    tokio::time::timeout(Duration::from_secs(30), trace.finish(FinalState::success()))
        .await
        .expect("ends in time")
        .expect("final update accepted");
    assert_eq!(
        server.seen.load(Ordering::SeqCst),
        6,
        "five stalled tries, then the one answered"
    );
}
