//! Client for GitLab's runner API (reference `protocol.md` §0–§5).
//!
//! [`Client`] speaks the HTTP API with GitLab's runner's retry and mapping rules; [`JobTrace`] drives the live
//! trace patches and the final job update of one job; [`map_failure_reason`] fits a failure reason to what the
//! GitLab instance understands; [`Client::upload_artifact`] and [`Client::download_artifact`] move job
//! artifacts ([`artifacts`]). Environment variables runwright reads are declared in [`env`].

pub mod artifacts;
mod client;
pub mod env;
mod error;
pub mod failure_reason;
mod job_trace;
mod redact;
mod retry;
pub mod runners;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
pub mod types;

pub use artifacts::{
    ArtifactError, DownloadOutcome, UploadOutcome, UploadRequest, DEFAULT_UPLOAD_TIMEOUT,
};
pub use client::{
    decode_job_response, network_features, range_end, Client, ClientOptions, MalformedJobIdentity,
    PatchState, PatchTraceOutcome, RequestJobOutcome, UpdateJobOutcome, UpdateJobState,
};
pub use error::ClientError;
pub use failure_reason::{map_failure_reason, FailureReason};
pub use job_trace::{
    FinalState, JobTrace, JobTraceOptions, RemoteCancel, DEFAULT_FINAL_UPDATE_RETRY_LIMIT,
    DEFAULT_FORCE_SEND_INTERVAL, DEFAULT_MAX_PATCH, DEFAULT_UPDATE_INTERVAL, MAX_UPDATE_INTERVAL,
};
pub use runners::{ApiError, RegisterRequest, RunnerToken};
pub use tls::TlsData;
pub use types::JobState;
