//! Artifact upload and download against scripted fake GitLabs: the multipart shape, GitLab's outcome mapping
//! (201, 307 host switch, 403, 413, 503 × 6, other failures × 3), redirects without the job token, and that a
//! failed download leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runwright_client::{ArtifactError, UploadRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ARCHIVE: &[u8] = b"PK\x03\x04 pretend this is a zip archive \x00\x01\x02";

fn archive_file(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("artifacts.zip");
    std::fs::write(&path, content).expect("write archive");
    path
}

fn upload_request(file: PathBuf) -> UploadRequest {
    UploadRequest {
        job_id: 42,
        job_token: JOB_TOKEN.into(),
        file,
        filename: "default.zip".into(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        expire_in: "1 week".into(),
        ..Default::default()
    }
}

/// The parts of a `multipart/form-data` body: (headers block, content).
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary in content type");
    let delimiter = format!("--{boundary}");
    let text = body.to_vec();
    let mut out = Vec::new();
    let mut pos = 0;
    let find = |from: usize, needle: &[u8]| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    assert!(
        text.starts_with(delimiter.as_bytes()),
        "body starts with the boundary"
    );
    while let Some(start) = find(pos, delimiter.as_bytes()) {
        let after = start + delimiter.len();
        if text[after..].starts_with(b"--") {
            assert_eq!(&text[after..], b"--\r\n", "closing delimiter ends the body");
            break;
        }
        let head_start = after + 2;
        let head_end = find(head_start, b"\r\n\r\n").expect("part headers end");
        let next = find(head_end, format!("\r\n{delimiter}").as_bytes()).expect("next delimiter");
        out.push((
            String::from_utf8_lossy(&text[head_start..head_end]).into_owned(),
            text[head_end + 4..next].to_vec(),
        ));
        pos = next + 2;
    }
    out
}

#[tokio::test]
async fn upload_sends_one_streamed_file_field_and_maps_201() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeGitLab::start(|_| Reply::status(201).body("text/plain", b"201")).await;
    let client = fast_client(&server.url());
    let out = client
        .upload_artifact(&upload_request(archive_file(dir.path(), ARCHIVE)))
        .await
        .expect("uploaded");
    assert_eq!(out.status, "201 Created");
    assert_eq!(out.attempts, 1);
    assert_eq!(out.size, ARCHIVE.len() as u64);
    assert_eq!(out.redirected_to, None);
    assert_eq!(
        out.trace_line("JOBSHORT1"),
        "Uploading artifacts as \"archive\" to coordinator... 201 Created  id=42 responseStatus=201 Created token=JOBSHORT1"
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v4/jobs/42/artifacts");
    assert_eq!(
        r.query,
        "artifact_format=zip&artifact_type=archive&expire_in=1+week"
    );
    assert_eq!(r.header("job-token"), Some(JOB_TOKEN));
    assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "streamed, size not announced"
    );
    let content_type = r.header("content-type").expect("content type");
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let parts = parts(content_type, &r.body);
    assert_eq!(parts.len(), 1, "exactly one field");
    let (head, content) = &parts[0];
    assert!(
        head.contains("Content-Disposition: form-data; name=\"file\"; filename=\"default.zip\""),
        "{head}"
    );
    assert!(
        head.contains("Content-Type: application/octet-stream"),
        "{head}"
    );
    assert_eq!(content, ARCHIVE);
}

#[tokio::test]
async fn upload_leaves_out_empty_query_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeGitLab::start(|_| Reply::status(201)).await;
    let client = fast_client(&server.url());
    let mut req = upload_request(archive_file(dir.path(), ARCHIVE));
    req.artifact_type.clear();
    req.artifact_format.clear();
    req.expire_in.clear();
    let out = client.upload_artifact(&req).await.expect("uploaded");
    assert!(
        out.trace_line("x")
            .starts_with("Uploading artifacts to coordinator... 201 Created"),
        "{out}"
    );
    assert_eq!(server.requests()[0].query, "");
}

