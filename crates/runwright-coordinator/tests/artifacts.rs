//! The coordinator's artifact endpoints (`POST`/`GET /api/v4/jobs/:id/artifacts`, the object storage behind a
//! direct download), the `dependencies` of a job payload, and faults there — driven with reqwest, then end to
//! end with runwright's own client.

use reqwest::{Client, Response, StatusCode};
use runwright_client::{ArtifactError, UploadRequest};
use runwright_coordinator::{
    Coordinator, CoordinatorOptions, Endpoint, Fault, FaultKind, JobSpec, RunnerOptions,
};
use serde_json::{json, Value};

const RUNNER: &str = "glrt-artifacts-runner";
const ARCHIVE: &[u8] = b"PK\x03\x04 a zip archive, as far as the coordinator cares";

async fn start_with(opts: CoordinatorOptions) -> Coordinator {
    let c = Coordinator::start(opts).await.expect("coordinator starts");
    c.add_runner(RUNNER, RunnerOptions::default());
    c
}

async fn start() -> Coordinator {
    start_with(CoordinatorOptions::default()).await
}

fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Enqueue a job and take it with a runner without two-phase commit, so it is `running` at once.
/// Returns (id, token).
async fn running_job(c: &Coordinator, spec: JobSpec) -> (i64, String, Value) {
    let id = c.enqueue(spec);
    let body = json!({"token": RUNNER, "system_id": "s_0123456789ab",
        "info": {"name": "runwright", "version": "0.1.0", "features": {"artifacts": true}}});
    let resp = client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let payload: Value = resp.json().await.expect("payload");
    assert_eq!(payload["id"], id, "the job just enqueued was handed out");
    let token = payload["token"].as_str().expect("token").to_string();
    (id, token, payload)
}

