//! Client for GitLab's runner API over HTTP (reference `protocol.md` §0–§5).
//!
//! [`Client`] speaks the HTTP API with GitLab's runner's retry and mapping rules; [`JobTrace`] drives the live
//! trace patches and the final job update of one job; [`Client::upload_artifact`] and
//! [`Client::download_artifact`] move job artifacts ([`artifacts`]); `tls.rs` holds the TLS configuration
//! toward GitLab and fills each job's `TlsData`. The wire types, their decoding and the failure reasons are
//! runwright-api's; the environment variables runwright reads are declared in runwright-static.

pub mod artifacts;
mod client;
mod error;
mod job_trace;
mod retry;
pub mod runners;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;

pub use artifacts::{
    ArtifactError, DownloadOutcome, UploadOutcome, UploadRequest, DEFAULT_UPLOAD_TIMEOUT,
};
pub use client::{
    network_features, range_end, Client, ClientOptions, MalformedJobIdentity, PatchState,
    PatchTraceOutcome, RequestJobOutcome, UpdateJobOutcome, UpdateJobState,
};
pub use error::ClientError;
pub use job_trace::{
    FinalState, JobTrace, JobTraceOptions, RemoteCancel, DEFAULT_FINAL_UPDATE_RETRY_LIMIT,
    DEFAULT_FORCE_SEND_INTERVAL, DEFAULT_MAX_PATCH, DEFAULT_UPDATE_INTERVAL, MAX_UPDATE_INTERVAL,
};
pub use runners::{ApiError, RegisterRequest, RunnerToken};