#[tokio::test]
async fn upload_307_switches_host_for_the_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let second = FakeGitLab::start(|_| Reply::status(201)).await;
    let location = format!("http://{}/some/other/path", second.addr);
    let first = FakeGitLab::start(move |_| Reply::status(307).header("Location", &location)).await;
    let client = fast_client(&first.url());
    let out = client
        .upload_artifact(&upload_request(archive_file(dir.path(), ARCHIVE)))
        .await
        .expect("uploaded after the redirect");
    assert_eq!(out.attempts, 2);
    assert_eq!(
        out.redirected_to.as_deref(),
        Some(format!("http://{}", second.addr).as_str())
    );
    assert_eq!(first.requests().len(), 1);
    let reqs = second.requests();
    assert_eq!(reqs.len(), 1, "the retry went to the new host");
    let r = &reqs[0];
    assert_eq!(r.path, "/api/v4/jobs/42/artifacts", "path stays ours");
    assert_eq!(
        r.query,
        "artifact_format=zip&artifact_type=archive&expire_in=1+week"
    );
    assert_eq!(r.header("job-token"), Some(JOB_TOKEN));
    let parts = parts(r.header("content-type").expect("content type"), &r.body);
    assert_eq!(
        parts[0].1, ARCHIVE,
        "the file was sent again from the start"
    );
}

#[tokio::test]
async fn upload_403_is_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeGitLab::start(|_| {
        Reply::status(403).json(&serde_json::json!({"message": "403 Forbidden"}))
    })
    .await;
    let client = fast_client(&server.url());
    let err = client
        .upload_artifact(&upload_request(archive_file(dir.path(), ARCHIVE)))
        .await
        .expect_err("forbidden");
    assert!(matches!(err, ArtifactError::Forbidden { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1, "not retried");
    assert!(
        err.to_string().starts_with("403 Forbidden  id=42: "),
        "{err}"
    );
    let text = err.trace_line();
    assert!(
        text.starts_with(
            "Uploading artifacts as \"archive\" to coordinator... 403 Forbidden  id=42"
        ),
        "{text}"
    );
    assert_no_secrets(&text);
    assert_no_secrets(&format!("{err:?}"));
}

#[tokio::test]
async fn upload_413_states_size_and_server_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let content = vec![7u8; 3 * 1024 * 1024];
    let server = FakeGitLab::start(|_| {
        Reply::status(413).json(&serde_json::json!({"message": "413 Request Entity Too Large"}))
    })
    .await;
    let client = fast_client(&server.url());
    let err = client
        .upload_artifact(&upload_request(archive_file(dir.path(), &content)))
        .await
        .expect_err("too large");
    let ArtifactError::TooLarge {
        size,
        ref server_message,
        ..
    } = err
    else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!(size, content.len() as u64);
    assert_eq!(
        server_message.as_deref(),
        Some("413 Request Entity Too Large")
    );
    assert_eq!(server.requests().len(), 1, "not retried");
    let text = err.to_string();
    assert!(text.contains("3.0 MiB (3145728 bytes)"), "{text}");
    assert!(text.contains("413 Request Entity Too Large"), "{text}");
    assert!(
        text.contains("artifacts:exclude"),
        "says what to do: {text}"
    );
    assert_no_secrets(&text);
}

#[tokio::test]
async fn upload_503_is_tried_six_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeGitLab::start(|_| Reply::status(503)).await;
    let client = fast_client(&server.url());
    let err = client
        .upload_artifact(&upload_request(archive_file(dir.path(), ARCHIVE)))
        .await
        .expect_err("unavailable");
    assert!(
        matches!(err, ArtifactError::Failed { attempts: 6, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 6);
    let text = err.to_string();
    assert!(text.contains("503 Service Unavailable"), "{text}");
    assert!(text.contains("gave up after 6 tries"), "{text}");
    assert_no_secrets(&text);
}

#[tokio::test]
async fn upload_other_server_errors_are_tried_three_times_and_client_errors_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = archive_file(dir.path(), ARCHIVE);
    for (status, want) in [(500, 3), (502, 3), (429, 3), (400, 1), (404, 1)] {
        let server = FakeGitLab::start(move |_| Reply::status(status)).await;
        let client = fast_client(&server.url());
        let err = client
            .upload_artifact(&upload_request(file.clone()))
            .await
            .expect_err("fails");
        assert!(matches!(err, ArtifactError::Failed { .. }), "{err:?}");
        assert_eq!(server.requests().len(), want, "status {status}");
    }
    // Recovers when the server does.
    let n = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&n);
    let server = FakeGitLab::start(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(502),
        _ => Reply::status(201),
    })
    .await;
    let client = fast_client(&server.url());
    let out = client
        .upload_artifact(&upload_request(file))
        .await
        .expect("second try succeeds");
    assert_eq!(out.attempts, 2);
}