/// A `multipart/form-data` body: (content type, bytes). `filename: None` makes a plain (non-file) field.
fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "runwrightboundary0123456789";
    let mut body = Vec::new();
    for (name, filename, content) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_raw(
    c: &Coordinator,
    id: &str,
    token: &str,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Response {
    client()
        .post(format!("{}api/v4/jobs/{id}/artifacts{query}", c.url()))
        .header("JOB-TOKEN", token)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload sent")
}

async fn upload(c: &Coordinator, id: i64, token: &str, query: &str, content: &[u8]) -> Response {
    let (ct, body) = multipart(&[("file", Some("default.zip"), content)]);
    upload_raw(c, &id.to_string(), token, query, &ct, body).await
}

async fn download(c: &Coordinator, id: i64, token: Option<&str>, query: &str) -> Response {
    let mut req = client().get(format!("{}api/v4/jobs/{id}/artifacts{query}", c.url()));
    if let Some(token) = token {
        req = req.header("JOB-TOKEN", token);
    }
    req.send().await.expect("download sent")
}

async fn error_of(resp: Response) -> Value {
    resp.json().await.expect("JSON error body")
}

fn finish_job(c: &Coordinator, id: i64) {
    c.force_cancel(id);
}

#[tokio::test]
async fn upload_is_recorded_and_answered_like_gitlab() {
    let c = start().await;
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;

    let resp = upload(
        &c,
        id,
        &token,
        "?artifact_format=zip&artifact_type=archive&expire_in=1+week",
        ARCHIVE,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain")
    );
    assert_eq!(resp.text().await.expect("body"), "201");

    let stored = c.artifact(id, "archive").expect("archive recorded");
    assert_eq!(stored.artifact_format, "zip");
    assert_eq!(stored.filename, "default.zip");
    assert_eq!(stored.expire_in.as_deref(), Some("1 week"));
    assert_eq!(stored.size, ARCHIVE.len() as u64);
    assert_eq!(std::fs::read(&stored.path).expect("stored file"), ARCHIVE);

    // Defaults (archive, zip) apply to a bare upload; a second archive is refused as GitLab's unique index
    // refuses it, a report of another type is fine.
    let resp = upload(&c, id, &token, "", b"again").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(resp).await["message"],
        "another artifact of the same type already exists"
    );
    let resp = upload(
        &c,
        id,
        &token,
        "?artifact_type=junit&artifact_format=gzip",
        b"\x1f\x8b junit",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let junit = c.artifact(id, "junit").expect("junit recorded");
    assert_eq!(junit.artifact_format, "gzip");
    assert_eq!(junit.expire_in, None);
    let record = c.job(id).expect("job");
    assert_eq!(record.artifacts.len(), 2);
    assert_eq!(
        c.artifact(id, "archive").map(|a| a.size),
        Some(ARCHIVE.len() as u64)
    );

    let log = c.requests();
    let uploads: Vec<_> = log
        .iter()
        .filter(|r| r.endpoint == Endpoint::ArtifactUpload)
        .collect();
    assert_eq!(uploads.len(), 3);
    assert_eq!(uploads[0].request_header("job-token"), Some(token.as_str()));
    c.shutdown().await;
}

#[tokio::test]
async fn upload_authentication_and_validation() {
    let c = start().await;
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let (other_id, other_token, _) = running_job(&c, JobSpec::shell("other", &["true"])).await;

    // authenticate_job!: the token must be the job's own, the job must exist.
    let resp = upload(&c, id, &other_token, "", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = upload(&c, 999, &token, "", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (ct, body) = multipart(&[("file", Some("a.zip"), ARCHIVE)]);
    let resp = upload_raw(&c, "abc", &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Grape's `values:` checks.
    let resp = upload(&c, id, &token, "?artifact_format=tar", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(resp).await["error"],
        "artifact_format does not have a valid value"
    );
    let resp = upload(&c, id, &token, "?artifact_type=bogus", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(resp).await["error"],
        "artifact_type does not have a valid value"
    );

    // Exactly one file field named `file`.
    let resp = upload_raw(
        &c,
        &id.to_string(),
        &token,
        "",
        "application/zip",
        ARCHIVE.to_vec(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(resp).await["error"], "file is missing");
    let (ct, body) = multipart(&[("archive", Some("a.zip"), ARCHIVE)]);
    let resp = upload_raw(&c, &id.to_string(), &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (ct, body) = multipart(&[
        ("file", Some("a.zip"), ARCHIVE),
        ("file", Some("b.zip"), ARCHIVE),
    ]);
    let resp = upload_raw(&c, &id.to_string(), &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (ct, body) = multipart(&[("file", Some("a.zip"), ARCHIVE), ("metadata", None, b"x")]);
    let resp = upload_raw(&c, &id.to_string(), &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (ct, body) = multipart(&[("file", None, ARCHIVE)]);
    let resp = upload_raw(&c, &id.to_string(), &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(resp).await["error"], "file is invalid");
    let (ct, body) = multipart(&[]);
    let resp = upload_raw(&c, &id.to_string(), &token, "", &ct, body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(c.artifact(id, "archive").is_none(), "nothing was recorded");

    // The token via the `token` parameter works as well.
    let (ct, body) = multipart(&[("file", Some("a.zip"), ARCHIVE)]);
    let resp = client()
        .post(format!(
            "{}api/v4/jobs/{other_id}/artifacts?token={other_token}",
            c.url()
        ))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::CREATED);

    // A job that is no longer running may not upload (403 with its status, as GitLab).
    finish_job(&c, id);
    let resp = upload(&c, id, &token, "", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.headers()
            .get("job-status")
            .and_then(|v| v.to_str().ok()),
        Some("canceled")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn upload_over_the_size_limit_is_413() {
    let c = start_with(CoordinatorOptions {
        max_artifact_size: Some(1024),
        ..Default::default()
    })
    .await;
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let resp = upload(&c, id, &token, "", &vec![1u8; 256 * 1024]).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_of(resp).await,
        json!({"message": "413 Request Entity Too Large"})
    );
    assert!(c.artifact(id, "archive").is_none());
    let resp = upload(&c, id, &token, "", &[2u8; 1024]).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "exactly the limit is fine"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn download_authentication_and_answers() {
    let c = start().await;
    let (producer, producer_token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let (consumer, consumer_token, _) = running_job(&c, JobSpec::shell("test", &["true"])).await;
    let resp = upload(&c, producer, &producer_token, "", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    assert_eq!(
        download(&c, producer, None, "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        download(&c, producer, Some("glcbt-unknown"), "")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        download(&c, consumer, Some(&consumer_token), "")
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "the consumer has no archive"
    );
    assert_eq!(
        download(&c, 999, Some(&consumer_token), "").await.status(),
        StatusCode::NOT_FOUND
    );

    // Any running job may read any job's archive; direct_download without object storage is served as is.
    for query in ["", "?direct_download=true"] {
        let resp = download(&c, producer, Some(&consumer_token), query).await;
        assert_eq!(resp.status(), StatusCode::OK, "{query}");
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(ARCHIVE.len().to_string().as_str())
        );
        assert_eq!(resp.bytes().await.expect("bytes").as_ref(), ARCHIVE);
    }

    // The token's job must be running.
    finish_job(&c, consumer);
    let resp = download(&c, producer, Some(&consumer_token), "").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    c.shutdown().await;
}

#[tokio::test]
async fn direct_download_redirects_to_token_free_object_storage() {
    let c = start_with(CoordinatorOptions {
        object_storage_redirect: true,
        ..Default::default()
    })
    .await;
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    assert_eq!(
        upload(&c, id, &token, "", ARCHIVE).await.status(),
        StatusCode::CREATED
    );

    // Without direct_download the API serves the file itself.
    let resp = download(&c, id, Some(&token), "").await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = download(&c, id, Some(&token), "?direct_download=true").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_string();
    assert!(
        location.starts_with(&format!("{}object-storage/", c.url())),
        "{location}"
    );
    let resp = client().get(&location).send().await.expect("storage GET");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.expect("bytes").as_ref(), ARCHIVE);
    let resp = client()
        .get(format!("{}object-storage/nope", c.url()))
        .send()
        .await
        .expect("storage GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let storage: Vec<_> = c
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::ObjectStorage)
        .collect();
    assert_eq!(storage.len(), 2);
    assert_eq!(storage[0].request_header("job-token"), None);
    c.shutdown().await;
}

#[tokio::test]
async fn artifact_dependencies_become_payload_dependencies() {
    let c = start().await;
    let (build, build_token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    assert_eq!(
        upload(&c, build, &build_token, "", ARCHIVE).await.status(),
        StatusCode::CREATED
    );
    let (lint, _, _) = running_job(&c, JobSpec::shell("lint", &["true"])).await;

    let mut spec = JobSpec::shell("test", &["true"]);
    spec.dependencies.push(runwright_api::types::Dependency {
        id: 1000,
        name: "given".into(),
        token: "glcbt-given".into(),
        artifacts_file: None,
    });
    spec.artifact_dependencies = vec![build, lint];
    let (_, test_token, payload) = running_job(&c, spec).await;
    assert_eq!(
        payload["dependencies"],
        json!([
            // dependency.rb: `artifacts_file` only `if: job.artifacts?`.
            {"id": 1000, "name": "given", "token": "glcbt-given"},
            {"id": build, "name": "build", "token": test_token,
             "artifacts_file": {"filename": "default.zip", "size": ARCHIVE.len()}},
            {"id": lint, "name": "lint", "token": test_token},
        ])
    );
    // The payload still decodes with the runner's wire types.
    let parsed = runwright_api::decode_job_response(&serde_json::to_vec(&payload).expect("json"))
        .expect("payload decodes");
    assert_eq!(parsed.dependencies.len(), 3);
    assert!(parsed.dependencies[2].artifacts_file.is_none());
    c.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_artifact_endpoints() {
    let c = start().await;
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let f = c.faults();
    f.push(Endpoint::ArtifactUpload, Fault::Status(502));
    f.push(
        Endpoint::ArtifactUpload,
        Fault::TemporaryRedirect {
            to: "http://elsewhere.invalid:8080/".into(),
        },
    );
    f.push(Endpoint::ArtifactDownload, Fault::Reset);
    f.push(
        Endpoint::ArtifactDownload,
        Fault::TooManyRequests { retry_after: 3 },
    );

    assert_eq!(
        upload(&c, id, &token, "", ARCHIVE).await.status(),
        StatusCode::BAD_GATEWAY
    );
    let resp = upload(&c, id, &token, "?artifact_type=archive", ARCHIVE).await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(
            format!(
                "http://elsewhere.invalid:8080/api/v4/jobs/{id}/artifacts?artifact_type=archive"
            )
            .as_str()
        )
    );
    assert!(c.artifact(id, "archive").is_none(), "faults touch no state");
    assert_eq!(
        upload(&c, id, &token, "", ARCHIVE).await.status(),
        StatusCode::CREATED
    );

    let err = client()
        .get(format!("{}api/v4/jobs/{id}/artifacts", c.url()))
        .header("JOB-TOKEN", &token)
        .send()
        .await
        .expect_err("connection reset");
    assert!(!err.is_status(), "{err:?}");
    let resp = download(&c, id, Some(&token), "").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        download(&c, id, Some(&token), "").await.status(),
        StatusCode::OK
    );

    assert_eq!(
        f.injected_on(Endpoint::ArtifactUpload, FaultKind::Status),
        1
    );
    assert_eq!(
        f.injected_on(Endpoint::ArtifactUpload, FaultKind::TemporaryRedirect),
        1
    );
    assert_eq!(
        f.injected_on(Endpoint::ArtifactDownload, FaultKind::Reset),
        1
    );
    assert_eq!(f.pending(Endpoint::ArtifactDownload), 0);
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// End to end: runwright's client against the coordinator

fn runwright_client(url: &str) -> runwright_client::Client {
    // Every test here sets the same value, so parallel tests do not race on it.
    std::env::set_var(runwright_static::env_vars::RUNWRIGHT_FAST_RETRIES, "1");
    runwright_client::Client::new(runwright_client::ClientOptions {
        url: url.to_string(),
        user_agent: "runwright test".into(),
        ..Default::default()
    })
    .expect("client")
}

fn upload_request(id: i64, token: &str, file: std::path::PathBuf) -> UploadRequest {
    UploadRequest {
        job_id: id,
        job_token: token.to_string(),
        file,
        filename: "default.zip".into(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        expire_in: "30 days".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn runwright_client_round_trip_with_redirects_and_retries() {
    let c = start_with(CoordinatorOptions {
        object_storage_redirect: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("archive.zip");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &content).expect("archive");
    let (producer, producer_token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let (_, consumer_token, _) = running_job(&c, JobSpec::shell("test", &["true"])).await;

    // A 503, then a 307 to the same coordinator under another host name: the client switches hosts.
    let port = c
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let other_host = format!("http://localhost:{port}/");
    c.faults()
        .push(Endpoint::ArtifactUpload, Fault::Status(503));
    c.faults().push(
        Endpoint::ArtifactUpload,
        Fault::TemporaryRedirect { to: other_host },
    );
    let client = runwright_client(&c.url());
    let out = client
        .upload_artifact(&upload_request(producer, &producer_token, file.clone()))
        .await
        .expect("uploaded");
    assert_eq!(out.attempts, 3);
    assert_eq!(
        out.redirected_to.as_deref(),
        Some(format!("http://localhost:{port}").as_str())
    );
    let stored = c.artifact(producer, "archive").expect("stored");
    assert_eq!(stored.size, content.len() as u64);
    assert_eq!(stored.expire_in.as_deref(), Some("30 days"));
    assert_eq!(std::fs::read(&stored.path).expect("stored"), content);

    // Download through object storage: the token goes to the API only.
    let dest = dir.path().join("downloaded.zip");
    let got = client
        .download_artifact(producer, &consumer_token, &dest, true)
        .await
        .expect("downloaded");
    assert!(got.redirected);
    assert_eq!(got.bytes, content.len() as u64);
    assert_eq!(std::fs::read(&dest).expect("dest"), content);
    let log = c.requests();
    let api = log
        .iter()
        .rfind(|r| r.endpoint == Endpoint::ArtifactDownload)
        .expect("API request");
    assert_eq!(
        api.request_header("job-token"),
        Some(consumer_token.as_str())
    );
    let storage = log
        .iter()
        .rfind(|r| r.endpoint == Endpoint::ObjectStorage)
        .expect("storage request");
    assert_eq!(storage.request_header("job-token"), None);
    assert_eq!(storage.status, Some(200));

    // A second archive upload is a 400 (not retried); a job without artifacts is a 404.
    let err = client
        .upload_artifact(&upload_request(producer, &producer_token, file))
        .await
        .expect_err("duplicate");
    assert!(
        err.to_string()
            .contains("another artifact of the same type already exists"),
        "{err}"
    );
    let err = client
        .download_artifact(999, &consumer_token, &dest, true)
        .await
        .expect_err("none");
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err:?}");
    assert!(!dest.exists());
    c.shutdown().await;
}

#[tokio::test]
async fn runwright_client_sees_413_with_the_size() {
    let c = start_with(CoordinatorOptions {
        max_artifact_size: Some(10 * 1024),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("archive.zip");
    std::fs::write(&file, vec![0u8; 2 * 1024 * 1024]).expect("archive");
    let (id, token, _) = running_job(&c, JobSpec::shell("build", &["true"])).await;
    let err = runwright_client(&c.url())
        .upload_artifact(&upload_request(id, &token, file))
        .await
        .expect_err("too large");
    let text = err.to_string();
    assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err:?}");
    assert!(text.contains("2.0 MiB (2097152 bytes)"), "{text}");
    assert!(text.contains("413 Request Entity Too Large"), "{text}");
    assert!(!text.contains(&token), "{text}");
    let uploads = c
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::ArtifactUpload)
        .count();
    assert_eq!(uploads, 1, "413 is final");
    c.shutdown().await;
}
