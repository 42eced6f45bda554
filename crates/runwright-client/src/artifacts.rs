//! Job artifacts over GitLab's API: upload (`POST /api/v4/jobs/:id/artifacts`) and download
//! (`GET /api/v4/jobs/:id/artifacts`), reference `protocol.md` §5.
//!
//! Uploads follow GitLab's runner (runner network/gitlab.go `UploadRawArtifacts`, commands/helpers/
//! artifacts_uploader.go): one multipart field `file` streamed from disk (chunked, the file is never read whole
//! into memory and is reopened for every attempt), type/format/expiry in the query string; `201` is success,
//! `307` moves the upload to the `Location`'s scheme and host, `403` and `413` are final, `503` is tried up to
//! 6 times and every other server or network failure up to 3 times.
//!
//! Downloads follow runner commands/helpers/artifacts_downloader.go: `?direct_download=true` on the first try
//! only, redirects to object storage followed here (never by reqwest) so that the `JOB-TOKEN` is only ever
//! sent to GitLab's API (same origin, under `…/api/v4/`), `404`/`401`/`403` final, server and network failures tried 3 times. The body
//! goes to a temporary file beside the destination that is renamed into place once complete.
//!
//! Both use the client's transfer HTTP client, which has no total or read timeout (an upload may take far
//! longer than the API calls' limits); stalls are caught here instead: a transfer that makes no progress for
//! [`TRANSFER_IDLE_TIMEOUT`] fails (and is retried like a network error).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::client::{
    error_chain, insert_secret_header, Client, WithoutUrlRef, HEADER_JOB_TOKEN, HEADER_REQUEST_ID,
    READ_TIMEOUT,
};
use crate::retry::{self, Backoff};
use runwright_api::redact;

/// A transfer that moves no byte for this long is abandoned (and retried like a network error). Same value as
/// GitLab's `ResponseHeaderTimeout` and the uploader's `--response-header-timeout` default (10 min): while the
/// body is being sent it measures the time since the last chunk went out, afterwards the wait for the answer.
pub const TRANSFER_IDLE_TIMEOUT: Duration = READ_TIMEOUT;

/// Tries of an upload that keeps failing with anything but `503` (runner artifacts_uploader.go `defaultTries`).
const UPLOAD_TRIES: u32 = 3;
/// Tries of an upload while GitLab answers `503` (runner artifacts_uploader.go `serviceUnavailableTries`).
const UPLOAD_TRIES_UNAVAILABLE: u32 = 6;
/// `307` hops one upload may take; they do not count as failed tries, so a redirect loop needs its own cap.
const UPLOAD_MAX_REDIRECTS: u32 = 5;
/// Tries of a download (runner artifacts_downloader.go default `--retry` budget of the helper).
const DOWNLOAD_TRIES: u32 = 3;
/// Redirects followed within one download attempt (Go's `http.Client` default is 10 as well).
const DOWNLOAD_MAX_REDIRECTS: u32 = 10;
/// Read size from the archive file; large enough for few syscalls, small enough to stream.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Bytes of an error answer kept for the message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What to upload: one archive as one artifact of a job.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UploadRequest {
    pub job_id: i64,
    /// The job's token (`JOB-TOKEN` header); never printed.
    pub job_token: String,
    /// The archive on disk.
    pub file: PathBuf,
    /// The form file name, e.g. `default.zip` (`<artifacts:name>.zip`, `.gz` for gzip, as the runner names it).
    pub filename: String,
    /// `artifact_type` query parameter (`archive`, `junit`, …); empty leaves it out (GitLab: `archive`).
    pub artifact_type: String,
    /// `artifact_format` query parameter (`zip`, `gzip`, `raw`); empty leaves it out (GitLab: `zip`).
    pub artifact_format: String,
    /// `expire_in` query parameter (`1 week`); empty leaves it out (GitLab: the instance default).
    pub expire_in: String,
    /// How long one attempt may take in all, answer included; `None` is GitLab's default of one hour, zero
    /// is no limit (`[runners.artifact] upload_timeout`, the uploader's `--timeout`: Go's
    /// `http.Client.Timeout`, runner commands/helpers/artifacts_uploader.go).
    pub timeout: Option<Duration>,
    /// How long to wait for GitLab's answer once the archive is sent; `None` is the client's own limit (ten
    /// minutes, as GitLab's default), zero is no limit (`[runners.artifact] response_header_timeout`, the
    /// uploader's `--response-header-timeout`: Go's `Transport.ResponseHeaderTimeout`).
    pub response_header_timeout: Option<Duration>,
}

