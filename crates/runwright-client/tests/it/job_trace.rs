//! `JobTrace` against a fake GitLab that stores the trace as GitLab does (append at the stored length, `416`
//! otherwise), with scripted answers to the job updates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runwright_api::types::VersionInfo;
use runwright_api::FailureReason;
use runwright_client::{ClientError, FinalState, JobTrace, JobTraceOptions, RemoteCancel};
use runwright_trace::{TraceBuffer, TraceOptions};

use crate::support::*;

const JOB_ID: i64 = 4711;

/// GitLab's append rule (gitlab app/services/ci/append_build_trace_service.rb): the start of `Content-Range`
/// must equal the stored length, else `416` with `Range: 0-<length>`.
fn apply_patch(stored: &mut Vec<u8>, r: &Recorded) -> Reply {
    let start: usize = r
        .header("content-range")
        .and_then(|v| v.split('-').next())
        .and_then(|s| s.parse().ok())
        .expect("Content-Range start");
    if start != stored.len() {
        return Reply::status(416).header("Range", &format!("0-{}", stored.len()));
    }
    stored.extend_from_slice(&r.body);
    Reply::status(202)
        .header("Range", &format!("0-{}", stored.len()))
        .header("Job-Status", "running")
}

/// A fake GitLab: patches go through [`apply_patch`] on `stored`, PUTs are answered by `put`.
async fn gitlab(
    stored: Arc<Mutex<Vec<u8>>>,
    mut put: impl FnMut(&Recorded, &mut Vec<u8>) -> Reply + Send + 'static,
) -> FakeGitLab {
    FakeGitLab::start(move |r| {
        let mut stored = stored.lock().expect("stored");
        match r.method.as_str() {
            "PATCH" => apply_patch(&mut stored, r),
            "PUT" => put(r, &mut stored),
            other => panic!("unexpected {other} {}", r.path),
        }
    })
    .await
}

fn fast_opts() -> JobTraceOptions {
    JobTraceOptions {
        update_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

fn start(
    server: &FakeGitLab,
    buffer: &TraceBuffer,
    opts: JobTraceOptions,
) -> (JobTrace, tokio::sync::watch::Receiver<RemoteCancel>) {
    JobTrace::start(
        fast_client(&server.url()),
        JOB_ID,
        JOB_TOKEN.to_owned(),
        VersionInfo::default(),
        buffer.clone(),
        opts,
    )
}

/// `JobTrace::finish` bounded in time, so a regression that loops fails instead of hanging the suite.
async fn finish(trace: JobTrace, state: FinalState) -> Result<(), ClientError> {
    tokio::time::timeout(Duration::from_secs(20), trace.finish(state))
        .await
        .expect("final update loop ends in time")
}

fn all(buffer: &TraceBuffer) -> Vec<u8> {
    buffer.read(0, usize::MAX)
}

fn puts(server: &FakeGitLab) -> Vec<serde_json::Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(Recorded::json)
        .collect()
}

#[tokio::test]
async fn streams_the_trace_while_running_and_sends_the_final_state() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let server = gitlab(Arc::clone(&stored), |_, _| {
        Reply::status(200).header("Job-Status", "success")
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _cancel) = start(&server, &buffer, fast_opts());

    buffer.write(b"hello\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *stored.lock().expect("stored"),
        b"hello\n",
        "sent while running"
    );
    buffer.write(b"world\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.count("PUT"),
        0,
        "no keep-alive while patches succeed"
    );
    buffer.write(b"last words");
    finish(trace, FinalState::success())
        .await
        .expect("final update");

    assert_eq!(*stored.lock().expect("stored"), all(&buffer));
    let patches: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.header("content-range").unwrap_or("").to_owned())
        .collect();
    assert_eq!(patches, ["0-5", "6-11", "12-21"]);
    let puts = puts(&server);
    assert_eq!(puts.len(), 1);
    let body = &puts[0];
    assert_eq!(body["state"], "success");
    assert_eq!(body["token"], JOB_TOKEN);
    assert_eq!(body["checksum"], buffer.checksum().as_str());
    assert_eq!(body["output"]["checksum"], buffer.checksum().as_str());
    assert_eq!(body["output"]["bytesize"], buffer.len());
    assert!(
        body.get("failure_reason").is_none() && body.get("exit_code").is_none(),
        "{body}"
    );
    assert!(buffer.is_finished(), "finish() finishes the buffer");
    let last = server.requests().last().cloned().expect("requests");
    assert_eq!(last.method, "PUT", "the final PUT comes after every patch");
}

