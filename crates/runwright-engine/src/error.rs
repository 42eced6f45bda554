//! The engine's errors: why a job cannot start or one of its stages cannot run. Each knows the failure reason
//! GitLab gets for it ([`Error::failure_reason`]); its text is the message after `ERROR: Job failed`, in
//! gitlab-runner's words where it has them.

use crate::executor::ExecutorError;
use runwright_api::failure_reason::FailureReason;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `GIT_CLONE_PATH` while `[runners.custom_build_dir] enabled` is off (runner `getCustomBuildDir`).
    #[error("setting GIT_CLONE_PATH is not allowed, enable `custom_build_dir` feature")]
    CustomBuildDirDisabled,
    /// `GIT_CLONE_PATH` and the builds dir cannot be compared: Go's `filepath.Rel` error, one absolute and the
    /// other not.
    #[error("Rel: can't make {target} relative to {base}")]
    ClonePathNotRelative { target: String, base: String },
    /// `GIT_CLONE_PATH` outside the builds dir.
    #[error("the GIT_CLONE_PATH={dir:?} has to be within {builds_dir:?}")]
    ClonePathOutsideBuildsDir { dir: String, builds_dir: String },
    /// A `GIT_SUBMODULE_STRATEGY` the runner does not know (it warned when it read the settings).
    #[error("unknown GIT_SUBMODULE_STRATEGY")]
    UnknownSubmoduleStrategy,
    /// `GIT_SUBMODULE_PATHS` with git's `:(exclude)` and nothing to exclude.
    #[error("GIT_SUBMODULE_PATHS: invalid submodule pathspec [{}]", quoted(.0))]
    InvalidSubmodulePaths(Vec<String>),
    /// The executor could not prepare the job.
    #[error("preparing the {executor} executor: {source}")]
    Prepare {
        executor: String,
        #[source]
        source: ExecutorError,
    },
    /// A step name that cannot become a stage script's variable.
    #[error("invalid step name {0:?}")]
    InvalidStepName(String),
    /// The executor failed running a stage.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

fn quoted(paths: &[String]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    quoted.join(" ")
}

impl Error {
    /// The failure reason GitLab gets when this error ends a job.
    pub fn failure_reason(&self) -> FailureReason {
        match self {
            Error::CustomBuildDirDisabled
            | Error::ClonePathNotRelative { .. }
            | Error::ClonePathOutsideBuildsDir { .. } => FailureReason::RunnerConfigurationError,
            Error::UnknownSubmoduleStrategy
            | Error::InvalidSubmodulePaths(_)
            | Error::Prepare { .. }
            | Error::InvalidStepName(_)
            | Error::Executor(_) => FailureReason::RunnerSystemFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_runners_and_reasons_gitlabs() {
        let cases = [
            (
                Error::CustomBuildDirDisabled,
                "setting GIT_CLONE_PATH is not allowed, enable `custom_build_dir` feature",
                FailureReason::RunnerConfigurationError,
            ),
            (
                Error::InvalidSubmodulePaths(vec![":(exclude)".into(), "x".into()]),
                "GIT_SUBMODULE_PATHS: invalid submodule pathspec [\":(exclude)\" \"x\"]",
                FailureReason::RunnerSystemFailure,
            ),
            (
                Error::Prepare {
                    executor: "docker".into(),
                    source: ExecutorError::System("cannot reach dockerd".into()),
                },
                "preparing the docker executor: cannot reach dockerd",
                FailureReason::RunnerSystemFailure,
            ),
            (
                Error::Executor(ExecutorError::Failed(
                    FailureReason::ImagePullFailure,
                    "pull failed".into(),
                )),
                "pull failed",
                FailureReason::RunnerSystemFailure,
            ),
        ];
        for (e, message, reason) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.failure_reason(), reason, "{e}");
        }
    }
}
