//! The errors the service crate hands to its callers (the binary, `runwright-exec`): what stops `run`, a runner
//! entry that cannot start, a history filter that does not parse. Inside, `anyhow` adds context to the steps of
//! start-up; it reaches callers as [`ServiceError::Start`], its chain intact.

/// Why the service (or one of its parts a caller uses) cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `config.toml` cannot be read or is invalid: nothing starts.
    #[error("the service cannot start with this configuration")]
    Config(#[source] runwright_config::ConfigError),
    /// The runner system ID file cannot be read.
    #[error(transparent)]
    SystemId(runwright_config::ConfigError),
    /// A `[[runners]]` entry cannot start: its executor cannot be made (an unsupported shell or executor, a
    /// Docker client that cannot be set up) or its pollers cannot start. The entry's message says which.
    #[error("{0}")]
    Entry(String),
    /// A filter of the job history (`--since`) does not parse.
    #[error("{0}")]
    Filter(String),
    /// The OS refused what start-up asked of it (signal handlers).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A step of start-up failed (working directory, signals, the service lock, the dashboard, …); the chain
    /// says which and why.
    #[error(transparent)]
    Start(#[from] anyhow::Error),
}

impl ServiceError {
    /// Whether the user's input is wrong (the configuration, a filter), not the host: the binary exits 2 for
    /// these where the verb uses runwright's exit classes.
    pub fn is_usage_or_config(&self) -> bool {
        matches!(
            self,
            ServiceError::Config(_) | ServiceError::SystemId(_) | ServiceError::Filter(_)
        )
    }
}
