//! `Client` against a scripted fake GitLab: headers, bodies, retries and the mapping of every answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runwright_api::types::{JobTraceOutput, UpdateJobRequest, VersionInfo};
use runwright_client::{Client, ClientOptions, PatchState, RequestJobOutcome, UpdateJobState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn info() -> VersionInfo {
    VersionInfo {
        name: "gitlab-runner".into(),
        version: "17.0.0".into(),
        ..Default::default()
    }
}

async fn request(client: &Client) -> RequestJobOutcome {
    client
        .request_job(RUNNER_TOKEN, "s_0123456789ab", &info())
        .await
}

#[tokio::test]
async fn request_job_sends_gitlab_headers_and_body() {
    let server = FakeGitLab::start(|_| Reply::status(201).json(&job_json(4711))).await;
    let client = fast_client(&format!("{}ci/", server.url()));
    let RequestJobOutcome::Job(job) = request(&client).await else {
        panic!("expected a job");
    };
    assert_eq!(job.id, 4711);
    assert_eq!(job.token, JOB_TOKEN);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path, "/api/v4/jobs/request",
        "/ci stripped, /api/v4/ added"
    );
    assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    assert_eq!(r.header("runner-token"), Some(RUNNER_TOKEN));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    let id = r.header("x-request-id").expect("X-Request-Id");
    assert_eq!(id.len(), 32, "uuid without dashes: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let body = r.json();
    assert_eq!(body["token"], RUNNER_TOKEN);
    assert_eq!(body["system_id"], "s_0123456789ab");
    assert_eq!(body["info"]["name"], "gitlab-runner");
    for feature in ["trace_reset", "trace_checksum", "trace_size", "cancelable"] {
        assert_eq!(
            body["info"]["features"][feature], true,
            "network feature {feature}"
        );
    }
    assert!(
        body.get("last_update").is_none(),
        "no last_update before GitLab sent one: {body}"
    );
}

#[tokio::test]
async fn last_update_is_stored_echoed_and_kept_when_absent() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&n);
    let server = FakeGitLab::start(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(204).header("X-GitLab-Last-Update", "cursor-1"),
        1 => Reply::status(204), // Workhorse long-poll 204: no header
        2 => Reply::status(204).header("X-GitLab-Last-Update", ""), // empty: ignored
        3 => Reply::status(409).header("X-GitLab-Last-Update", "cursor-2"), // any answer counts
        _ => Reply::status(204),
    })
    .await;
    let client = fast_client(&server.url());
    for _ in 0..5 {
        let outcome = request(&client).await;
        assert!(
            matches!(
                outcome,
                RequestJobOutcome::NoJob | RequestJobOutcome::Conflict
            ),
            "{outcome:?}"
        );
    }
    let sent: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| {
            r.json()
                .get("last_update")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            None,
            Some("cursor-1".into()),
            Some("cursor-1".into()),
            Some("cursor-1".into()),
            Some("cursor-2".into())
        ]
    );
    assert_eq!(client.last_update().as_deref(), Some("cursor-2"));
}

#[tokio::test]
async fn clones_share_last_update() {
    let server =
        FakeGitLab::start(|_| Reply::status(204).header("X-GitLab-Last-Update", "c")).await;
    let client = fast_client(&server.url());
    let other = client.clone();
    request(&client).await;
    assert_eq!(other.last_update().as_deref(), Some("c"));
}

