//! The docker executor (reference `protocol.md` §7.1, §8.4, §10): each job gets its image pulled by policy, its
//! runner-managed volumes, a network of its own with its services on it, and a build container that runs the
//! user's stages; everything carries GitLab's names and `com.gitlab.gitlab-runner.*` labels and is removed when
//! the job ends, however it ends.
//!
//! The predefined stages (sources, caches, artifacts, cleanup) run in a helper container per job, as GitLab's
//! runner runs them (`helper`), from `helper_image` or runwright's own helper image (`helper_image`), so nothing of
//! a job runs in the runner's process or on the host, and a remote daemon serves jobs like a local one.

pub mod admin;
mod auth;
mod engine_api;
mod error;
mod executor;
pub mod helper;
pub mod helper_image;
mod host_config;
pub mod leftovers;
pub mod names;
pub mod policy;
mod prepare;
pub mod reach;
mod services;
mod session;
pub mod volumes;

use runwright_trace::TraceBuffer;

pub use bollard;
pub use engine_api::connect;
pub use error::DockerError;
pub use executor::DockerExecutor;
pub use session::DockerSession;

/// A yellow warning line in the trace, as GitLab prints them.
pub(crate) fn warn(trace: &TraceBuffer, text: &str) {
    trace.write(format!("\x1b[0;33mWARNING: {text}\x1b[0;m\n").as_bytes());
}