#[tokio::test]
async fn upload_of_a_missing_file_names_the_path() {
    let server = FakeGitLab::start(|_| Reply::status(201)).await;
    let client = fast_client(&server.url());
    let err = client
        .upload_artifact(&upload_request(PathBuf::from(
            "/nonexistent/runwright/artifacts.zip",
        )))
        .await
        .expect_err("no file");
    assert!(matches!(err, ArtifactError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("/nonexistent/runwright/artifacts.zip"),
        "{err}"
    );
    assert!(server.requests().is_empty());
}

/// Reads one HTTP/1.1 request with a chunked body (headers, then up to the last chunk).
async fn read_chunked_request(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\r\n0\r\n\r\n") {
            return buf;
        }
    }
}

#[tokio::test]
async fn upload_is_retried_after_a_reset_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
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
            let request = read_chunked_request(&mut sock).await;
            if n == 0 {
                // RST after the whole request arrived: the client cannot know whether it took effect.
                #[allow(deprecated)]
                let _ = sock.set_linger(Some(Duration::ZERO));
                drop(sock);
                continue;
            }
            assert!(
                request.windows(ARCHIVE.len()).any(|w| w == ARCHIVE),
                "the retry carries the whole archive again"
            );
            let _ = sock
                .write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nConnection: close\r\n\r\n201",
                )
                .await;
        }
    });
    let client = fast_client(&format!("http://{addr}/"));
    let out = client
        .upload_artifact(&upload_request(archive_file(dir.path(), ARCHIVE)))
        .await
        .expect("uploaded on the second connection");
    assert_eq!(out.attempts, 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    server.abort();
}

#[tokio::test]
async fn download_200_streams_into_dest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    let server =
        FakeGitLab::start(|_| Reply::status(200).body("application/octet-stream", ARCHIVE)).await;
    let client = fast_client(&server.url());
    let out = client
        .download_artifact(7, JOB_TOKEN, &dest, true)
        .await
        .expect("downloaded");
    assert_eq!(out.bytes, ARCHIVE.len() as u64);
    assert!(!out.redirected);
    assert_eq!(std::fs::read(&dest).expect("dest"), ARCHIVE);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/api/v4/jobs/7/artifacts");
    assert_eq!(reqs[0].query, "direct_download=true");
    assert_eq!(reqs[0].header("job-token"), Some(JOB_TOKEN));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("artifacts.zip")]);

    // Without direct download there is no query at all.
    client
        .download_artifact(7, JOB_TOKEN, &dest, false)
        .await
        .expect("downloaded again");
    assert_eq!(server.requests()[1].query, "");
}

#[tokio::test]
async fn download_redirect_to_another_origin_drops_the_job_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    let storage =
        FakeGitLab::start(|_| Reply::status(200).body("application/octet-stream", ARCHIVE)).await;
    let location = format!(
        "http://{}/bucket/artifacts.zip?X-Amz-Signature=SIGNED",
        storage.addr
    );
    let gitlab = FakeGitLab::start(move |_| Reply::status(302).header("Location", &location)).await;
    let client = fast_client(&gitlab.url());
    let out = client
        .download_artifact(7, JOB_TOKEN, &dest, true)
        .await
        .expect("downloaded through the redirect");
    assert!(out.redirected);
    assert_eq!(out.bytes, ARCHIVE.len() as u64);
    assert_eq!(std::fs::read(&dest).expect("dest"), ARCHIVE);
    assert_eq!(
        gitlab.requests()[0].header("job-token"),
        Some(JOB_TOKEN),
        "GitLab gets the token"
    );
    let stored = storage.requests();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].path, "/bucket/artifacts.zip");
    assert_eq!(stored[0].query, "X-Amz-Signature=SIGNED");
    assert_eq!(
        stored[0].header("job-token"),
        None,
        "object storage never sees the token"
    );
}