#[tokio::test]
async fn request_job_status_mapping() {
    let cases: &[(u16, &str)] = &[
        (204, "NoJob"),
        (403, "Forbidden"),
        (409, "Conflict"),
        (422, "Orphaned"),
        (503, "Unavailable"),
        (400, "Failed"),
        (501, "Failed"),
    ];
    for (status, want) in cases {
        let status = *status;
        let server = FakeGitLab::start(move |_| {
            Reply::status(status).json(&serde_json::json!({"message": format!("{status} says hi")}))
        })
        .await;
        let client = fast_client(&server.url());
        let outcome = request(&client).await;
        let got = match &outcome {
            RequestJobOutcome::Job(_) => "Job",
            RequestJobOutcome::NoJob => "NoJob",
            RequestJobOutcome::Forbidden => "Forbidden",
            RequestJobOutcome::Conflict => "Conflict",
            RequestJobOutcome::Orphaned => "Orphaned",
            RequestJobOutcome::Unavailable => "Unavailable",
            RequestJobOutcome::Failed(_) => "Failed",
            RequestJobOutcome::Malformed { .. } => "Malformed",
        };
        assert_eq!(got, *want, "status {status}: {outcome:?}");
        // 503 is retried by the transport (5 attempts), the others are not.
        let attempts = if status == 503 { 5 } else { 1 };
        assert_eq!(server.count("POST"), attempts, "status {status}");
        if let RequestJobOutcome::Failed(msg) = &outcome {
            assert!(msg.contains(&status.to_string()), "{msg}");
            assert!(msg.contains("says hi"), "server message kept: {msg}");
            assert!(msg.contains("/api/v4/jobs/request"), "{msg}");
            assert_no_secrets(msg);
        }
    }
}

#[tokio::test]
async fn retries_500_502_and_429_then_succeeds_with_the_same_body() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&n);
    let server = FakeGitLab::start(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(500),
        1 => Reply::status(502),
        // Without the fast switch this would wait 60 s (and a minute-long reset time before it).
        2 => Reply::status(429)
            .header("Retry-After", "60")
            .header("RateLimit-ResetTime", "Wed, 21 Oct 2099 07:28:00 GMT"),
        _ => Reply::status(201).json(&job_json(1)),
    })
    .await;
    let client = fast_client(&server.url());
    let started = Instant::now();
    let outcome = request(&client).await;
    assert!(matches!(outcome, RequestJobOutcome::Job(_)), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waits capped: {:?}",
        started.elapsed()
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(r.body, reqs[0].body, "body rebuilt identically per attempt");
        assert_eq!(
            r.header("x-request-id"),
            reqs[0].header("x-request-id"),
            "one request, one id"
        );
    }
}

#[tokio::test]
async fn gives_up_after_five_attempts() {
    let server = FakeGitLab::start(|_| Reply::status(500)).await;
    let client = fast_client(&server.url());
    let outcome = request(&client).await;
    let RequestJobOutcome::Failed(msg) = outcome else {
        panic!("expected Failed");
    };
    assert!(msg.contains("500"), "{msg}");
    assert_eq!(server.count("POST"), 5);
    assert_no_secrets(&msg);
}

#[tokio::test]
async fn non_retryable_statuses_are_not_retried() {
    for status in [400u16, 401, 404, 412, 501, 505] {
        let server = FakeGitLab::start(move |_| Reply::status(status)).await;
        let client = fast_client(&server.url());
        let _ = client.patch_trace(1, JOB_TOKEN, 0, b"x", false).await;
        assert_eq!(server.count("PATCH"), 1, "status {status}");
    }
    for status in [408u16, 504, 512, 599] {
        let server = FakeGitLab::start(move |_| Reply::status(status)).await;
        let client = fast_client(&server.url());
        let _ = client.patch_trace(1, JOB_TOKEN, 0, b"x", false).await;
        assert_eq!(server.count("PATCH"), 5, "status {status}");
    }
}