#[tokio::test]
async fn patches_carry_at_most_max_patch_bytes() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let server = gitlab(Arc::clone(&stored), |_, _| Reply::status(200)).await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _cancel) = start(
        &server,
        &buffer,
        JobTraceOptions {
            max_patch: 1000,
            ..fast_opts()
        },
    );
    buffer.write(&[b'x'; 2500]);
    finish(trace, FinalState::success())
        .await
        .expect("final update");
    let ranges: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.header("content-range").unwrap_or("").to_owned())
        .collect();
    assert_eq!(ranges, ["0-999", "1000-1999", "2000-2499"]);
    assert_eq!(stored.lock().expect("stored").len(), 2500);
}

#[tokio::test]
async fn resyncs_to_the_range_gitlab_reports_on_416() {
    // GitLab already holds the first 6 bytes (say, from a patch whose answer was lost).
    let stored = Arc::new(Mutex::new(b"hello ".to_vec()));
    let server = gitlab(Arc::clone(&stored), |_, _| Reply::status(200)).await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    buffer.write(b"hello world");
    let (trace, _cancel) = start(&server, &buffer, fast_opts());
    finish(trace, FinalState::success())
        .await
        .expect("final update");

    assert_eq!(*stored.lock().expect("stored"), b"hello world");
    let ranges: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.header("content-range").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        ranges,
        ["0-10", "6-10"],
        "416 at 0, then continue from GitLab's length, not from 0"
    );
}

#[tokio::test]
async fn final_update_waits_on_202_then_succeeds() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let mut n = 0;
    let server = gitlab(Arc::clone(&stored), move |_, _| {
        n += 1;
        if n == 1 {
            // GitLab is still persisting chunks; without the fast switch this is a 30 s wait.
            Reply::status(202).header("X-GitLab-Trace-Update-Interval", "30")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    buffer.write(b"log");
    let (trace, _cancel) = start(&server, &buffer, fast_opts());
    let started = Instant::now();
    finish(trace, FinalState::success())
        .await
        .expect("final update");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let puts = puts(&server);
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0], puts[1], "the same final state is sent again");
}

#[tokio::test]
async fn resends_the_whole_trace_from_zero_on_412() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let mut n = 0;
    let server = gitlab(Arc::clone(&stored), move |_, stored| {
        n += 1;
        if n == 1 {
            // Checksum mismatch: GitLab resets its copy (the runner advertises `trace_reset`).
            stored.clear();
            Reply::status(412)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    buffer.write(b"0123456789");
    let (trace, _cancel) = start(&server, &buffer, fast_opts());
    finish(trace, FinalState::success())
        .await
        .expect("final update");

    assert_eq!(
        *stored.lock().expect("stored"),
        b"0123456789",
        "GitLab ends with the same bytes"
    );
    let seq: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.header("content-range").unwrap_or("")))
        .collect();
    assert_eq!(seq, ["PATCH 0-9", "PUT ", "PATCH 0-9", "PUT "]);
}

#[tokio::test]
async fn job_status_canceling_then_canceled_on_patches() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new("canceling"));
    let patch_status = Arc::clone(&status);
    let server = FakeGitLab::start(move |r| {
        let mut stored = stored.lock().expect("stored");
        match r.method.as_str() {
            "PATCH" => {
                let reply = apply_patch(&mut stored, r);
                let s = *patch_status.lock().expect("status");
                Reply {
                    headers: vec![("Job-Status".into(), s.into())],
                    ..reply
                }
            }
            _ => Reply::status(403).header("Job-Status", "canceled"),
        }
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, mut cancel) = start(&server, &buffer, fast_opts());

    buffer.write(b"running");
    tokio::time::timeout(
        Duration::from_secs(5),
        cancel.wait_for(|c| *c == RemoteCancel::Graceful),
    )
    .await
    .expect("graceful cancel in time")
    .expect("channel open");

    *status.lock().expect("status") = "canceled";
    buffer.write(b" more");
    tokio::time::timeout(
        Duration::from_secs(5),
        cancel.wait_for(|c| *c == RemoteCancel::Abort),
    )
    .await
    .expect("abort in time")
    .expect("channel open");
    assert_eq!(trace.remote_cancel(), RemoteCancel::Abort);

    // After an abort the patch loop stops.
    let patches = server.count("PATCH");
    buffer.write(b" ignored by the loop");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.count("PATCH"), patches, "no patches after abort");

    // The final update is still attempted; an abort answer ends it without error.
    finish(trace, FinalState::success())
        .await
        .expect("abort ends the final update");
    assert_eq!(server.count("PUT"), 1);
}

#[tokio::test]
async fn keep_alive_put_after_silence_and_abort_on_404() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let mut n = 0;
    let server = gitlab(Arc::clone(&stored), move |_, _| {
        n += 1;
        if n < 3 {
            Reply::status(200).header("Job-Status", "running")
        } else {
            Reply::status(404)
        }
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, mut cancel) = start(
        &server,
        &buffer,
        JobTraceOptions {
            force_send_interval: Duration::from_millis(60),
            ..fast_opts()
        },
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        cancel.wait_for(|c| *c == RemoteCancel::Abort),
    )
    .await
    .expect("abort in time")
    .expect("channel open");
    let puts = puts(&server);
    assert!(puts.len() >= 3, "{puts:?}");
    let touch = &puts[0];
    assert_eq!(touch["state"], "running");
    assert_eq!(touch["output"]["checksum"], "crc32:00000000");
    assert_eq!(touch["output"]["bytesize"], 0);
    assert_eq!(touch["checksum"], "crc32:00000000");
    assert_eq!(
        server.count("PATCH"),
        0,
        "nothing to patch, nothing patched"
    );
    drop(trace);
}

