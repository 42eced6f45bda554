//! The crate's one error enum. Every variant carries the input that failed (address, job id, command).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the coordinator's Rust API (HTTP clients never see these: they get status codes).
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// No job with that id was ever enqueued.
    #[error("job {0} is not known to the coordinator")]
    UnknownJob(i64),
    /// `wait_for_final` gave up.
    #[error("job {id} did not reach a final state within {waited:?} (state: {state})")]
    Timeout {
        id: i64,
        state: String,
        waited: Duration,
    },
    /// A `git` command (fixtures, persistent refs) failed.
    #[error("`{command}` failed: {stderr}")]
    Git { command: String, stderr: String },
    /// The TLS identity given to [`crate::CoordinatorOptions::tls`] is unusable.
    #[error("coordinator TLS: {0}")]
    Tls(String),
    /// A file-system operation failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
