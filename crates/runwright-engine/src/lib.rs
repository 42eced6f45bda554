//! The job engine: runs one GitLab job through GitLab's stages on any executor (reference `protocol.md` §7).

pub mod control;
pub mod error;
pub mod executor;
pub mod feature_flags;
pub mod job;
pub mod layout;
mod plan;
pub mod script;
pub mod settings;
pub mod sources;
pub mod steps;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
pub mod variables;

pub use control::{AbortReason, JobControl};
pub use error::Error;
pub use executor::{Executor, ExecutorError, ExecutorSession, PreparedJob};
pub use feature_flags::{FeatureFlags, JobSettings};
pub use job::{run_job, JobEnv, JobOutcome, RunnerIdentity};