/// [`UploadRequest::timeout`] when unset (runner common/consts.go `DefaultArtifactUploadTimeout`).
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

impl fmt::Debug for UploadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadRequest")
            .field("job_id", &self.job_id)
            .field("job_token", &"[REDACTED]")
            .field("file", &self.file)
            .field("filename", &self.filename)
            .field("artifact_type", &self.artifact_type)
            .field("artifact_format", &self.artifact_format)
            .field("expire_in", &self.expire_in)
            .field("timeout", &self.timeout)
            .field("response_header_timeout", &self.response_header_timeout)
            .finish()
    }
}

/// A successful upload. `Display` is what GitLab's runner prints after its `Uploading artifacts as "archive" to
/// coordinator...` prefix, minus the token: `201 Created  id=42 responseStatus=201 Created`;
/// [`UploadOutcome::trace_line`] gives the whole line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    pub job_id: i64,
    /// As requested (empty when the request left it out).
    pub artifact_type: String,
    /// The answer's status line, e.g. `201 Created`.
    pub status: String,
    /// HTTP requests made, the successful one and any redirected ones included.
    pub attempts: u32,
    /// Bytes of the archive sent by the successful attempt.
    pub size: u64,
    /// `scheme://host[:port]` the upload was moved to by a `307`, if it was.
    pub redirected_to: Option<String>,
}

impl UploadOutcome {
    /// The whole trace line as GitLab's runner prints it, prefix and short token included:
    /// `Uploading artifacts as "archive" to coordinator... 201 Created  id=42 responseStatus=201 Created
    /// token=abcdefghi`. Pass a *short* token (runwright_config::short_token), never the token itself.
    pub fn trace_line(&self, short_token: &str) -> String {
        let op = Operation::Upload {
            artifact_type: self.artifact_type.clone(),
        };
        format!("{op} {self} token={short_token}")
    }
}

impl fmt::Display for UploadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{status}  id={id} responseStatus={status}",
            status = self.status,
            id = self.job_id
        )
    }
}

/// A successful download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// Bytes written to the destination.
    pub bytes: u64,
    /// The archive came through a redirect (object storage).
    pub redirected: bool,
}

/// Which transfer an [`ArtifactError`] is about; `Display` is GitLab's runner's trace prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Upload { artifact_type: String },
    Download,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Upload { artifact_type } if artifact_type.is_empty() => {
                f.write_str("Uploading artifacts to coordinator...")
            }
            Operation::Upload { artifact_type } => {
                write!(
                    f,
                    "Uploading artifacts as {artifact_type:?} to coordinator..."
                )
            }
            Operation::Download => f.write_str("Downloading artifacts from coordinator..."),
        }
    }
}

/// Why an artifact transfer failed. `Display` is one line fit for the job trace after GitLab's runner's prefix
/// (`Uploading artifacts as "archive" to coordinator...`, the [`Operation`]): the status (or `failed`), the job
/// id, what happened and what to do; [`ArtifactError::trace_line`] gives the whole line. Never contains a
/// token or a signed URL's query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The archive could not be read, or the destination not written.
    #[error("failed  id={job_id}: cannot {action} {path}: {error}; check that the path exists and that the runner may access it")]
    Io {
        op: Operation,
        job_id: i64,
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The request could not be made at all (a token that is no valid header value, an unusable URL).
    #[error("failed  id={job_id}: {reason}")]
    InvalidRequest {
        op: Operation,
        job_id: i64,
        reason: String,
    },
    /// `403`: GitLab refused the job token. Not retried.
    #[error("{status}  id={job_id}: GitLab refused the job token; the job is no longer running (canceled, timed out or finished) or may not access these artifacts. Not retried")]
    Forbidden {
        op: Operation,
        job_id: i64,
        status: String,
    },
    /// `401` on a download: no valid running-job token. Not retried.
    #[error("{status}  id={job_id}: GitLab did not accept the job token; the job has probably finished or been canceled. Not retried")]
    Unauthorized {
        op: Operation,
        job_id: i64,
        status: String,
    },
    /// `413` on an upload: the archive is larger than GitLab accepts. Not retried.
    #[error("{status}  id={job_id}: the archive is {size_text}, more than GitLab accepts{limit_text}; make it smaller (narrow artifacts:paths, add artifacts:exclude) or ask a GitLab administrator to raise the maximum artifacts size", size_text = human_size(*size), limit_text = limit_text(server_message.as_deref()))]
    TooLarge {
        job_id: i64,
        artifact_type: String,
        /// The status line, `413 Request Entity Too Large`.
        status: String,
        /// Size of the archive in bytes.
        size: u64,
        /// The server's `message`, when it says more than the status line (e.g. the limit).
        server_message: Option<String>,
    },
    /// `404` on a download: the job has no artifacts (none uploaded, expired or erased).
    #[error("{status}  id={job_id}: job {job_id} has no artifacts (none were uploaded, they expired or were erased); re-run that job, or drop it from this job's dependencies")]
    NotFound { job_id: i64, status: String },
    /// Gave up: retries exhausted, or an answer that is neither success nor one of the above.
    #[error("failed  id={job_id} attempts={attempts}: {last}")]
    Failed {
        op: Operation,
        job_id: i64,
        attempts: u32,
        /// The last failure and, when retries ran out, what to do.
        last: String,
    },
}

