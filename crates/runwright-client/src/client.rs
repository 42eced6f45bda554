//! The HTTP client for GitLab's runner API: job request, job update and trace patch.
//!
//! One [`Client`] per `[[runners]]` entry (runner network/gitlab.go keeps one `client` per URL + token + TLS
//! files). It owns the HTTP connection pool, the TLS set-up and the `last_update` value GitLab hands out for
//! long polling (runner network/client.go `setLastUpdate`). Each call returns an *outcome* mapped exactly as
//! GitLab's runner maps answers (runner network/gitlab.go `RequestJob`, `createUpdateJobResult`,
//! `createPatchTraceResult`); transport retries follow runner network/retry_requester.go (see `retry.rs`).
//! Reference: `protocol.md` §0, §2, §3, §4.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::error::ClientError;
use crate::retry::{self, Backoff};
use crate::tls::{ClientTls, TlsFiles};
use runwright_api::redact;
use runwright_api::types::{FeaturesInfo, JobRequest, JobResponse, UpdateJobRequest, VersionInfo};
use runwright_api::{decode_job_response, decode_job_value, TlsData};

/// Dial timeout (runner network/client.go `dialer`). reqwest applies it to TCP connect and TLS handshake
/// together; GitLab's separate 10 s TLS handshake limit is therefore folded into these 30 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// GitLab's `ResponseHeaderTimeout` (runner network/client.go `createTransport`): must outlast Workhorse's long
/// poll. reqwest has no header-only timeout; its read timeout restarts on every read, so while waiting for the
/// headers of a long poll it is the same limit, and on a streaming body it only fires on a 10-minute stall.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Overall per-request limit (runner common/consts.go `DefaultNetworkClientTimeout`).
const TOTAL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

const JSON_MIME: &str = "application/json";
pub(crate) const HEADER_RUNNER_TOKEN: &str = "RUNNER-TOKEN";
pub(crate) const HEADER_JOB_TOKEN: &str = "JOB-TOKEN";
pub(crate) const HEADER_REQUEST_ID: &str = "X-Request-Id";
const HEADER_LAST_UPDATE: &str = "X-GitLab-Last-Update";
const HEADER_JOB_STATUS: &str = "Job-Status";
const HEADER_UPDATE_INTERVAL: &str = "X-GitLab-Trace-Update-Interval";

/// How to reach one GitLab instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// `url` of the `[[runners]]` entry, e.g. `https://gitlab.example.com/` (a trailing `/ci` is accepted).
    pub url: String,
    /// `tls-ca-file`: extra trusted CAs (PEM bundle), added to the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls-cert-file`: client certificate (PEM), used when `tls_key_file` is set too.
    pub tls_cert_file: Option<PathBuf>,
    /// `tls-key-file`: client key (PEM), used when `tls_cert_file` is set too.
    pub tls_key_file: Option<PathBuf>,
    /// Where `<host>.crt`, `<host>.auth.crt` and `<host>.auth.key` stand in for unset `tls-*` files (runner
    /// network/client.go `findCertificate`; GitLab's runner uses `<config dir>/certs`). `None`: not looked up.
    pub certs_dir: Option<PathBuf>,
    /// `User-Agent` of every request, `gitlab-runner <version> (<branch>; <go version>; <os>/<arch>)` style.
    pub user_agent: String,
    /// How long to wait for an answer that makes no progress (API read timeout and artifact transfer idle
    /// limit). `None`: [`runwright_static::env_vars::RUNWRIGHT_API_TIMEOUT_SECS`] if set, else GitLab's 10 minutes.
    pub idle_timeout: Option<Duration>,
}

/// Client for one GitLab instance and runner. Cheap to clone; clones share connections and `last_update`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// For artifact uploads and downloads: no total/read timeout, no automatic redirects.
    transfer: reqwest::Client,
    /// `<url>/api/v4/`, always ending in `/`.
    base: Url,
    user_agent: HeaderValue,
    /// Opaque long-poll cursor from `X-GitLab-Last-Update`.
    last_update: Mutex<Option<String>>,
    /// `RUNWRIGHT_FAST_RETRIES=1` when the client was built.
    fast_retries: bool,
    /// Read timeout of API calls and idle limit of artifact transfers.
    idle_timeout: Duration,
    /// Trust roots, client certificate, and what jobs get of them.
    tls: ClientTls,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url_redacted())
            .field("fast_retries", &self.inner.fast_retries)
            .finish_non_exhaustive()
    }
}

