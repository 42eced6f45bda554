//! A coordinator that speaks GitLab's runner API exactly as documented (reference `protocol.md` §0–§4, §12),
//! so runwright's own tests cannot "only agree with themselves", and the local-pipeline mode can serve a
//! `.gitlab-ci.yml`'s jobs to a real runner.
//!
//! * [`Coordinator`] — start one on a free loopback port, register runner tokens, enqueue [`JobSpec`]s, read
//!   back [`JobRecord`]s and the [`RequestLog`];
//! * `FaultPlan` (feature `faults`) — scripted or random faults per endpoint (5xx, 429, connection resets,
//!   stalls, trace range mismatches, `202` on final updates);
//! * git smart HTTP through `git http-backend` with job-token basic auth;
//! * HTTPS with a certificate of the caller's, optionally demanding a client certificate ([`CoordinatorTls`]);
//! * job artifacts: streamed uploads, downloads with an optional object-storage redirect, payload
//!   `dependencies` ([`StoredArtifact`], [`JobSpec::artifact_dependencies`]);
//! * `fixtures` (feature `fixtures`) — bare repositories made with the `git` CLI.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runwright_coordinator::CoordinatorError> {
//! use runwright_coordinator::{Coordinator, CoordinatorOptions, JobSpec, RunnerOptions};
//! use std::time::Duration;
//! let coord = Coordinator::start(CoordinatorOptions::default()).await?;
//! coord.add_runner("glrt-test", RunnerOptions::default());
//! let id = coord.enqueue(JobSpec::shell("hello", &["echo hello"]));
//! // … point a runner at coord.url() with token glrt-test …
//! let job = coord.wait_for_final(id, Duration::from_secs(60)).await?;
//! assert_eq!(job.state, "success");
//! coord.shutdown().await;
//! # Ok(()) }
//! ```

mod coordinator;
mod entities;
mod error;
#[cfg(feature = "faults")]
pub mod faults;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod jobs;
mod log;
mod payload;
mod server;
mod state;
mod tls;

pub use coordinator::{Coordinator, CoordinatorOptions, RunnerOptions};
pub use error::CoordinatorError;
#[cfg(feature = "faults")]
pub use faults::{Fault, FaultKind, FaultPlan};
pub use jobs::{masked_variable, variable, JobRecord, JobSpec, ProjectSpec, DUMMY_SHA};
pub use log::{Endpoint, RequestLog};
pub use payload::{GITLAB_FAILURE_REASONS, SERVER_VERSION};
pub use server::artifacts::StoredArtifact;
pub use server::content_range_start;
pub use state::new_runner_token;
pub use tls::CoordinatorTls;