#[tokio::test]
async fn failed_state_carries_mapped_reason_and_exit_code() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let server = gitlab(Arc::clone(&stored), |_, _| Reply::status(200)).await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _c) = start(&server, &buffer, fast_opts());
    finish(
        trace,
        FinalState::failed(
            FailureReason::ImagePullFailure,
            Some(2),
            vec!["script_failure".into()],
        ),
    )
    .await
    .expect("final update");
    let body = &puts(&server)[0];
    assert_eq!(body["state"], "failed");
    assert_eq!(
        body["failure_reason"], "runner_system_failure",
        "down-mapped for an older GitLab"
    );
    assert_eq!(body["exit_code"], 2);

    let server = gitlab(Arc::new(Mutex::new(Vec::new())), |_, _| Reply::status(200)).await;
    let (trace, _c) = start(
        &server,
        &TraceBuffer::new(TraceOptions::default()),
        fast_opts(),
    );
    let fin = FinalState {
        failure_reason: None,
        exit_code: Some(0),
        ..FinalState::failed(FailureReason::ScriptFailure, None, Vec::new())
    };
    finish(trace, fin).await.expect("final update");
    let body = &puts(&server)[0];
    assert_eq!(
        body["failure_reason"], "script_failure",
        "no reason means script_failure"
    );
    assert!(
        body.get("exit_code").is_none(),
        "exit code 0 is omitted: {body}"
    );
}

#[tokio::test]
async fn final_update_gives_up_after_the_retry_limit() {
    let server = gitlab(Arc::new(Mutex::new(Vec::new())), |_, _| Reply::status(500)).await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _c) = start(
        &server,
        &buffer,
        JobTraceOptions {
            final_update_retry_limit: 3,
            ..fast_opts()
        },
    );
    let err = finish(trace, FinalState::success())
        .await
        .expect_err("gives up");
    assert!(
        matches!(
            err,
            ClientError::FinalUpdateFailed {
                job_id: JOB_ID,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // Each attempt is one PUT, itself retried 5 times by the transport.
    assert_eq!(server.count("PUT"), 15);
    assert_no_secrets(&err.to_string());
}

#[tokio::test]
async fn final_flush_stops_at_404_and_still_updates() {
    let server = FakeGitLab::start(|r| match r.method.as_str() {
        "PATCH" => Reply::status(404),
        _ => Reply::status(200),
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    buffer.write(b"unwanted");
    let (trace, _c) = start(
        &server,
        &buffer,
        JobTraceOptions {
            update_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    finish(trace, FinalState::success())
        .await
        .expect("final update");
    let seq: Vec<&str> = server
        .requests()
        .iter()
        .map(|r| if r.method == "PATCH" { "PATCH" } else { "PUT" })
        .collect::<Vec<_>>();
    assert_eq!(seq, ["PATCH", "PUT"]);
}

#[tokio::test]
async fn patch_cadence_follows_the_server_interval_even_in_fast_mode() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let patch_store = Arc::clone(&stored);
    let server = FakeGitLab::start(move |r| {
        let mut stored = patch_store.lock().expect("stored");
        match r.method.as_str() {
            "PATCH" => {
                let reply = apply_patch(&mut stored, r);
                reply.header("X-GitLab-Trace-Update-Interval", "2")
            }
            _ => Reply::status(200),
        }
    })
    .await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _c) = start(&server, &buffer, fast_opts());
    buffer.write(b"first");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.count("PATCH") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.count("PATCH"), 1);
    buffer.write(b" second");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.count("PATCH"),
        1,
        "next patch waits for the server's 2 s interval"
    );
    finish(trace, FinalState::success())
        .await
        .expect("final update");
    assert_eq!(*stored.lock().expect("stored"), b"first second");
}

#[tokio::test]
async fn debug_trace_switch_reaches_the_query() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let server = gitlab(Arc::clone(&stored), |_, _| Reply::status(200)).await;
    let buffer = TraceBuffer::new(TraceOptions::default());
    let (trace, _c) = start(&server, &buffer, fast_opts());
    trace.set_debug_trace(true);
    buffer.write(b"x");
    finish(trace, FinalState::success())
        .await
        .expect("final update");
    let patch = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a patch");
    assert_eq!(patch.query, "debug_trace=true");
    assert_no_secrets(&format!("{buffer:?}"));
}
