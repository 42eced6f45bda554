//! The docker executor (reference `protocol.md` §7.1, §8.4, §10): each job gets its image pulled by policy, its
//! runner-managed volumes, a network of its own with its services on it, and a build container that runs the
//! user's stages; everything carries GitLab's names and `com.gitlab.gitlab-runner.*` labels and is removed when
//! the job ends, however it ends.
//!
//! GitLab runs the predefined stages (sources, caches, artifacts) in a helper container from its registry. No
//! registry is needed here: the runner performs them itself, on the job's volumes and binds as its own file
//! system sees them (`ExecutorSession::host_path`), so job images need neither git nor a shell for them. That
//! needs the runner on the Docker host with access to the volumes' mountpoints (as root, like GitLab's own
//! service); a remote `host` fails the job with a message saying so.

pub mod admin;
mod auth;
mod engine_api;
mod error;
mod executor;
mod host_config;
pub mod leftovers;
pub mod names;
pub mod policy;
mod prepare;
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