#[tokio::test]
async fn download_404_is_final_and_leaves_no_dest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    // A stale archive of an earlier run must not survive a failed download.
    std::fs::write(&dest, b"stale").expect("stale file");
    let server = FakeGitLab::start(|_| {
        Reply::status(404).json(&serde_json::json!({"message": "404 Not Found"}))
    })
    .await;
    let client = fast_client(&server.url());
    let err = client
        .download_artifact(7, JOB_TOKEN, &dest, false)
        .await
        .expect_err("no artifacts");
    assert!(
        matches!(err, ArtifactError::NotFound { job_id: 7, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1, "not retried");
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    assert!(
        err.to_string().starts_with("404 Not Found  id=7: "),
        "{err}"
    );
    let text = err.trace_line();
    assert!(
        text.starts_with("Downloading artifacts from coordinator... 404 Not Found  id=7"),
        "{text}"
    );
    assert_no_secrets(&text);
}

#[tokio::test]
async fn download_auth_failures_are_final_and_server_errors_retried_without_direct_download() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    for (status, want) in [(401, 1), (403, 1)] {
        let server = FakeGitLab::start(move |_| Reply::status(status)).await;
        let client = fast_client(&server.url());
        let err = client
            .download_artifact(7, JOB_TOKEN, &dest, false)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                ArtifactError::Unauthorized { .. } | ArtifactError::Forbidden { .. }
            ),
            "{err:?}"
        );
        assert_eq!(server.requests().len(), want);
    }
    let server = FakeGitLab::start(|_| Reply::status(500)).await;
    let client = fast_client(&server.url());
    let err = client
        .download_artifact(7, JOB_TOKEN, &dest, true)
        .await
        .expect_err("server error");
    assert!(
        matches!(err, ArtifactError::Failed { attempts: 3, .. }),
        "{err:?}"
    );
    let queries: Vec<String> = server.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        vec!["direct_download=true", "", ""],
        "direct download on the first try only, as the runner does"
    );
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
}

#[tokio::test]
async fn download_retries_through_gitlab_when_object_storage_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    let storage = FakeGitLab::start(|_| Reply::status(403)).await;
    let location = format!("http://{}/bucket/a.zip?sig=expired", storage.addr);
    let gitlab = FakeGitLab::start(move |r| {
        if r.query.contains("direct_download=true") {
            Reply::status(302).header("Location", &location)
        } else {
            Reply::status(200).body("application/octet-stream", ARCHIVE)
        }
    })
    .await;
    let client = fast_client(&gitlab.url());
    let out = client
        .download_artifact(7, JOB_TOKEN, &dest, true)
        .await
        .expect("second try through GitLab");
    assert!(!out.redirected);
    assert_eq!(std::fs::read(&dest).expect("dest"), ARCHIVE);
    assert_eq!(storage.requests().len(), 1);
    assert_eq!(gitlab.requests().len(), 2);
}

#[tokio::test]
async fn download_redirect_outside_the_api_on_the_same_host_drops_the_job_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("artifacts.zip");
    let server = FakeGitLab::start(|r| {
        if r.path.starts_with("/api/v4/") {
            Reply::status(302).header("Location", "/object-storage/abc")
        } else {
            Reply::status(200).body("application/octet-stream", ARCHIVE)
        }
    })
    .await;
    let client = fast_client(&server.url());
    let out = client
        .download_artifact(7, JOB_TOKEN, &dest, true)
        .await
        .expect("downloaded");
    assert!(out.redirected);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("job-token"), Some(JOB_TOKEN));
    assert_eq!(reqs[1].path, "/object-storage/abc");
    assert_eq!(reqs[1].header("job-token"), None);
}