/// What `POST /jobs/request` came to (runner network/gitlab.go `RequestJob`, `protocol.md` §2.2).
/// `Debug` hides the job token of `Malformed` (the `Job` payload hides its own secrets).
pub enum RequestJobOutcome {
    /// `201`: a job to run.
    Job(Box<JobResponse>),
    /// `204`: nothing to do (also what a paused runner gets).
    NoJob,
    /// `403`: the runner token is invalid or expired; counts as an unhealthy request.
    Forbidden,
    /// `409`: someone else got the job, or GitLab is busy; no job, still healthy.
    Conflict,
    /// `422`: the runner is orphaned.
    Orphaned,
    /// `503`: GitLab is unavailable.
    Unavailable,
    /// Any other status (after transport retries) or a network error. The message names method, URL
    /// (without secrets) and status; it never holds a token.
    Failed(String),
    /// `201` whose body is not a job: GitLab has assigned a job we cannot read. `id`/`token` are recovered
    /// from the raw JSON when present so the caller can fail the job instead of leaving it running.
    Malformed {
        id: Option<i64>,
        token: Option<String>,
        /// The job's name, stage and project as far as the raw JSON says them.
        name: MalformedJobIdentity,
        /// What failed, with the JSON path (`variables[1].masked: invalid type: …`); values are elided.
        error: String,
    },
}

/// What an unreadable job payload still says about its job (`job_info`), for the journal's record of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MalformedJobIdentity {
    pub name: String,
    pub stage: String,
    pub project_full_path: String,
    pub project_id: Option<i64>,
    pub pipeline_id: Option<i64>,
}

impl fmt::Debug for RequestJobOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestJobOutcome::Job(job) => f.debug_tuple("Job").field(job).finish(),
            RequestJobOutcome::NoJob => f.write_str("NoJob"),
            RequestJobOutcome::Forbidden => f.write_str("Forbidden"),
            RequestJobOutcome::Conflict => f.write_str("Conflict"),
            RequestJobOutcome::Orphaned => f.write_str("Orphaned"),
            RequestJobOutcome::Unavailable => f.write_str("Unavailable"),
            RequestJobOutcome::Failed(msg) => f.debug_tuple("Failed").field(msg).finish(),
            RequestJobOutcome::Malformed {
                id,
                token,
                name,
                error,
            } => f
                .debug_struct("Malformed")
                .field("id", id)
                .field("token", &token.as_ref().map(|_| "[REDACTED]"))
                .field("name", name)
                .field("error", error)
                .finish(),
        }
    }
}

/// How `PUT /jobs/:id` was answered (runner network/gitlab.go `createUpdateJobResult`, `protocol.md` §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateJobState {
    /// `200`.
    Succeeded,
    /// `202`: trace not yet persisted; wait `update_interval` and send again.
    Accepted,
    /// `412`: checksum mismatch; resend the whole trace from offset 0, then update again.
    TraceValidationFailed,
    /// `Job-Status: canceled|failed`, `403` or `404`: stop working on this job.
    Abort,
    /// No answer at all, after the transport's retries (connection failures, timeouts, an answer too large
    /// to read): the job's state on GitLab is unknown. GitLab's runner maps this to `Abort`, which leaves a
    /// job whose final update timed out running on GitLab until its stuck timeout (found by the fault soak);
    /// runwright retries the final update and the two-phase acknowledgement instead, and ignores it on
    /// keep-alive updates.
    NoAnswer,
    /// Not produced by [`Client::update_job`]: GitLab's runner maps `404` to [`UpdateJobState::Abort`]; kept
    /// because the final update loop treats both the same.
    NotFound,
    /// Anything else (`409`, `5xx` after retries, …).
    Failed,
}

/// Result of [`Client::update_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateJobOutcome {
    pub state: UpdateJobState,
    /// `Job-Status: canceling`: GitLab asks for a graceful cancel.
    pub cancel_requested: bool,
    /// `X-GitLab-Trace-Update-Interval` when it is a positive number of seconds (not capped here).
    pub update_interval: Option<Duration>,
}

/// How `PATCH /jobs/:id/trace` was answered (runner network/gitlab.go `createPatchTraceResult`, `protocol.md` §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchState {
    /// `202` (or nothing to send).
    Succeeded,
    /// `416`: GitLab holds a different length; continue from `new_offset`.
    RangeMismatch,
    /// `Job-Status: canceled|failed` or `403`: abort the job.
    Abort,
    /// `404`.
    NotFound,
    /// Anything else, network errors included.
    Failed,
}

/// Result of [`Client::patch_trace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchTraceOutcome {
    pub state: PatchState,
    /// Offset to send from next: end of the patch on success, GitLab's length on `416`, else the start offset.
    pub new_offset: u64,
    /// `Job-Status: canceling`.
    pub cancel_requested: bool,
    /// `X-GitLab-Trace-Update-Interval` when it is a positive number of seconds (not capped here).
    pub update_interval: Option<Duration>,
}

/// One request, kept so every attempt can rebuild it (runner network/retry_requester.go
/// `regenerateRequestBody`).
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// How much of the answer's body is read (an answer is never buffered unbounded).
    pub(crate) body_limit: BodyLimit,
}

impl Prepared {
    pub(crate) fn body_limit(mut self, limit: BodyLimit) -> Prepared {
        self.body_limit = limit;
        self
    }
}