/// A raw TCP server whose first connection is closed without an answer (a reset), then answers 204.
#[tokio::test]
async fn retries_after_a_reset_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 64 * 1024];
            let _ = sock.read(&mut buf).await;
            if n == 0 {
                // Close with RST (linger 0) right after reading the request. The deprecation is about linger
                // blocking the thread on drop, which a zero linger does not.
                #[allow(deprecated)]
                let _ = sock.set_linger(Some(Duration::ZERO));
                drop(sock);
                continue;
            }
            let _ = sock
                .write_all(b"HTTP/1.1 204 No Content\r\nX-GitLab-Last-Update: after-reset\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let client = fast_client(&format!("http://{addr}/"));
    let outcome = request(&client).await;
    assert!(matches!(outcome, RequestJobOutcome::NoJob), "{outcome:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.last_update().as_deref(), Some("after-reset"));
    server.abort();
}

#[tokio::test]
async fn connection_refused_is_failed_after_retries_without_secrets() {
    // Bind then drop: the port is (almost certainly) closed afterwards.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let client = fast_client(&format!("http://user:hunter2@{addr}/"));
    let started = Instant::now();
    let RequestJobOutcome::Failed(msg) = request(&client).await else {
        panic!("expected Failed");
    };
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "retried with waits: {:?}",
        started.elapsed()
    );
    assert!(msg.contains("/api/v4/jobs/request"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert_no_secrets(&msg);
    let upd = client
        .update_job(5, JOB_TOKEN, &UpdateJobRequest::default())
        .await;
    // GitLab's runner calls this an abort; runwright says what happened (see `UpdateJobState::NoAnswer`).
    assert_eq!(
        upd.state,
        UpdateJobState::NoAnswer,
        "network error on update is no answer"
    );
    let patch = client.patch_trace(5, JOB_TOKEN, 3, b"abc", false).await;
    assert_eq!(
        patch.state,
        PatchState::Failed,
        "network error on patch is failed (GitLab)"
    );
    assert_eq!(patch.new_offset, 3);
}

#[tokio::test]
async fn malformed_job_keeps_id_and_token_and_names_the_field() {
    let mut payload = job_json(77);
    payload["variables"] = serde_json::json!([{"key": "A", "value": "v"}, {"key": "B", "value": "v", "masked": "hunter2"}]);
    let server = FakeGitLab::start(move |_| Reply::status(201).json(&payload)).await;
    let client = fast_client(&server.url());
    let RequestJobOutcome::Malformed {
        id, token, error, ..
    } = request(&client).await
    else {
        panic!("expected Malformed");
    };
    assert_eq!(id, Some(77));
    assert_eq!(token.as_deref(), Some(JOB_TOKEN));
    assert!(error.contains("variables[1].masked"), "{error}");
    assert!(!error.contains("hunter2"), "value elided: {error}");
}

#[tokio::test]
async fn malformed_when_not_json_or_not_parseable() {
    let server =
        FakeGitLab::start(|_| Reply::status(201).body("text/html", b"<html>proxy</html>")).await;
    let client = fast_client(&server.url());
    let RequestJobOutcome::Malformed {
        id, token, error, ..
    } = request(&client).await
    else {
        panic!("expected Malformed");
    };
    assert_eq!((id, token), (None, None));
    assert!(error.contains("application/json"), "{error}");

    let server =
        FakeGitLab::start(|_| Reply::status(201).raw_json(br#"{"id": 12, "token": "glcbt-"#)).await;
    let client = fast_client(&server.url());
    let RequestJobOutcome::Malformed { id, error, .. } = request(&client).await else {
        panic!("expected Malformed");
    };
    assert_eq!(id, None, "truncated JSON: nothing recoverable");
    assert!(error.contains("EOF"), "{error}");

    // `application/json; charset=utf-8` is JSON.
    let server = FakeGitLab::start(|_| {
        Reply::status(201).body(
            "application/json; charset=utf-8",
            job_json(3).to_string().as_bytes(),
        )
    })
    .await;
    let client = fast_client(&server.url());
    assert!(matches!(request(&client).await, RequestJobOutcome::Job(_)));
}

fn final_update() -> UpdateJobRequest {
    UpdateJobRequest {
        info: info(),
        token: JOB_TOKEN.into(),
        state: "success".into(),
        checksum: Some("crc32:0a1b2c3d".into()),
        output: Some(JobTraceOutput {
            checksum: "crc32:0a1b2c3d".into(),
            bytesize: 12,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn update_job_sends_job_token_and_body() {
    let server = FakeGitLab::start(|_| Reply::status(200).header("Job-Status", "success")).await;
    let client = fast_client(&server.url());
    let outcome = client.update_job(4711, JOB_TOKEN, &final_update()).await;
    assert_eq!(outcome.state, UpdateJobState::Succeeded);
    assert!(!outcome.cancel_requested);
    let r = &server.requests()[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/api/v4/jobs/4711");
    assert_eq!(r.header("job-token"), Some(JOB_TOKEN));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // GitLab's runner sends no Accept here; reqwest always adds `*/*` (a documented deviation). What matters
    // is that we do not claim to expect JSON back.
    assert_ne!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("runner-token"), None);
    let body = r.json();
    assert_eq!(body["token"], JOB_TOKEN);
    assert_eq!(body["state"], "success");
    assert_eq!(body["checksum"], "crc32:0a1b2c3d");
    assert_eq!(body["output"]["bytesize"], 12);
    assert_eq!(body["info"]["features"]["trace_checksum"], true);
    assert!(
        body.get("failure_reason").is_none() && body.get("exit_code").is_none(),
        "{body}"
    );
}

#[tokio::test]
async fn update_job_mapping_table() {
    // (status, Job-Status, interval header) -> (state, cancel_requested, interval)
    type Case = (
        u16,
        &'static str,
        &'static str,
        UpdateJobState,
        bool,
        Option<u64>,
    );
    let cases: &[Case] = &[
        (200, "running", "", UpdateJobState::Succeeded, false, None),
        (
            202,
            "running",
            "7",
            UpdateJobState::Accepted,
            false,
            Some(7),
        ),
        (
            412,
            "running",
            "",
            UpdateJobState::TraceValidationFailed,
            false,
            None,
        ),
        (404, "", "", UpdateJobState::Abort, false, None),
        (403, "", "", UpdateJobState::Abort, false, None),
        (200, "canceled", "", UpdateJobState::Abort, false, None),
        (200, "failed", "", UpdateJobState::Abort, false, None),
        (202, "failed", "", UpdateJobState::Abort, false, None),
        (200, "canceling", "", UpdateJobState::Succeeded, true, None),
        (409, "", "", UpdateJobState::Failed, false, None),
        (500, "", "", UpdateJobState::Failed, false, None),
        (400, "", "junk", UpdateJobState::Failed, false, None),
    ];
    for (status, job_status, interval, want, want_cancel, want_interval) in cases {
        let (status, job_status, interval) =
            (*status, job_status.to_string(), interval.to_string());
        let server = FakeGitLab::start(move |_| {
            let mut r = Reply::status(status);
            if !job_status.is_empty() {
                r = r.header("Job-Status", &job_status);
            }
            if !interval.is_empty() {
                r = r.header("X-GitLab-Trace-Update-Interval", &interval);
            }
            r
        })
        .await;
        let client = fast_client(&server.url());
        let outcome = client.update_job(1, JOB_TOKEN, &final_update()).await;
        assert_eq!(outcome.state, *want, "status {status}");
        assert_eq!(outcome.cancel_requested, *want_cancel, "status {status}");
        assert_eq!(
            outcome.update_interval,
            want_interval.map(Duration::from_secs),
            "status {status}"
        );
    }
}

#[tokio::test]
async fn patch_trace_sends_content_range_and_plain_text() {
    let server = FakeGitLab::start(|_| {
        Reply::status(202)
            .header("Range", "0-15")
            .header("Job-Status", "running")
            .header("X-GitLab-Trace-Update-Interval", "60")
    })
    .await;
    let client = fast_client(&server.url());
    let outcome = client
        .patch_trace(4711, JOB_TOKEN, 10, b"hello", false)
        .await;
    assert_eq!(outcome.state, PatchState::Succeeded);
    assert_eq!(outcome.new_offset, 15);
    assert_eq!(outcome.update_interval, Some(Duration::from_secs(60)));
    let r = &server.requests()[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.path, "/api/v4/jobs/4711/trace");
    assert_eq!(r.query, "debug_trace=false");
    assert_eq!(
        r.header("content-range"),
        Some("10-14"),
        "inclusive end: start+len-1"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("job-token"), Some(JOB_TOKEN));
    assert_eq!(r.body, b"hello");

    client.patch_trace(4711, JOB_TOKEN, 0, b"x", true).await;
    let r = &server.requests()[1];
    assert_eq!(r.query, "debug_trace=true");
    assert_eq!(r.header("content-range"), Some("0-0"));
}

#[tokio::test]
async fn empty_patch_is_not_sent() {
    let server = FakeGitLab::start(|_| Reply::status(202)).await;
    let client = fast_client(&server.url());
    let outcome = client.patch_trace(1, JOB_TOKEN, 42, b"", false).await;
    assert_eq!(outcome.state, PatchState::Succeeded);
    assert_eq!(outcome.new_offset, 42);
    assert_eq!(server.requests().len(), 0);
}

#[tokio::test]
async fn patch_trace_mapping_table() {
    // (status, Job-Status, Range) -> (state, new_offset, cancel)
    type Case = (u16, &'static str, &'static str, PatchState, u64, bool);
    let cases: &[Case] = &[
        (202, "running", "0-13", PatchState::Succeeded, 13, false),
        (202, "canceling", "0-13", PatchState::Succeeded, 13, true),
        (202, "canceled", "0-13", PatchState::Abort, 10, false),
        (202, "failed", "", PatchState::Abort, 10, false),
        (403, "", "", PatchState::Abort, 10, false),
        (404, "", "", PatchState::NotFound, 10, false),
        (416, "running", "0-7", PatchState::RangeMismatch, 7, false),
        (416, "running", "", PatchState::RangeMismatch, 0, false),
        (400, "", "", PatchState::Failed, 10, false),
        (500, "", "", PatchState::Failed, 10, false),
    ];
    for (status, job_status, range, want, want_offset, want_cancel) in cases {
        let (status, job_status, range) = (*status, job_status.to_string(), range.to_string());
        let server = FakeGitLab::start(move |_| {
            let mut r = Reply::status(status);
            if !job_status.is_empty() {
                r = r.header("Job-Status", &job_status);
            }
            if !range.is_empty() {
                r = r.header("Range", &range);
            }
            r
        })
        .await;
        let client = fast_client(&server.url());
        let outcome = client.patch_trace(1, JOB_TOKEN, 10, b"abc", false).await;
        assert_eq!(outcome.state, *want, "status {status}");
        assert_eq!(outcome.new_offset, *want_offset, "status {status}");
        assert_eq!(outcome.cancel_requested, *want_cancel, "status {status}");
    }
}

#[tokio::test]
async fn custom_ca_and_bad_tls_files_are_reported_with_their_path() {
    let dir = std::env::temp_dir().join(format!("runwright-client-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let missing = dir.join("missing.pem");
    let err = Client::new(ClientOptions {
        url: "https://gitlab.example.com".into(),
        tls_ca_file: Some(missing.clone()),
        user_agent: USER_AGENT.into(),
        ..Default::default()
    })
    .expect_err("missing CA file");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let err = Client::new(ClientOptions {
        url: "https://gitlab.example.com".into(),
        tls_ca_file: Some(garbage.clone()),
        user_agent: USER_AGENT.into(),
        ..Default::default()
    })
    .expect_err("no certificate in CA file");
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    // A cert without its key is ignored, as GitLab's runner does.
    Client::new(ClientOptions {
        url: "https://gitlab.example.com".into(),
        tls_cert_file: Some(missing),
        user_agent: USER_AGENT.into(),
        ..Default::default()
    })
    .expect("cert alone is ignored");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn outcomes_debug_without_secrets() {
    let server = FakeGitLab::start(|_| Reply::status(201).json(&job_json(9))).await;
    let client = fast_client(&server.url());
    let outcome = request(&client).await;
    assert_no_secrets(&format!("{outcome:?}"));
    assert_no_secrets(&format!("{client:?}"));
}

/// Builds a client with a real CA bundle and client identity (made with `openssl`; skipped without it).
#[tokio::test]
async fn custom_ca_and_client_identity_are_accepted() {
    let dir = std::env::temp_dir().join(format!("runwright-client-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !made {
        eprintln!("skipped: openssl not available");
        return;
    }
    let client = Client::new(ClientOptions {
        url: "https://localhost:1/".into(),
        tls_ca_file: Some(cert.clone()),
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key.clone()),
        user_agent: USER_AGENT.into(),
        ..Default::default()
    });
    assert!(client.is_ok(), "{:?}", client.err());

    // Key and certificate swapped: the pair is rejected with the path named.
    let err = Client::new(ClientOptions {
        url: "https://localhost:1/".into(),
        tls_cert_file: Some(key.clone()),
        tls_key_file: Some(key),
        user_agent: USER_AGENT.into(),
        ..Default::default()
    })
    .expect_err("no certificate in the pair");
    assert!(err.to_string().contains("key.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
