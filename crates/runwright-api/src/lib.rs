//! GitLab's runner API as data (reference `protocol.md` §1–§3): the wire types of job request, job payload and
//! job update ([`types`]), decoded as gitlab-runner's Go decoder reads them ([`decode_job_response`]); the
//! failure reasons and their mapping onto what a GitLab accepts ([`failure_reason`]); the [`TlsData`] a job
//! carries; redaction of what may hold a secret ([`redact`]).
//!
//! No HTTP here: runwright-client speaks the API, the coordinator serves it, the engine and the executors read
//! the job. Keeping the types apart lets those depend on the data without the HTTP stack.

mod decode;
pub mod failure_reason;
pub mod redact;
mod tls_data;
pub mod types;

pub use decode::{decode_job_response, decode_job_value};
pub use failure_reason::{map_failure_reason, FailureReason};
pub use tls_data::TlsData;
pub use types::JobState;
