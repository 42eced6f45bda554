//! The crate's one error type.
//!
//! Most API calls do not return errors at all: GitLab's runner turns every answer (and every network failure)
//! into an *outcome* the caller acts on (see [`crate::RequestJobOutcome`] and friends). What remains are
//! construction errors (bad URL, unreadable TLS files) and the final update giving up. Every message carries
//! its input — the URL with secrets removed, the file path, the job id — and never a token.

use std::path::PathBuf;

/// Errors of the GitLab client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configured `url` does not parse as a URL.
    #[error("invalid GitLab URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as configured, with userinfo and query removed.
        url: String,
        reason: String,
    },
    /// Only `http` and `https` are supported (runner network/client.go `newClient`).
    #[error("invalid GitLab URL {url}: only http or https scheme supported (got {scheme:?})")]
    UnsupportedScheme { url: String, scheme: String },
    /// A TLS file named in the configuration could not be read.
    #[error("failed to read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TLS file was read but does not hold what it should.
    #[error("invalid {what} {path}: {reason}")]
    InvalidTlsFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The HTTP client could not be constructed (TLS backend set-up).
    #[error("failed to build the HTTP client for {url}: {reason}")]
    Build { url: String, reason: String },
    /// The final job update did not reach a definite answer within the retry limit
    /// (runner network/trace.go, final update loop).
    #[error("final update of job {job_id} failed after {attempts} attempts: {last}")]
    FinalUpdateFailed {
        job_id: i64,
        attempts: u32,
        /// What went wrong in the last attempt.
        last: String,
    },
}
