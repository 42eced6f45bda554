//! Failure reasons the runner reports, and their down-mapping to what a given GitLab understands.
//!
//! GitLab lists the reasons it accepts in the job payload (`features.failure_reasons`); a newer runner may
//! know reasons an older GitLab does not, so before the final update the runner maps its reason onto that
//! list (runner common/failure_reason_mapper.go, reasons in runner common/network.go). Reference:
//! `protocol.md` §3.

use std::fmt;

/// A failure reason the runner itself produces (runner common/network.go `JobFailureReason` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The user's script failed (also the meaning of "no reason").
    ScriptFailure,
    /// The runner (or its executor) failed.
    RunnerSystemFailure,
    /// The job ran past its timeout.
    JobExecutionTimeout,
    /// Pulling the job's or a service's image failed.
    ImagePullFailure,
    /// Nothing more specific is known.
    UnknownFailure,
    /// The runner's configuration is wrong for this job.
    RunnerConfigurationError,
    /// Something the runner depends on outside itself failed.
    RunnerExternalDependencyFailure,
    /// The runner was shut down while the job ran.
    RunnerInterrupted,
    /// Internal to the runner: the job was canceled (GitLab has no such reason; maps to `unknown_failure`).
    JobCanceled,
}

impl FailureReason {
    /// All reasons, in the order GitLab's runner declares them.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout,
        FailureReason::ImagePullFailure,
        FailureReason::UnknownFailure,
        FailureReason::RunnerConfigurationError,
        FailureReason::RunnerExternalDependencyFailure,
        FailureReason::RunnerInterrupted,
        FailureReason::JobCanceled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            FailureReason::RunnerInterrupted => "runner_interrupted",
            FailureReason::JobCanceled => "job_canceled",
        }
    }

    /// Parses a wire name; `None` for names the runner does not produce.
    pub fn from_wire(name: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons every GitLab accepts, whatever its `features.failure_reasons` says
/// (runner common/network.go `alwaysSupportedFailureReasons`).
pub const ALWAYS_SUPPORTED: [&str; 3] = [
    "script_failure",
    "runner_system_failure",
    "job_execution_timeout",
];

/// Newer reasons and the older reason they were split out of (runner common/network.go
/// `failureReasonsCompatibilityMap`, plus `runner_external_dependency_failure` per `protocol.md` §3).
const COMPATIBILITY_MAP: [(&str, &str); 3] = [
    ("image_pull_failure", "runner_system_failure"),
    ("runner_configuration_error", "script_failure"),
    (
        "runner_external_dependency_failure",
        "runner_system_failure",
    ),
];

/// Same bound as GitLab's mapper (`maxMappingDepth`), guarding against loops in the compatibility map.
const MAX_MAPPING_DEPTH: usize = 10;

/// Maps `reason` onto what this GitLab accepts (runner common/failure_reason_mapper.go `Map`):
/// empty → `script_failure`; in `supported` or [`ALWAYS_SUPPORTED`] → as is; else follow the compatibility
/// map until a supported reason is reached; else `unknown_failure`.
pub fn map_failure_reason(reason: &str, supported: &[String]) -> String {
    if reason.is_empty() {
        return FailureReason::ScriptFailure.as_str().to_owned();
    }
    let is_supported = |r: &str| ALWAYS_SUPPORTED.contains(&r) || supported.iter().any(|s| s == r);
    if is_supported(reason) {
        return reason.to_owned();
    }
    let mut current = reason;
    for _ in 0..MAX_MAPPING_DEPTH {
        let Some((_, older)) = COMPATIBILITY_MAP
            .iter()
            .find(|(newer, _)| *newer == current)
        else {
            break;
        };
        if is_supported(older) {
            return (*older).to_owned();
        }
        current = older;
    }
    FailureReason::UnknownFailure.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mapping_table() {
        let old_gitlab: Vec<String> = Vec::new();
        let new_gitlab = list(&[
            "unknown_failure",
            "script_failure",
            "runner_system_failure",
            "image_pull_failure",
            "runner_configuration_error",
        ]);
        let cases: &[(&str, &Vec<String>, &str)] = &[
            ("", &old_gitlab, "script_failure"),
            ("script_failure", &old_gitlab, "script_failure"),
            (
                "runner_system_failure",
                &old_gitlab,
                "runner_system_failure",
            ),
            (
                "job_execution_timeout",
                &old_gitlab,
                "job_execution_timeout",
            ),
            ("image_pull_failure", &old_gitlab, "runner_system_failure"),
            ("image_pull_failure", &new_gitlab, "image_pull_failure"),
            ("runner_configuration_error", &old_gitlab, "script_failure"),
            (
                "runner_configuration_error",
                &new_gitlab,
                "runner_configuration_error",
            ),
            (
                "runner_external_dependency_failure",
                &old_gitlab,
                "runner_system_failure",
            ),
            ("job_canceled", &new_gitlab, "unknown_failure"),
            ("runner_interrupted", &old_gitlab, "unknown_failure"),
            ("unknown_failure", &old_gitlab, "unknown_failure"),
            ("totally_new_reason", &new_gitlab, "unknown_failure"),
        ];
        for (reason, supported, want) in cases {
            assert_eq!(
                map_failure_reason(reason, supported),
                *want,
                "reason {reason:?} with supported {supported:?}"
            );
        }
    }

    #[test]
    fn gitlab_list_is_honoured_for_unknown_names() {
        // A reason GitLab lists is sent as is even when the runner does not know it.
        assert_eq!(
            map_failure_reason("runner_interrupted", &list(&["runner_interrupted"])),
            "runner_interrupted"
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::from_wire(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(FailureReason::from_wire("nope"), None);
    }
}
