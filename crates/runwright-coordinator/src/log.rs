//! The request log: every request the coordinator answered (or dropped), with the headers tests assert on.
//! Tokens are kept verbatim — this is a test double, and tests assert on them.

use crate::faults::{Endpoint, Fault};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// The fault injected into this request, if any.
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
