//! The request log: every request the coordinator answered (or dropped), with the headers tests assert on.
//! Tokens are kept verbatim — this is a test double, and tests assert on them.

#[cfg(feature = "faults")]
use crate::faults::Fault;
use std::collections::BTreeMap;
use std::time::Duration;

/// The coordinator's endpoints, as far as faults and the request log are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /api/v4/jobs/request`
    RequestJob,
    /// `PUT /api/v4/jobs/:id`
    UpdateJob,
    /// `PATCH /api/v4/jobs/:id/trace`
    PatchTrace,
    /// `POST /api/v4/jobs/:id/artifacts`
    ArtifactUpload,
    /// `GET /api/v4/jobs/:id/artifacts`
    ArtifactDownload,
    /// `GET /object-storage/:id`, where a direct artifact download is redirected to.
    ObjectStorage,
    /// Git smart HTTP (`/<path>.git/info/refs`, `/<path>.git/git-upload-pack`).
    Git,
    /// Anything else (never faulted).
    Other,
}

impl Endpoint {
    /// Short name used in logs and reports (`request_job`, `update_job`, `patch_trace`, `artifact_upload`,
    /// `artifact_download`, `object_storage`, `git`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::RequestJob => "request_job",
            Endpoint::UpdateJob => "update_job",
            Endpoint::PatchTrace => "patch_trace",
            Endpoint::ArtifactUpload => "artifact_upload",
            Endpoint::ArtifactDownload => "artifact_download",
            Endpoint::ObjectStorage => "object_storage",
            Endpoint::Git => "git",
            Endpoint::Other => "other",
        }
    }
}

/// Request headers recorded (lower-case).
pub(crate) const REQUEST_HEADERS: &[&str] = &[
    "runner-token",
    "job-token",
    "content-type",
    "content-range",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "user-agent",
    "accept",
    "x-request-id",
    "authorization",
    "git-protocol",
];

/// Response headers recorded (lower-case).
pub(crate) const RESPONSE_HEADERS: &[&str] = &[
    "job-status",
    "x-gitlab-last-update",
    "x-gitlab-trace-update-interval",
    "range",
    "gitlab-ci-builds-polling",
    "retry-after",
    "content-type",
    "www-authenticate",
];

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLog {
    /// Arrival order, from 0.
    pub seq: u64,
    pub endpoint: Endpoint,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Response status; `None` when a fault closed the connection instead.
    pub status: Option<u16>,
    /// Request headers of interest, lower-case names.
    pub request_headers: BTreeMap<String, String>,
    /// Response headers of interest, lower-case names.
    pub response_headers: BTreeMap<String, String>,
    /// The body parsed as JSON, when it was JSON (never for trace patches or git traffic).
    pub body: Option<serde_json::Value>,
    /// Body length in bytes (0 for git traffic, which is streamed).
    pub body_len: usize,
    /// The fault injected into this request, if any (feature `faults`).
    #[cfg(feature = "faults")]
    pub fault: Option<Fault>,
    /// Arrival time since the coordinator started.
    pub at: Duration,
    /// Time until the response was ready (or the connection dropped).
    pub took: Duration,
}

impl RequestLog {
    /// A request header (case-insensitive name).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A response header (case-insensitive name).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A top-level string field of the JSON body.
    pub fn body_str(&self, field: &str) -> Option<&str> {
        self.body.as_ref()?.get(field)?.as_str()
    }
}