/// Largest answer body read for calls whose body is data (a job payload, a registration): a larger one is
/// refused with an error. GitLab's job payloads are kilobytes; 16 MiB leaves room for thousands of variables.
pub(crate) const MAX_ANSWER_BODY: usize = 16 * 1024 * 1024;
/// Bytes of an answer kept where only status and headers matter (job updates, trace patches).
pub(crate) const MAX_STATUS_BODY: usize = 64 * 1024;

/// What to do with an answer body beyond a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLimit {
    /// Fail the call: the body is the data asked for, a cut one is useless.
    Refuse(usize),
    /// Keep the first bytes and stop reading (the connection is dropped, not drained).
    Truncate(usize),
}

impl BodyLimit {
    fn bytes(self) -> usize {
        match self {
            BodyLimit::Refuse(n) | BodyLimit::Truncate(n) => n,
        }
    }
}

/// Why an answer body was not read.
enum BodyError {
    Http(reqwest::Error),
    /// Refused: larger than the limit (`Some` when `Content-Length` said so up front).
    TooLarge(Option<u64>),
}

/// Reads an answer's body within `limit`, chunk by chunk, so that a huge (or endless) answer costs at most
/// `limit` bytes of memory.
async fn read_limited(mut resp: reqwest::Response, limit: BodyLimit) -> Result<Bytes, BodyError> {
    let max = limit.bytes();
    if let (BodyLimit::Refuse(_), Some(len)) = (limit, resp.content_length()) {
        if len > max as u64 {
            return Err(BodyError::TooLarge(Some(len)));
        }
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
        if body.len() + chunk.len() > max {
            match limit {
                BodyLimit::Refuse(_) => return Err(BodyError::TooLarge(None)),
                BodyLimit::Truncate(_) => {
                    let room = max - body.len();
                    body.extend_from_slice(&chunk[..room]);
                    break;
                }
            }
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `16 MiB`, `64 KiB` for messages.
fn size_text(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// A finished HTTP exchange.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Client {
    /// Builds a client for `opts.url` (runner network/client.go `newClient`, `fixCIURL`, `createTransport`).
    pub fn new(opts: ClientOptions) -> Result<Client, ClientError> {
        let base = base_url(&opts.url)?;
        let tls = ClientTls::new(TlsFiles::resolve(
            opts.tls_ca_file.as_deref(),
            opts.tls_cert_file.as_deref(),
            opts.tls_key_file.as_deref(),
            opts.certs_dir.as_deref(),
            &base,
        ))?;
        Self::with_tls(opts, tls)
    }

    /// [`Client::new`] with the TLS side already set up (its `tls_*` options are not read again).
    pub(crate) fn with_tls(opts: ClientOptions, tls: ClientTls) -> Result<Client, ClientError> {
        let base = base_url(&opts.url)?;
        let shown = redact::url(&base);

        // Settings both HTTP clients share: the same TLS set-up and connection behaviour.
        let configure = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(CONNECT_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(90))
                // Go's net/http writes canonical header names (`Job-Token`, `X-Request-Id`); so do we.
                .http1_title_case_headers()
                // Our own rustls configuration (tls.rs): it records the chain each server was verified through,
                // which jobs get. It must be rustls 0.23, the version reqwest is built with; another is refused
                // when the client is built ("Unknown TLS backend"), so any test making a client catches it.
                .tls_backend_preconfigured(tls.config.clone())
        };

        let user_agent =
            HeaderValue::from_str(&opts.user_agent).map_err(|_| ClientError::Build {
                url: shown.clone(),
                reason: "user agent is not a valid header value".into(),
            })?;
        let idle_timeout = opts
            .idle_timeout
            .or_else(runwright_static::env_vars::api_timeout)
            .unwrap_or(READ_TIMEOUT);
        let http = configure(
            reqwest::Client::builder()
                .read_timeout(idle_timeout)
                .timeout(TOTAL_TIMEOUT),
        )
        .build()
        .map_err(|e| ClientError::Build {
            url: shown.clone(),
            reason: error_chain(&e),
        })?;
        // Artifact transfers may take far longer than any fixed limit, and reqwest's read timeout runs from
        // the start of the request (it would cut off a long upload): this client has no total or read
        // timeout — the transfer code watches for stalls itself. It follows no redirects either, so that a
        // JOB-TOKEN never travels to another host unnoticed (see artifacts.rs).
        let transfer =
            configure(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()))
                .build()
                .map_err(|e| ClientError::Build {
                    url: shown,
                    reason: error_chain(&e),
                })?;

        Ok(Client {
            inner: Arc::new(Inner {
                http,
                transfer,
                base,
                user_agent,
                last_update: Mutex::new(None),
                fast_retries: runwright_static::env_vars::fast_retries(),
                idle_timeout,
                tls,
            }),
        })
    }

    /// The API base (`…/api/v4/`) without userinfo or query, for logs and messages.
    pub fn base_url_redacted(&self) -> String {
        redact::url(&self.inner.base)
    }

    /// What a job from this GitLab gets for its own TLS connections (`CI_SERVER_TLS_*`): the CA file's content
    /// or the chain the server was last verified through, and the client certificate and key as on disk now.
    pub fn tls_data(&self) -> TlsData {
        self.inner.tls.job_data(&self.inner.base)
    }

    /// Whether `RUNWRIGHT_FAST_RETRIES=1` was set when this client was built.
    pub fn fast_retries(&self) -> bool {
        self.inner.fast_retries
    }

    /// How long a call or transfer may make no progress before it counts as failed.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout
    }

    /// The `last_update` value that the next [`Client::request_job`] will send.
    pub fn last_update(&self) -> Option<String> {
        self.lock_last_update().clone()
    }

    /// `POST /api/v4/jobs/request` (runner network/gitlab.go `RequestJob`). Sends the stored `last_update`
    /// and stores a non-empty `X-GitLab-Last-Update` from the answer, whatever its status (`protocol.md` §2.3).
    /// `info.features` gets the client's own features ([`network_features`]).
    pub async fn request_job(
        &self,
        token: &str,
        system_id: &str,
        info: &VersionInfo,
    ) -> RequestJobOutcome {
        let mut info = info.clone();
        network_features(&mut info.features);
        let body = JobRequest {
            token: token.to_owned(),
            system_id: system_id.to_owned(),
            last_update: self.last_update(),
            info,
        };
        let url = match self.endpoint("jobs/request") {
            Ok(u) => u,
            Err(msg) => return RequestJobOutcome::Failed(msg),
        };
        let mut headers = HeaderMap::new();
        if let Err(msg) = insert_secret_header(&mut headers, HEADER_RUNNER_TOKEN, token) {
            return RequestJobOutcome::Failed(msg);
        }
        headers.insert(ACCEPT, HeaderValue::from_static(JSON_MIME));
        let prepared = match json_request(Method::POST, url, headers, &body) {
            Ok(p) => p,
            Err(msg) => return RequestJobOutcome::Failed(msg),
        };

        let answer = match self.execute(&prepared).await {
            Ok(a) => a,
            Err(msg) => {
                tracing::error!(status = %msg, "Checking for jobs... error");
                return RequestJobOutcome::Failed(msg);
            }
        };

        match answer.status.as_u16() {
            // The job carries what it needs to reach GitLab over TLS itself, as of this answer (runner
            // network/gitlab.go `RequestJob`: `getResponseTLSData` on the job's response).
            201 => match decode_job(&prepared, &answer) {
                RequestJobOutcome::Job(mut job) => {
                    job.tls_data = self.tls_data();
                    RequestJobOutcome::Job(job)
                }
                other => other,
            },
            204 => {
                tracing::debug!("Checking for jobs... nothing");
                RequestJobOutcome::NoJob
            }
            403 => {
                tracing::error!("Checking for jobs... forbidden");
                RequestJobOutcome::Forbidden
            }
            409 => {
                tracing::warn!(status = %status_text(&prepared, &answer), "Checking for jobs... conflict");
                RequestJobOutcome::Conflict
            }
            422 => {
                tracing::warn!(status = %status_text(&prepared, &answer), "Checking for jobs... orphaned runner");
                RequestJobOutcome::Orphaned
            }
            503 => {
                tracing::warn!("Checking for jobs... GitLab instance currently unavailable");
                RequestJobOutcome::Unavailable
            }
            _ => {
                let msg = status_text(&prepared, &answer);
                tracing::warn!(status = %msg, "Checking for jobs... failed");
                RequestJobOutcome::Failed(msg)
            }
        }
    }

    /// `PUT /api/v4/jobs/:id` (runner network/gitlab.go `UpdateJob`). `req.token` should hold the job token;
    /// it is sent in the body and as `JOB-TOKEN`. The client's own features are set in `req.info` as in
    /// [`Client::request_job`].
    pub async fn update_job(
        &self,
        job_id: i64,
        job_token: &str,
        req: &UpdateJobRequest,
    ) -> UpdateJobOutcome {
        tracing::info!(
            job = job_id,
            state = %req.state,
            checksum = req.output.as_ref().map_or("", |o| o.checksum.as_str()),
            bytesize = req.output.as_ref().map_or(0, |o| o.bytesize),
            "Updating job..."
        );
        let abort = UpdateJobOutcome {
            state: UpdateJobState::Abort,
            cancel_requested: false,
            update_interval: None,
        };
        let no_answer = UpdateJobOutcome {
            state: UpdateJobState::NoAnswer,
            ..abort
        };
        let url = match self.endpoint(&format!("jobs/{job_id}")) {
            Ok(u) => u,
            Err(msg) => {
                tracing::error!(status = %msg, "Submitting job to coordinator... error");
                return abort;
            }
        };
        let mut headers = HeaderMap::new();
        if let Err(msg) = insert_secret_header(&mut headers, HEADER_JOB_TOKEN, job_token) {
            tracing::error!(status = %msg, "Submitting job to coordinator... error");
            return abort;
        }
        let mut req = req.clone();
        network_features(&mut req.info.features);
        let prepared = match json_request(Method::PUT, url, headers, &req) {
            // Only status and headers matter; the body is kept for messages only.
            Ok(p) => p.body_limit(BodyLimit::Truncate(MAX_STATUS_BODY)),
            Err(msg) => {
                tracing::error!(status = %msg, "Submitting job to coordinator... error");
                return abort;
            }
        };

        let answer = match self.execute(&prepared).await {
            Ok(a) => a,
            Err(msg) => {
                // GitLab's runner aborts here (network/gitlab.go `createUpdateJobResult`); see `NoAnswer`.
                tracing::error!(job = job_id, status = %msg, "Submitting job to coordinator... error");
                return no_answer;
            }
        };
        let remote = RemoteState::from_headers(&answer.headers);
        let code = answer.status.as_u16();
        // Checked in this order, as runner network/gitlab.go `createUpdateJobResult` does.
        let state = if remote.is_failed(code) {
            UpdateJobState::Abort
        } else {
            match code {
                200 => UpdateJobState::Succeeded,
                202 => UpdateJobState::Accepted,
                412 => UpdateJobState::TraceValidationFailed,
                404 => UpdateJobState::Abort,
                _ => UpdateJobState::Failed,
            }
        };
        let level_msg = match state {
            UpdateJobState::Succeeded => "ok",
            UpdateJobState::Accepted => "accepted, but not yet completed",
            UpdateJobState::TraceValidationFailed => "trace validation failed",
            UpdateJobState::Abort => "aborted",
            UpdateJobState::NoAnswer => "no answer",
            UpdateJobState::NotFound => "not found",
            UpdateJobState::Failed => "failed",
        };
        tracing::info!(
            job = job_id,
            code,
            job_status = remote.status.as_deref().unwrap_or(""),
            update_interval = ?remote.update_interval,
            "Submitting job to coordinator... {level_msg}"
        );
        UpdateJobOutcome {
            state,
            cancel_requested: remote.is_canceling(),
            update_interval: remote.update_interval,
        }
    }

    /// `PATCH /api/v4/jobs/:id/trace?debug_trace=…` with `data` at `offset` (runner network/gitlab.go
    /// `PatchTrace`). An empty `data` sends nothing and succeeds at `offset`.
    pub async fn patch_trace(
        &self,
        job_id: i64,
        job_token: &str,
        offset: u64,
        data: &[u8],
        debug_trace: bool,
    ) -> PatchTraceOutcome {
        let failed = PatchTraceOutcome {
            state: PatchState::Failed,
            new_offset: offset,
            cancel_requested: false,
            update_interval: None,
        };
        if data.is_empty() {
            tracing::debug!(
                job = job_id,
                "Appending trace to coordinator... skipped due to empty patch"
            );
            return PatchTraceOutcome {
                state: PatchState::Succeeded,
                ..failed
            };
        }
        let end = offset + data.len() as u64;
        let content_range = format!("{}-{}", offset, end - 1);
        let mut url = match self.endpoint(&format!("jobs/{job_id}/trace")) {
            Ok(u) => u,
            Err(msg) => {
                tracing::error!(job = job_id, status = %msg, "Appending trace to coordinator... error");
                return failed;
            }
        };
        url.query_pairs_mut()
            .append_pair("debug_trace", if debug_trace { "true" } else { "false" });
        let mut headers = HeaderMap::new();
        if let Err(msg) = insert_secret_header(&mut headers, HEADER_JOB_TOKEN, job_token) {
            tracing::error!(job = job_id, status = %msg, "Appending trace to coordinator... error");
            return failed;
        }
        headers.insert(
            HeaderName::from_static("content-range"),
            HeaderValue::from_str(&content_range)
                .unwrap_or_else(|_| HeaderValue::from_static("0-0")),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let prepared = Prepared {
            method: Method::PATCH,
            url,
            headers,
            body: Some(Bytes::copy_from_slice(data)),
            // Only status and headers matter; the body is kept for messages only.
            body_limit: BodyLimit::Truncate(MAX_STATUS_BODY),
        };

        let answer = match self.execute(&prepared).await {
            Ok(a) => a,
            Err(msg) => {
                tracing::error!(job = job_id, status = %msg, "Appending trace to coordinator... error");
                return failed;
            }
        };
        let remote = RemoteState::from_headers(&answer.headers);
        let remote_range = answer
            .headers
            .get("Range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let code = answer.status.as_u16();
        let mut outcome = PatchTraceOutcome {
            state: PatchState::Failed,
            new_offset: offset,
            cancel_requested: remote.is_canceling(),
            update_interval: remote.update_interval,
        };
        // Checked in this order, as runner network/gitlab.go `createPatchTraceResult` does.
        if remote.is_failed(code) {
            outcome.state = PatchState::Abort;
        } else {
            match code {
                202 => {
                    outcome.state = PatchState::Succeeded;
                    outcome.new_offset = end;
                }
                404 => outcome.state = PatchState::NotFound,
                416 => {
                    outcome.state = PatchState::RangeMismatch;
                    outcome.new_offset = range_end(&remote_range);
                }
                _ => outcome.state = PatchState::Failed,
            }
        }
        tracing::info!(
            job = job_id,
            sent_log = %content_range,
            job_log = %remote_range,
            job_status = remote.status.as_deref().unwrap_or(""),
            code,
            update_interval = ?remote.update_interval,
            state = ?outcome.state,
            "Appending trace to coordinator..."
        );
        outcome
    }

    pub(crate) fn endpoint(&self, path: &str) -> Result<Url, String> {
        self.inner.base.join(path).map_err(|e| {
            format!(
                "cannot build URL for {path} on {}: {e}",
                self.base_url_redacted()
            )
        })
    }

    /// The HTTP client for artifact transfers (no total/read timeout, no automatic redirects).
    pub(crate) fn transfer_http(&self) -> &reqwest::Client {
        &self.inner.transfer
    }

    /// The `User-Agent` every request carries.
    pub(crate) fn user_agent(&self) -> &HeaderValue {
        &self.inner.user_agent
    }

    fn lock_last_update(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned lock only means another thread panicked mid-assignment of a String: the value is intact.
        self.inner
            .last_update
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` with GitLab's retry rules and reads the whole answer. `Err` is a message without secrets.
    pub(crate) async fn execute(&self, req: &Prepared) -> Result<Answer, String> {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let shown_url = redact::url(&req.url);
        let mut backoff = Backoff::new(retry::BACKOFF_MIN, retry::BACKOFF_MAX);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut builder = self
                .inner
                .http
                .request(req.method.clone(), req.url.clone())
                .headers(req.headers.clone())
                .header(USER_AGENT, self.inner.user_agent.clone())
                .header(HEADER_REQUEST_ID, request_id.as_str());
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            let result = match builder.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match read_limited(resp, req.body_limit).await {
                        Ok(body) => Ok(Answer {
                            status,
                            headers,
                            body,
                        }),
                        Err(BodyError::Http(e)) => Err(e),
                        Err(BodyError::TooLarge(len)) => {
                            // Not retried: the same server would send the same answer.
                            let said = len.map_or(String::new(), |l| {
                                format!(", Content-Length {}", size_text(l))
                            });
                            return Err(format!(
                                "{} {shown_url}: the answer ({}{said}) is larger than {} and was refused unread; \
                                 GitLab never sends that much here: check the url of the runner entry and any proxy in front of GitLab",
                                req.method,
                                status.as_u16(),
                                size_text(req.body_limit.bytes() as u64)
                            ));
                        }
                    }
                }
                Err(e) => Err(e),
            };

            let (wait, why) = match result {
                Ok(answer) => {
                    if let Some(server_id) = answer
                        .headers
                        .get(HEADER_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                    {
                        tracing::debug!(request_id = %request_id, server_request_id = server_id, "response");
                    }
                    if !retry::retryable_status(answer.status.as_u16())
                        || attempt >= retry::MAX_ATTEMPTS
                    {
                        self.store_last_update(&answer.headers);
                        return Ok(answer);
                    }
                    let wait = retry::wait_from_headers(&answer.headers, SystemTime::now())
                        .unwrap_or_else(|| backoff.next_wait());
                    (wait, answer.status.as_u16().to_string())
                }
                Err(e) => {
                    // GitLab's runner does not retry connection errors (network/retry_requester.go); we do, within
                    // the same attempt budget, so a reset connection or a restarting GitLab costs no job. A timeout
                    // is retried only for PUT and PATCH, which GitLab applies idempotently (the same state again;
                    // a trace range it already has gets 416 with its length): a POST may be long in progress on the
                    // server. Found by the fault soak: a final update whose answer stalled past the timeout left
                    // the job running on GitLab.
                    let idempotent = matches!(req.method, Method::PUT | Method::PATCH);
                    let retryable = if e.is_timeout() {
                        idempotent
                    } else {
                        e.is_connect() || e.is_request() || e.is_body()
                    };
                    if !retryable || attempt >= retry::MAX_ATTEMPTS {
                        return Err(transport_message(&req.method, &shown_url, &e));
                    }
                    (backoff.next_wait(), error_chain(&e.without_url_ref()))
                }
            };
            let wait = retry::capped(wait, self.inner.fast_retries);
            tracing::info!(
                method = %req.method,
                url = %shown_url,
                attempt,
                reason = %why,
                duration = ?wait,
                "Waiting before making the next call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn store_last_update(&self, headers: &HeaderMap) {
        if let Some(value) = headers
            .get(HEADER_LAST_UPDATE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            *self.lock_last_update() = Some(value.to_owned());
        }
    }
}

/// Features this client implements, set on every `info` it sends whatever the caller put there (runner
/// network/gitlab.go `getFeatures`: "features that are properties of networking client").
pub fn network_features(features: &mut FeaturesInfo) {
    features.trace_reset = true;
    features.trace_checksum = true;
    features.trace_size = true;
    features.cancelable = true;
}

/// `Job-Status` and `X-GitLab-Trace-Update-Interval` of an answer (runner network/remote_job_state_response.go).
struct RemoteState {
    status: Option<String>,
    update_interval: Option<Duration>,
}

impl RemoteState {
    fn from_headers(headers: &HeaderMap) -> RemoteState {
        let status = headers
            .get(HEADER_JOB_STATUS)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let update_interval = headers
            .get(HEADER_UPDATE_INTERVAL)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .and_then(|raw| match raw.trim().parse::<i64>() {
                Ok(secs) if secs > 0 => Some(Duration::from_secs(secs.unsigned_abs())),
                Ok(_) => None,
                Err(_) => {
                    tracing::warn!(
                        header_value = raw,
                        "Failed to parse \"{HEADER_UPDATE_INTERVAL}\" header"
                    );
                    None
                }
            });
        RemoteState {
            status,
            update_interval,
        }
    }

    /// `IsFailed`: the job is over on GitLab's side, or we may no longer touch it.
    fn is_failed(&self, code: u16) -> bool {
        matches!(self.status.as_deref(), Some("canceled" | "failed")) || code == 403
    }

    /// `IsCanceled`: a graceful cancel is requested.
    fn is_canceling(&self) -> bool {
        self.status.as_deref() == Some("canceling")
    }
}

/// Second number of a `Range: 0-<n>` header; 0 when absent or unreadable (runner network/patch_response.go
/// `NewOffset`).
pub fn range_end(range: &str) -> u64 {
    let parts: Vec<&str> = range.split('-').collect();
    if parts.len() == 2 {
        parts[1].trim().parse().unwrap_or(0)
    } else {
        0
    }
}

/// `fixCIURL` + `/api/v4/` + scheme check (runner network/client.go).
fn base_url(configured: &str) -> Result<Url, ClientError> {
    let trimmed = configured.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
    let raw = format!("{trimmed}/api/v4/");
    let url = Url::parse(&raw).map_err(|e| ClientError::InvalidUrl {
        url: redact::url_str(configured),
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ClientError::UnsupportedScheme {
            url: redact::url(&url),
            scheme: url.scheme().to_owned(),
        });
    }
    Ok(url)
}

pub(crate) fn insert_secret_header(
    headers: &mut HeaderMap,
    name: &'static str,
    token: &str,
) -> Result<(), String> {
    let mut value = HeaderValue::from_str(token)
        .map_err(|_| format!("{name} contains characters not allowed in a header"))?;
    value.set_sensitive(true);
    headers.insert(HeaderName::from_static(lower(name)), value);
    Ok(())
}

/// `HeaderName::from_static` wants lower case; our constants are spelled as GitLab documents them.
fn lower(name: &'static str) -> &'static str {
    match name {
        HEADER_RUNNER_TOKEN => "runner-token",
        HEADER_JOB_TOKEN => "job-token",
        _ => "x-unknown",
    }
}

pub(crate) fn json_request<T: serde::Serialize>(
    method: Method,
    url: Url,
    mut headers: HeaderMap,
    body: &T,
) -> Result<Prepared, String> {
    let bytes =
        serde_json::to_vec(body).map_err(|e| format!("failed to marshal request body: {e}"))?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_MIME));
    Ok(Prepared {
        method,
        url,
        headers,
        body: Some(Bytes::from(bytes)),
        body_limit: BodyLimit::Refuse(MAX_ANSWER_BODY),
    })
}

/// Decodes a `201` of jobs/request; only `application/json` is decoded (runner network/client.go
/// `doJSONWithPAT`, `isResponseApplicationJSON`).
fn decode_job(req: &Prepared, answer: &Answer) -> RequestJobOutcome {
    let raw: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let id = raw
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(serde_json::Value::as_i64);
    let token = raw
        .as_ref()
        .and_then(|v| v.get("token"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let malformed = |error: String| {
        tracing::error!(job = ?id, error = %error, "Checking for jobs... received a job that cannot be read");
        RequestJobOutcome::Malformed {
            id,
            token: token.clone(),
            name: raw.as_ref().map(job_identity).unwrap_or_default(),
            error,
        }
    };

    let content_type = answer
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case(JSON_MIME) {
        return malformed(format!(
            "{} {}: server should return application/json. Got: {content_type}",
            req.method,
            redact::url(&req.url)
        ));
    }

    let decoded = match raw.clone() {
        Some(value) => decode_job_value(value),
        None => decode_job_response(&answer.body),
    };
    match decoded {
        Ok(job) => {
            tracing::info!(job = job.id, repo_url = %redact::url_str(&job.git_info.repo_url), "Checking for jobs... received");
            RequestJobOutcome::Job(Box::new(job))
        }
        Err(e) => malformed(e),
    }
}

/// What a payload that did not decode still says about its job, for the journal and the log: the job's name,
/// stage, project and pipeline, each only when it is a string or a number where GitLab puts it.
fn job_identity(raw: &serde_json::Value) -> MalformedJobIdentity {
    let info = raw.get("job_info");
    let text = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let number = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(serde_json::Value::as_i64)
    };
    MalformedJobIdentity {
        name: text("name"),
        stage: text("stage"),
        project_full_path: text("project_full_path"),
        project_id: number("project_id"),
        pipeline_id: number("pipeline_id"),
    }
}

/// `METHOD url: 409 Conflict (message)` (runner network/client.go `ErrorResponse.Error`).
pub(crate) fn status_text(req: &Prepared, answer: &Answer) -> String {
    let status = answer.status;
    let code_msg = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let head = format!(
        "{} {}: {}",
        req.method,
        redact::url(&req.url),
        code_msg.trim_end()
    );
    let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("message").cloned())
        .map(|m| match m {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .filter(|m| !m.is_empty() && *m != code_msg);
    match message {
        Some(m) => {
            let m: String = m.chars().take(500).collect();
            format!("{head} ({m})")
        }
        None => head,
    }
}

fn transport_message(method: &Method, shown_url: &str, e: &reqwest::Error) -> String {
    format!(
        "couldn't execute {method} against {shown_url}: {}",
        error_chain(&e.without_url_ref())
    )
}

/// The error and its sources, `: `-joined (reqwest's top-level text alone says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// reqwest's `without_url` consumes; we only need a view without the URL for messages.
pub(crate) trait WithoutUrlRef {
    fn without_url_ref(&self) -> ErrorWithoutUrl<'_>;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> ErrorWithoutUrl<'_> {
        ErrorWithoutUrl(self)
    }
}

/// Displays a reqwest error minus the `for url (…)` suffix it appends.
pub(crate) struct ErrorWithoutUrl<'a>(&'a reqwest::Error);

impl fmt::Debug for ErrorWithoutUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ErrorWithoutUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let text = match (self.0.url(), text.find(" for url (")) {
            (Some(_), Some(i)) => &text[..i],
            _ => text.as_str(),
        };
        f.write_str(text)
    }
}

impl std::error::Error for ErrorWithoutUrl<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_follows_fix_ci_url() {
        let cases = [
            (
                "https://gitlab.example.com",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com///",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "http://host:8080/gitlab/ci",
                "http://host:8080/gitlab/api/v4/",
            ),
            ("http://host/ci/ci", "http://host/ci/api/v4/"),
        ];
        for (input, want) in cases {
            assert_eq!(base_url(input).expect(input).as_str(), want, "{input}");
        }
        assert!(matches!(
            base_url("ftp://host"),
            Err(ClientError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            base_url("gitlab.example.com"),
            Err(ClientError::InvalidUrl { .. })
        ));
        let err = base_url("ssh://user:pw@host")
            .expect_err("bad scheme")
            .to_string();
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn range_end_is_second_number() {
        assert_eq!(range_end("0-1234"), 1234);
        assert_eq!(range_end(""), 0);
        assert_eq!(range_end("0-x"), 0);
        assert_eq!(range_end("1-2-3"), 0);
    }

    #[test]
    fn remote_state_mapping() {
        let mut h = HeaderMap::new();
        assert!(RemoteState::from_headers(&h).is_failed(403));
        assert!(!RemoteState::from_headers(&h).is_failed(404));
        h.insert(HEADER_JOB_STATUS, HeaderValue::from_static("canceled"));
        assert!(RemoteState::from_headers(&h).is_failed(200));
        h.insert(HEADER_JOB_STATUS, HeaderValue::from_static("failed"));
        assert!(RemoteState::from_headers(&h).is_failed(200));
        h.insert(HEADER_JOB_STATUS, HeaderValue::from_static("canceling"));
        let s = RemoteState::from_headers(&h);
        assert!(!s.is_failed(200) && s.is_canceling());
        h.insert(HEADER_UPDATE_INTERVAL, HeaderValue::from_static("60"));
        assert_eq!(
            RemoteState::from_headers(&h).update_interval,
            Some(Duration::from_secs(60))
        );
        h.insert(HEADER_UPDATE_INTERVAL, HeaderValue::from_static("-1"));
        assert_eq!(RemoteState::from_headers(&h).update_interval, None);
    }

    #[test]
    fn debug_hides_userinfo() {
        let c = Client::new(ClientOptions {
            url: "https://user:hunter2@gitlab.example.com/".into(),
            user_agent: "ua".into(),
            ..Default::default()
        })
        .expect("client");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.base_url_redacted(), "https://gitlab.example.com/api/v4/");
    }
}