impl ArtifactError {
    /// Which transfer failed.
    pub fn operation(&self) -> Operation {
        match self {
            ArtifactError::Io { op, .. }
            | ArtifactError::InvalidRequest { op, .. }
            | ArtifactError::Forbidden { op, .. }
            | ArtifactError::Unauthorized { op, .. }
            | ArtifactError::Failed { op, .. } => op.clone(),
            ArtifactError::TooLarge { artifact_type, .. } => Operation::Upload {
                artifact_type: artifact_type.clone(),
            },
            ArtifactError::NotFound { .. } => Operation::Download,
        }
    }

    /// The whole trace line: GitLab's runner's prefix, then this error.
    pub fn trace_line(&self) -> String {
        format!("{} {self}", self.operation())
    }
}

fn limit_text(server_message: Option<&str>) -> String {
    match server_message {
        Some(m) => format!(" (server says: {m})"),
        None => String::new(),
    }
}

/// `12.3 MiB (12897310 bytes)`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit} ({bytes} bytes)")
}

/// `201 Created` (Go's `Response.Status`; reqwest does not keep the server's reason phrase).
fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// GitLab's `{"message": …}` (or Grape's `{"error": …}`), when it says more than the status line.
fn server_message(body: &[u8], status: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = value.get("message").or_else(|| value.get("error"))?;
    let text = match m {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text: String = text.chars().take(300).collect();
    (!text.trim().is_empty() && text.trim() != status).then_some(text)
}

/// Bytes moved and the time of the last movement, shared between a body stream and its watchdog.
struct Progress {
    started: Instant,
    last_ms: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds after `started` at which the last byte of the body was handed over, plus one; 0 while
    /// sending.
    sent_ms: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sent_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The whole body has been handed over (the answer is awaited from now on).
    fn sent(&self) {
        self.sent_ms.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// How long ago the whole body was handed over, if it was.
    fn since_sent(&self) -> Option<Duration> {
        let ms = self.sent_ms.load(Ordering::Relaxed).checked_sub(1)?;
        Some(
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(ms)),
        )
    }
}

/// Why an upload attempt was given up before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandoned {
    /// No byte of the body went out for the client's idle timeout.
    Stalled,
    /// The body was sent, and no answer came within the response header timeout.
    NoAnswer,
    /// The attempt took longer than the upload timeout.
    TooLong,
}

/// Limits of one upload attempt; a zero limit is no limit (as for Go's timeouts).
#[derive(Debug, Clone, Copy)]
struct UploadLimits {
    /// While sending: the longest time without progress.
    stall: Duration,
    /// Once sent: the longest wait for the answer's headers (Go's `ResponseHeaderTimeout`).
    answer: Duration,
    /// The whole attempt (Go's `http.Client.Timeout`).
    total: Duration,
}

/// Runs `fut` (one upload attempt) until it finishes or a limit of `limits` is reached.
async fn within_limits<T>(
    fut: impl Future<Output = T>,
    progress: &Progress,
    limits: UploadLimits,
) -> Result<T, Abandoned> {
    tokio::pin!(fut);
    loop {
        let mut wait = Duration::MAX;
        if !limits.total.is_zero() {
            let left = limits.total.saturating_sub(progress.started.elapsed());
            if left.is_zero() {
                return Err(Abandoned::TooLong);
            }
            wait = wait.min(left);
        }
        match progress.since_sent() {
            Some(waited) if !limits.answer.is_zero() => {
                let left = limits.answer.saturating_sub(waited);
                if left.is_zero() {
                    return Err(Abandoned::NoAnswer);
                }
                wait = wait.min(left);
            }
            Some(_) => {}
            None if !limits.stall.is_zero() => {
                let left = limits.stall.saturating_sub(progress.idle());
                if left.is_zero() {
                    return Err(Abandoned::Stalled);
                }
                wait = wait.min(left);
            }
            None => {}
        }
        tokio::select! {
            out = &mut fut => return Ok(out),
            // Woken at the nearest limit, or soon when there is none while sending (the body may be sent
            // any moment, which starts the answer's limit).
            _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
        }
    }
}

