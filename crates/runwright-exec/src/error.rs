//! The errors of `runwright exec` and `runwright lint` that the binary classifies: the user's input (a flag
//! value, a job name) and the CI file. Every other failure (git, the Docker daemon, I/O) stays an `anyhow`
//! error with its context; the binary exits 1 for those.

/// What the user gave `exec` or `lint` is wrong: the binary exits 2 (usage or configuration error).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The `.gitlab-ci.yml` (or a file it includes, or a child pipeline's) cannot be planned.
    #[error("invalid CI configuration: {0}")]
    InvalidCi(runwright_pipeline::Error),
    /// A file of the project's CI configuration besides the CI file (the project variables file) is invalid.
    #[error(transparent)]
    Config(runwright_pipeline::Error),
    /// A flag's value or an argument is wrong (`--variable`, `-j 0`, an unknown job name).
    #[error("{0}")]
    Usage(String),
}