/// Go's `mime/multipart` quoting of a form file name; control characters (which would end the header line)
/// become `_`.
fn quote_filename(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\\' => "\\\\".to_owned(),
            '"' => "\\\"".to_owned(),
            c if c.is_control() => "_".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Go's `multipart.Writer` boundary: 30 random bytes as hex.
fn new_boundary() -> String {
    let raw: [u8; 30] = rand::rng().random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// `multipart/form-data` with the single part `file`, streamed from `file` (runner network/gitlab.go
/// `UploadRawArtifacts`: `CreateFormFile("file", filename)`, which sets `application/octet-stream`).
fn multipart_body(
    file: tokio::fs::File,
    filename: &str,
    boundary: &str,
    progress: Arc<Progress>,
) -> reqwest::Body {
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        quote_filename(filename)
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let done = Arc::clone(&progress);
    let counted = Arc::clone(&progress);
    let content =
        tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK).map(move |chunk| {
            if let Ok(c) = &chunk {
                counted.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
    let stream = futures::stream::once(async move { Ok::<Bytes, io::Error>(head) })
        .chain(content)
        .chain(futures::stream::once(async move {
            // The last bytes are handed over: from here the wait is for the answer.
            done.sent();
            Ok(tail)
        }))
        .map(move |chunk| {
            progress.touch();
            chunk
        });
    reqwest::Body::wrap_stream(stream)
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an answer (for its message); errors just end the read.
async fn small_body(mut resp: reqwest::Response, idle: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    out
}

/// `scheme://host[:port]` of a URL, for messages (no path, query or userinfo).
fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Moves `url` to the scheme, host and port of `location` (runner network/gitlab.go: a `307` on upload names
/// the host to use; path and query stay ours).
fn switch_origin(url: &mut Url, location: &Url) -> Result<(), String> {
    if !matches!(location.scheme(), "http" | "https") {
        return Err(format!(
            "redirected to an unsupported scheme {:?}",
            location.scheme()
        ));
    }
    let host = location
        .host_str()
        .ok_or_else(|| "redirected to a URL without host".to_owned())?;
    url.set_scheme(location.scheme())
        .map_err(|()| format!("cannot switch to scheme {:?}", location.scheme()))?;
    url.set_host(Some(host))
        .map_err(|e| format!("cannot switch to host {host}: {e}"))?;
    url.set_port(location.port())
        .map_err(|()| "cannot switch port".to_owned())?;
    Ok(())
}

/// Waits before the next try: the server's `RateLimit-ResetTime`/`Retry-After`, else exponential back-off.
async fn wait_before_retry(
    headers: Option<&HeaderMap>,
    backoff: &mut Backoff,
    fast: bool,
    op: &Operation,
    job_id: i64,
    attempt: u32,
    why: &str,
) {
    let wait = headers
        .and_then(|h| retry::wait_from_headers(h, SystemTime::now()))
        .unwrap_or_else(|| backoff.next_wait());
    let wait = retry::capped(wait, fast);
    // A warning, as gitlab-runner's helper logs its retries (helpers/retry `WithLogrus`: `Retrying...`): the
    // helper verbs print warnings into the job's log, which is where the reason for a slow transfer belongs.
    tracing::warn!(job = job_id, attempt, reason = %why, duration = ?wait, "{op} waiting before the next try");
    tokio::time::sleep(wait).await;
}

/// One download attempt's failure.
enum DownloadFailure {
    /// Final: report as is.
    Fatal(ArtifactError),
    /// Worth another try; the message and (for HTTP answers) the headers with the server's wait.
    Retry {
        why: String,
        headers: Option<HeaderMap>,
    },
}

impl Client {
    /// `POST /api/v4/jobs/:id/artifacts` (runner network/gitlab.go `UploadRawArtifacts`, `protocol.md` §5.1),
    /// with the uploader's retries (runner commands/helpers/artifacts_uploader.go).
    pub async fn upload_artifact(
        &self,
        req: &UploadRequest,
    ) -> Result<UploadOutcome, ArtifactError> {
        let job_id = req.job_id;
        let op = Operation::Upload {
            artifact_type: req.artifact_type.clone(),
        };
        let invalid = |reason: String| ArtifactError::InvalidRequest {
            op: op.clone(),
            job_id,
            reason,
        };
        let mut url = self
            .endpoint(&format!("jobs/{job_id}/artifacts"))
            .map_err(&invalid)?;
        // Sorted by key, as Go's `url.Values.Encode` writes them.
        let params = [
            ("artifact_format", &req.artifact_format),
            ("artifact_type", &req.artifact_type),
            ("expire_in", &req.expire_in),
        ];
        if params.iter().any(|(_, v)| !v.is_empty()) {
            let mut query = url.query_pairs_mut();
            for (key, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
                query.append_pair(key, value);
            }
        }
        let mut headers = HeaderMap::new();
        insert_secret_header(&mut headers, HEADER_JOB_TOKEN, &req.job_token).map_err(&invalid)?;
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let limits = UploadLimits {
            stall: self.idle_timeout(),
            answer: req.response_header_timeout.unwrap_or(self.idle_timeout()),
            total: req.timeout.unwrap_or(DEFAULT_UPLOAD_TIMEOUT),
        };

        let mut backoff = Backoff::new(retry::BACKOFF_MIN, retry::BACKOFF_MAX);
        let mut attempts = 0u32;
        let mut tries = 0u32;
        let mut redirects = 0u32;
        let mut redirected_to = None;
        loop {
            attempts += 1;
            // Reopened for every attempt: a retried body starts from the first byte again.
            let file =
                tokio::fs::File::open(&req.file)
                    .await
                    .map_err(|error| ArtifactError::Io {
                        op: op.clone(),
                        job_id,
                        action: "open the archive",
                        path: req.file.clone(),
                        error,
                    })?;
            let file_size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let boundary = new_boundary();
            let progress = Progress::new();
            progress.touch();
            let content_type =
                HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
                    .map_err(|_| invalid("cannot build the multipart content type".into()))?;
            let body = multipart_body(file, &req.filename, &boundary, Arc::clone(&progress));
            let shown_url = redact::url(&url);
            let send = self
                .transfer_http()
                .post(url.clone())
                .headers(headers.clone())
                .header(USER_AGENT, self.user_agent().clone())
                .header(HEADER_REQUEST_ID, request_id.as_str())
                .header(CONTENT_TYPE, content_type)
                .body(body)
                .send();
            let result = within_limits(send, &progress, limits).await;
            let sent = progress.bytes.load(Ordering::Relaxed);

            let (why, answer_headers, unavailable) = match result {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let line = status_line(status);
                    let resp_headers = resp.headers().clone();
                    // The answer's body counts towards the attempt's whole time, as in Go.
                    let left = if limits.total.is_zero() {
                        self.idle_timeout()
                    } else {
                        limits
                            .total
                            .saturating_sub(progress.started.elapsed())
                            .min(self.idle_timeout())
                    };
                    let body = small_body(resp, left).await;
                    tracing::info!(job = job_id, attempt = attempts, status = %line, url = %shown_url, "{op}");
                    match status.as_u16() {
                        201 => {
                            return Ok(UploadOutcome {
                                job_id,
                                artifact_type: req.artifact_type.clone(),
                                status: line,
                                attempts,
                                size: sent,
                                redirected_to,
                            })
                        }
                        307 => {
                            let location = resp_headers
                                .get(LOCATION)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|l| url.join(l).ok());
                            let Some(location) = location else {
                                return Err(ArtifactError::Failed {
                                    op: op.clone(),
                                    job_id,
                                    attempts,
                                    last: format!("{line} without a usable Location header from {shown_url}; the GitLab instance (or a proxy in front of it) is misconfigured"),
                                });
                            };
                            redirects += 1;
                            if redirects > UPLOAD_MAX_REDIRECTS {
                                return Err(ArtifactError::Failed {
                                    op: op.clone(),
                                    job_id,
                                    attempts,
                                    last: format!("more than {UPLOAD_MAX_REDIRECTS} redirects (last to {}); the GitLab instance (or a proxy in front of it) is misconfigured", origin_text(&location)),
                                });
                            }
                            switch_origin(&mut url, &location).map_err(|reason| {
                                ArtifactError::Failed {
                                    op: op.clone(),
                                    job_id,
                                    attempts,
                                    last: format!("{line}: {reason}"),
                                }
                            })?;
                            let to = origin_text(&url);
                            tracing::info!(job = job_id, to = %to, "{op} redirected, retrying there");
                            redirected_to = Some(to);
                            // A redirect is an instruction, not a failure: no wait, no try used up.
                            continue;
                        }
                        403 => {
                            return Err(ArtifactError::Forbidden {
                                op: op.clone(),
                                job_id,
                                status: line,
                            })
                        }
                        413 => {
                            return Err(ArtifactError::TooLarge {
                                job_id,
                                artifact_type: req.artifact_type.clone(),
                                server_message: server_message(&body, &line),
                                status: line,
                                size: file_size.max(sent),
                            })
                        }
                        code if retry::retryable_status(code) => {
                            let why = match server_message(&body, &line) {
                                Some(m) => format!("{line} from {shown_url} ({m})"),
                                None => format!("{line} from {shown_url}"),
                            };
                            (why, Some(resp_headers), code == 503)
                        }
                        _ => {
                            let last = match server_message(&body, &line) {
                                Some(m) => format!("{line} from {shown_url} ({m})"),
                                None => format!("{line} from {shown_url}"),
                            };
                            return Err(ArtifactError::Failed {
                                op: op.clone(),
                                job_id,
                                attempts,
                                last,
                            });
                        }
                    }
                }
                Ok(Err(e)) => (
                    format!(
                        "couldn't execute POST against {shown_url}: {}",
                        error_chain(&e.without_url_ref())
                    ),
                    None,
                    false,
                ),
                Err(Abandoned::Stalled) => (
                    format!(
                        "no progress for {}s while sending to {shown_url} (sent {sent} bytes)",
                        limits.stall.as_secs()
                    ),
                    None,
                    false,
                ),
                // Go's client gives up the same way and the uploader tries again (runner
                // commands/helpers/artifacts_uploader.go: a failed request is retryable).
                Err(Abandoned::NoAnswer) => (
                    format!(
                        "no answer from {shown_url} within {:?} after the archive was sent \
                         ([runners.artifact] response_header_timeout)",
                        limits.answer
                    ),
                    None,
                    false,
                ),
                Err(Abandoned::TooLong) => (
                    format!(
                        "the upload to {shown_url} took longer than {:?} (sent {sent} bytes; \
                         [runners.artifact] upload_timeout)",
                        limits.total
                    ),
                    None,
                    false,
                ),
            };
            tries += 1;
            let limit = if unavailable {
                UPLOAD_TRIES_UNAVAILABLE
            } else {
                UPLOAD_TRIES
            };
            if tries >= limit {
                return Err(ArtifactError::Failed {
                    op: op.clone(),
                    job_id,
                    attempts,
                    last: format!("{why}; gave up after {tries} tries, check that GitLab is reachable and healthy, then retry the job"),
                });
            }
            wait_before_retry(
                answer_headers.as_ref(),
                &mut backoff,
                self.fast_retries(),
                &op,
                job_id,
                attempts,
                &why,
            )
            .await;
        }
    }

    /// `GET /api/v4/jobs/:id/artifacts` into `dest` (runner commands/helpers/artifacts_downloader.go,
    /// `protocol.md` §5.2). `job_token` is the token the job payload lists for this dependency. With
    /// `direct_download` the first try asks for `?direct_download=true` (GitLab may answer with a redirect to
    /// object storage); retries go through GitLab, as the runner does. On failure `dest` does not exist
    /// afterwards (a stale file from an earlier run is removed too), so a caller never extracts a partial or
    /// outdated archive.
    pub async fn download_artifact(
        &self,
        job_id: i64,
        job_token: &str,
        dest: &Path,
        direct_download: bool,
    ) -> Result<DownloadOutcome, ArtifactError> {
        let op = Operation::Download;
        let invalid = |reason: String| ArtifactError::InvalidRequest {
            op: Operation::Download,
            job_id,
            reason,
        };
        let api = self
            .endpoint(&format!("jobs/{job_id}/artifacts"))
            .map_err(&invalid)?;
        let api_base = self.endpoint("").map_err(&invalid)?;
        let mut token_headers = HeaderMap::new();
        insert_secret_header(&mut token_headers, HEADER_JOB_TOKEN, job_token).map_err(&invalid)?;
        let Some(name) = dest.file_name() else {
            return Err(invalid(format!(
                "destination {} names no file",
                dest.display()
            )));
        };
        let temp = dest.with_file_name(format!(
            ".{}.{}.part",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        ));

        let mut backoff = Backoff::new(retry::BACKOFF_MIN, retry::BACKOFF_MAX);
        let mut tries = 0u32;
        let result = loop {
            tries += 1;
            let mut url = api.clone();
            if direct_download && tries == 1 {
                url.query_pairs_mut().append_pair("direct_download", "true");
            }
            match self
                .download_once(job_id, url, &api_base, &token_headers, &temp)
                .await
            {
                Ok(outcome) => break Ok(outcome),
                Err(DownloadFailure::Fatal(e)) => break Err(e),
                Err(DownloadFailure::Retry { why, headers }) => {
                    if tries >= DOWNLOAD_TRIES {
                        break Err(ArtifactError::Failed {
                            op: op.clone(),
                            job_id,
                            attempts: tries,
                            last: format!("{why}; gave up after {tries} tries, check that GitLab (and its object storage) is reachable, then retry the job"),
                        });
                    }
                    wait_before_retry(
                        headers.as_ref(),
                        &mut backoff,
                        self.fast_retries(),
                        &op,
                        job_id,
                        tries,
                        &why,
                    )
                    .await;
                }
            }
        };
        let result = match result {
            Ok(outcome) => tokio::fs::rename(&temp, dest)
                .await
                .map(|()| outcome)
                .map_err(|error| ArtifactError::Io {
                    op: op.clone(),
                    job_id,
                    action: "move the downloaded archive to",
                    path: dest.to_owned(),
                    error,
                }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            remove_if_present(&temp).await;
            remove_if_present(dest).await;
        }
        result
    }

    /// One try: follows redirects itself, sending the job token only to GitLab's API.
    async fn download_once(
        &self,
        job_id: i64,
        start: Url,
        api_base: &Url,
        token_headers: &HeaderMap,
        temp: &Path,
    ) -> Result<DownloadOutcome, DownloadFailure> {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let mut url = start;
        let mut redirected = false;
        for _ in 0..=DOWNLOAD_MAX_REDIRECTS {
            // Same origin is not enough: object storage may share GitLab's host (a bucket behind the same
            // proxy, or a test coordinator), and a redirect target outside the API never needs the token.
            let to_gitlab =
                url.origin() == api_base.origin() && url.path().starts_with(api_base.path());
            let shown_url = redact::url(&url);
            let mut builder = self
                .transfer_http()
                .get(url.clone())
                .header(USER_AGENT, self.user_agent().clone());
            // The token and GitLab's correlation id are GitLab's business only; object storage sees neither
            // (a signed URL carries its own authorization).
            if to_gitlab {
                builder = builder
                    .headers(token_headers.clone())
                    .header(HEADER_REQUEST_ID, request_id.as_str());
            }
            let resp = match tokio::time::timeout(self.idle_timeout(), builder.send()).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    return Err(DownloadFailure::Retry {
                        why: format!(
                            "couldn't execute GET against {shown_url}: {}",
                            error_chain(&e.without_url_ref())
                        ),
                        headers: None,
                    })
                }
                Err(_) => {
                    return Err(DownloadFailure::Retry {
                        why: format!(
                            "no answer from {shown_url} within {}s",
                            self.idle_timeout().as_secs()
                        ),
                        headers: None,
                    })
                }
            };
            let status = resp.status();
            let line = status_line(status);
            tracing::info!(job = job_id, status = %line, url = %shown_url, "Downloading artifacts from coordinator...");
            let code = status.as_u16();
            if code == 200 {
                return stream_to_file(job_id, resp, &shown_url, temp, self.idle_timeout())
                    .await
                    .map(|bytes| DownloadOutcome { bytes, redirected });
            }
            if matches!(code, 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"));
                let Some(next) = next else {
                    return Err(DownloadFailure::Fatal(ArtifactError::Failed {
                        op: Operation::Download,
                        job_id,
                        attempts: 1,
                        last: format!("{line} from {shown_url} without a usable http(s) Location header; the GitLab instance (or a proxy in front of it) is misconfigured"),
                    }));
                };
                url = next;
                redirected = true;
                continue;
            }
            let headers = resp.headers().clone();
            let body = small_body(resp, self.idle_timeout()).await;
            let why = match server_message(&body, &line) {
                Some(m) => format!("{line} from {shown_url} ({m})"),
                None => format!("{line} from {shown_url}"),
            };
            return Err(match code {
                // Object storage refusing a signed URL (expired, clock skew) is worth a try through GitLab,
                // which hands out a fresh one; GitLab itself refusing the token is final.
                401 | 403 if !to_gitlab => DownloadFailure::Retry { why, headers: None },
                401 => DownloadFailure::Fatal(ArtifactError::Unauthorized {
                    op: Operation::Download,
                    job_id,
                    status: line,
                }),
                403 => DownloadFailure::Fatal(ArtifactError::Forbidden {
                    op: Operation::Download,
                    job_id,
                    status: line,
                }),
                404 => DownloadFailure::Fatal(ArtifactError::NotFound {
                    job_id,
                    status: line,
                }),
                c if retry::retryable_status(c) => DownloadFailure::Retry {
                    why,
                    headers: Some(headers),
                },
                _ => DownloadFailure::Fatal(ArtifactError::Failed {
                    op: Operation::Download,
                    job_id,
                    attempts: 1,
                    last: why,
                }),
            });
        }
        Err(DownloadFailure::Fatal(ArtifactError::Failed {
            op: Operation::Download,
            job_id,
            attempts: 1,
            last: format!(
                "more than {DOWNLOAD_MAX_REDIRECTS} redirects (last to {}); the GitLab instance or its object storage is misconfigured",
                origin_text(&url)
            ),
        }))
    }
}

/// Writes a `200` body to `temp` (created afresh), chunk by chunk.
async fn stream_to_file(
    job_id: i64,
    mut resp: reqwest::Response,
    shown_url: &str,
    temp: &Path,
    idle: Duration,
) -> Result<u64, DownloadFailure> {
    let io_fatal = |action: &'static str, error: io::Error| {
        DownloadFailure::Fatal(ArtifactError::Io {
            op: Operation::Download,
            job_id,
            action,
            path: temp.to_owned(),
            error,
        })
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .await
        .map_err(|e| io_fatal("create the temporary file", e))?;
    let mut bytes = 0u64;
    loop {
        let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(DownloadFailure::Retry {
                    why: format!(
                        "reading the archive from {shown_url} failed after {bytes} bytes: {}",
                        error_chain(&e.without_url_ref())
                    ),
                    headers: None,
                })
            }
            Err(_) => {
                return Err(DownloadFailure::Retry {
                    why: format!(
                        "no data from {shown_url} for {}s after {bytes} bytes",
                        idle.as_secs()
                    ),
                    headers: None,
                })
            }
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| io_fatal("write", e))?;
        bytes += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| io_fatal("write", e))?;
    // Durable before the rename makes it visible under its real name.
    file.sync_all().await.map_err(|e| io_fatal("sync", e))?;
    Ok(bytes)
}

async fn remove_if_present(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "cannot remove a failed download");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_would() {
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(2048), "2.0 KiB (2048 bytes)");
        assert_eq!(
            human_size(12 * 1024 * 1024 + 300 * 1024),
            "12.3 MiB (12890112 bytes)"
        );
    }

    #[test]
    fn filenames_are_quoted_like_go() {
        assert_eq!(quote_filename("default.zip"), "default.zip");
        assert_eq!(quote_filename("a\"b\\c\r\n"), "a\\\"b\\\\c__");
    }

    #[test]
    fn server_message_only_when_it_says_more() {
        let line = "413 Payload Too Large";
        assert_eq!(
            server_message(br#"{"message":"413 Payload Too Large"}"#, line),
            None
        );
        assert_eq!(
            server_message(br#"{"message":"413 Request Entity Too Large"}"#, line).as_deref(),
            Some("413 Request Entity Too Large")
        );
        assert_eq!(
            server_message(
                br#"{"error":"artifact_format does not have a valid value"}"#,
                "400 Bad Request"
            )
            .as_deref(),
            Some("artifact_format does not have a valid value")
        );
        assert_eq!(server_message(b"not json", line), None);
    }

    #[test]
    fn origin_switch_keeps_path_and_query() {
        let mut url =
            Url::parse("http://gitlab.example.com/api/v4/jobs/1/artifacts?artifact_type=archive")
                .expect("url");
        let location = Url::parse("https://upload.example.com:8443/elsewhere?x=1").expect("url");
        switch_origin(&mut url, &location).expect("switch");
        assert_eq!(
            url.as_str(),
            "https://upload.example.com:8443/api/v4/jobs/1/artifacts?artifact_type=archive"
        );
        let ftp = Url::parse("ftp://x/").expect("url");
        assert!(switch_origin(&mut url, &ftp).is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let req = UploadRequest {
            job_token: "glcbt-SECRET".into(),
            ..Default::default()
        };
        assert!(!format!("{req:?}").contains("SECRET"));
    }

    #[test]
    fn outcome_reads_like_the_runner_trace() {
        let out = UploadOutcome {
            job_id: 42,
            artifact_type: "archive".into(),
            status: "201 Created".into(),
            attempts: 1,
            size: 3,
            redirected_to: None,
        };
        assert_eq!(
            out.to_string(),
            "201 Created  id=42 responseStatus=201 Created"
        );
        assert_eq!(
            out.trace_line("abcdefghi"),
            "Uploading artifacts as \"archive\" to coordinator... 201 Created  id=42 responseStatus=201 Created token=abcdefghi"
        );
    }
}
