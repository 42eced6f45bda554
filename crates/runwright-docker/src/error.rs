//! The crate's one error type. Every variant names what failed (the image, volume, container, network or daemon
//! address) and, where the user can do something about it, [`DockerError::hint`] says what.
//!
//! `Display` is the message alone: the binary's renderer prints the hint as a `hint:` line of its own. What has
//! no such line (the job's `ERROR: Job failed: …`, the journal, the dashboard) reads [`DockerError::with_hint`],
//! the message with the hint worded and placed as always. Both come from the same constants, so they cannot
//! drift apart.
//!
//! The engine sees these errors through `From<DockerError> for ExecutorError` ([`DockerError::failure_reason`]
//! classifies them as GitLab does).

use crate::engine_api::daemon_message;
use crate::policy::policies_text;
use runwright_api::failure_reason::FailureReason;
use runwright_config::PullPolicy;
use runwright_engine::ExecutorError;
use std::path::PathBuf;

const UNSUPPORTED_HOST_HINT: &str = "use unix://, tcp:// or https://";
const NO_ANSWER_HINT: &str = "is dockerd running?";
const NO_IMAGE_HINT: &str = "set a default image";
const PULL_POLICY_HINT: &str = "use always, if-not-present or never";
const MOUNTPOINT_HINT: &str =
    "run runwright on the Docker host as root (remote Docker hosts are not supported yet)";
const NO_SHELL_HINT: &str = "use an image with /bin/sh";
const NO_SHELL_TEXT: &str =
    "the job image has no shell: the docker executor feeds each stage to sh or bash, which \
     must exist in the image (or its ENTRYPOINT must exec its arguments)";

/// What to do about an image or service that is not on its allow-list.
fn not_allowed_hint(kind: &str) -> String {
    format!("Please check the runner's configuration (allowed_{kind}s in [runners.docker])")
}

/// An allow-list as GitLab prints it: one `- pattern` line each.
fn allow_list(allowed: &[String]) -> String {
    allowed.iter().map(|a| format!("\n- {a}")).collect()
}

/// The reasons each pull policy failed, in the order they were tried.
fn reasons(errors: &[DockerError]) -> String {
    errors
        .iter()
        .map(DockerError::with_hint)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of the docker executor, of `runwright volumes` and of the journal's leftover removal.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// `host` (or `DOCKER_HOST`) names a transport the client does not speak.
    #[error("docker host {host:?} is not supported")]
    UnsupportedHost {
        /// The address as configured.
        host: String,
    },
    /// The client could not be set up (address, TLS files).
    #[error("connecting to the Docker daemon: {source}")]
    Connect {
        /// bollard's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The daemon did not answer the API version negotiation.
    #[error("the Docker daemon at {address} does not answer: {source}")]
    NoAnswer {
        /// The daemon's address.
        address: String,
        /// bollard's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// A daemon call failed; `action` says which, on what.
    #[error("{action}: {}", daemon_message(.source))]
    Daemon {
        /// `creating network runner-…`, `attaching to …`.
        action: String,
        /// The daemon's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// A daemon call whose own message says it all (a refused volume removal, an inspection after a pull).
    #[error("{}", daemon_message(.0))]
    Api(#[from] bollard::errors::Error),

    /// The job's image or service is not on `allowed_images` / `allowed_services`.
    #[error("the {name:?} {kind} is not present on the list of allowed {kind}s:{}", allow_list(.allowed))]
    NotAllowed {
        /// `image` or `service`.
        kind: &'static str,
        /// The image, variables expanded.
        name: String,
        /// The allow-list.
        allowed: Vec<String>,
    },
    /// Neither the job nor `[runners.docker]` names an image.
    #[error("the job has no image and [runners.docker] image is not set")]
    NoImage,
    /// A job's `pull_policy` that GitLab's runner does not know.
    #[error("unsupported pull_policy {name:?}")]
    UnsupportedPullPolicy {
        /// The policy as written.
        name: String,
    },
    /// None of the job's pull policies is on `allowed_pull_policies`.
    #[error("pull_policy {} is not one of the allowed_pull_policies {}", policies_text(.requested), policies_text(.allowed))]
    PullPolicyNotAllowed {
        /// The job's (or the runner's) policies.
        requested: Vec<PullPolicy>,
        /// `allowed_pull_policies`.
        allowed: Vec<PullPolicy>,
    },
    /// The job's `docker:user` is not on `allowed_users`.
    #[error(
        "user {user:?} is not an allowed user: {allowed:?} (set by [runners.docker] allowed_users)"
    )]
    UserNotAllowed {
        /// The user the job asked for.
        user: String,
        /// `allowed_users`.
        allowed: Vec<String>,
    },
    /// The job needs more services than `services_limit` allows.
    #[error("the job needs {needed} services, but [runners.docker] services_limit is {limit}")]
    ServicesLimit {
        /// Configured and job services together.
        needed: usize,
        /// `services_limit`.
        limit: usize,
    },
    /// A `devices` entry that is not Docker's `--device` syntax.
    #[error("[runners.docker] devices entry {entry:?} is not host[:container[:rwm]]")]
    Device {
        /// The entry as written.
        entry: String,
    },
    /// A `ulimit` value that is not `soft[:hard]`.
    #[error("[runners.docker] ulimit {name} = {value:?} is not soft[:hard]")]
    Ulimit {
        /// The limit's name (`nofile`).
        name: String,
        /// The value as written.
        value: String,
    },
    /// A `volumes` entry whose container path is relative.
    #[error("volumes entry {spec:?}: the container path {destination:?} must be absolute")]
    VolumeNotAbsolute {
        /// The entry as written.
        spec: String,
        /// Its container path.
        destination: String,
    },
    /// A `volumes` entry of neither form.
    #[error("volumes entry {spec:?} is neither \"/path\" nor \"source:/path[:mode]\"")]
    VolumeSyntax {
        /// The entry as written.
        spec: String,
    },
    /// A `[runners.docker]` setting of a runner entry is invalid.
    #[error("runner {runner:?}: [runners.docker] {source}")]
    Runner {
        /// The entry's `name`.
        runner: String,
        /// What is wrong.
        #[source]
        source: Box<DockerError>,
    },

    /// No pull policy yielded the image.
    #[error("failed to pull image {image:?} with specified policies {}: {}", policies_text(.policies), reasons(.errors))]
    Pull {
        /// The image.
        image: String,
        /// The policies tried.
        policies: Vec<PullPolicy>,
        /// Why each failed, in order.
        errors: Vec<DockerError>,
    },
    /// Under the `never` policy, the image is not there.
    #[error("image is not present locally and the \"never\" pull policy forbids pulling it ({})", daemon_message(.source))]
    NotPresent {
        /// The inspection's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// The registry refused or broke off a pull (the `errorDetail` of the pull's progress stream).
    #[error("{message}")]
    Registry {
        /// The daemon's words.
        message: String,
    },

    /// A directory below `cache_dir` could not be made.
    #[error("creating cache dir {}: {source}", .path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The runner cannot see a volume's files, so it cannot perform sources, caches and artifacts on them.
    #[error("volume {volume}'s mountpoint {mountpoint} is not reachable from the runner, which performs sources, caches and artifacts itself")]
    MountpointUnreachable {
        /// The volume's name.
        volume: String,
        /// Its mountpoint as the daemon reports it.
        mountpoint: String,
    },
    /// No volume or bind holds the builds dir (cannot happen: one is added when none does).
    #[error("the builds dir {dir} has no volume")]
    NoBuildsVolume {
        /// The builds dir in the container.
        dir: String,
    },
    /// A network whose gateway containers should reach this host at has none (IPv4).
    #[error("network {network} has no IPv4 gateway")]
    NoGateway {
        /// The network's name.
        network: String,
    },
    /// runwright's helper image could not be found or built.
    #[error("helper image: {message}")]
    HelperImage {
        /// What went wrong, with what to do.
        message: String,
    },
    /// An engine-side executor error, passed on to the engine as it is.
    #[error(transparent)]
    HostSession(#[from] ExecutorError),
    /// A stage ran before the build container existed.
    #[error("the build container was not created")]
    NoBuildContainer,
    /// The build container did not start because its image has no shell.
    #[error("{NO_SHELL_TEXT} ({})", daemon_message(.source))]
    NoShell {
        /// The daemon's answer to the start.
        #[source]
        source: bollard::errors::Error,
    },
    /// The daemon's wait stream ended without an exit code.
    #[error("waiting for {container}: no answer")]
    NoExitCode {
        /// The container.
        container: String,
    },
    /// The job was canceled (or timed out) while this was under way.
    #[error("canceled")]
    Canceled,
}

impl DockerError {
    /// A daemon call that failed while doing `action` (`creating volume …`).
    pub(crate) fn daemon(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        DockerError::Daemon {
            action: action.into(),
            source,
        }
    }

    /// The message with its hint placed where the job's trace has always shown it (`ERROR: Job failed: …`,
    /// GitLab's wording for the allow-lists): for the engine, the journal and the dashboard, which have no
    /// `hint:` lines. The binary prints [`Display`](std::fmt::Display) and [`DockerError::hint`] apart.
    pub fn with_hint(&self) -> String {
        match self {
            DockerError::UnsupportedHost { .. } => format!("{self} ({UNSUPPORTED_HOST_HINT})"),
            DockerError::NoAnswer { .. } => format!("{self} ({NO_ANSWER_HINT})"),
            DockerError::NotAllowed { kind, .. } => format!("{self}\n{}", not_allowed_hint(kind)),
            DockerError::NoImage => format!("{self}: {NO_IMAGE_HINT}"),
            DockerError::UnsupportedPullPolicy { .. } => format!("{self} ({PULL_POLICY_HINT})"),
            DockerError::MountpointUnreachable { .. } => format!("{self}: {MOUNTPOINT_HINT}"),
            DockerError::NoShell { source } => {
                format!(
                    "{NO_SHELL_TEXT}; {NO_SHELL_HINT} ({})",
                    daemon_message(source)
                )
            }
            DockerError::Runner { runner, source } => {
                format!("runner {runner:?}: [runners.docker] {}", source.with_hint())
            }
            _ => self.to_string(),
        }
    }

    /// What the user can do about it, when there is something: a `hint:` line of the binary's renderer, part
    /// of the message in [`DockerError::with_hint`].
    pub fn hint(&self) -> Option<String> {
        match self {
            DockerError::UnsupportedHost { .. } => Some(UNSUPPORTED_HOST_HINT.into()),
            DockerError::NoAnswer { .. } => Some(NO_ANSWER_HINT.into()),
            DockerError::NotAllowed { kind, .. } => Some(not_allowed_hint(kind)),
            DockerError::NoImage => Some(NO_IMAGE_HINT.into()),
            DockerError::UnsupportedPullPolicy { .. } => Some(PULL_POLICY_HINT.into()),
            DockerError::MountpointUnreachable { .. } => Some(MOUNTPOINT_HINT.into()),
            DockerError::NoShell { .. } => Some(NO_SHELL_HINT.into()),
            DockerError::Runner { source, .. } => source.hint(),
            _ => None,
        }
    }

    /// How GitLab classifies the failure of a job that met this error: `runner_configuration_error` for what
    /// the runner's configuration refuses, `image_pull_failure`; `None` is the runner's own failure
    /// (`runner_system_failure`).
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            DockerError::NotAllowed { .. }
            | DockerError::NoImage
            | DockerError::UnsupportedPullPolicy { .. }
            | DockerError::PullPolicyNotAllowed { .. }
            | DockerError::UserNotAllowed { .. }
            | DockerError::ServicesLimit { .. }
            | DockerError::Device { .. }
            | DockerError::Ulimit { .. }
            | DockerError::VolumeNotAbsolute { .. }
            | DockerError::VolumeSyntax { .. }
            | DockerError::Runner { .. } => Some(FailureReason::RunnerConfigurationError),
            DockerError::Pull { .. } => Some(FailureReason::ImagePullFailure),
            _ => None,
        }
    }
}

/// The engine's view: cancellation stays cancellation, the host shell's errors pass through as they came, the
/// rest keeps its message under its failure reason.
impl From<DockerError> for ExecutorError {
    fn from(e: DockerError) -> Self {
        match e {
            DockerError::Canceled => ExecutorError::Canceled,
            DockerError::HostSession(inner) => inner,
            e => match e.failure_reason() {
                Some(reason) => ExecutorError::Failed(reason, e.with_hint()),
                None => ExecutorError::System(e.with_hint()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_part_of_the_message_as_before() {
        let cases = [
            (
                DockerError::NoImage,
                "the job has no image and [runners.docker] image is not set: set a default image",
            ),
            (
                DockerError::UnsupportedHost {
                    host: "ssh://h".into(),
                },
                "docker host \"ssh://h\" is not supported (use unix://, tcp:// or https://)",
            ),
            (
                DockerError::UnsupportedPullPolicy {
                    name: "sometimes".into(),
                },
                "unsupported pull_policy \"sometimes\" (use always, if-not-present or never)",
            ),
            (
                DockerError::NotAllowed {
                    kind: "service",
                    name: "redis".into(),
                    allowed: vec!["postgres:*".into(), "mysql".into()],
                },
                "the \"redis\" service is not present on the list of allowed services:\n- postgres:*\n- mysql\n\
                 Please check the runner's configuration (allowed_services in [runners.docker])",
            ),
            (
                DockerError::MountpointUnreachable {
                    volume: "v".into(),
                    mountpoint: "/var/lib/docker/volumes/v/_data".into(),
                },
                "volume v's mountpoint /var/lib/docker/volumes/v/_data is not reachable from the runner, which \
                 performs sources, caches and artifacts itself: run runwright on the Docker host as root (remote \
                 Docker hosts are not supported yet)",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.with_hint(), text);
            let hint = e.hint().expect("a hint");
            assert!(text.contains(&hint), "{hint:?} not in {text:?}");
            // The binary's renderer prints the hint on a line of its own: the message leaves it out.
            assert!(!e.to_string().contains(&hint), "{hint:?} in {e}");
            assert!(
                text.starts_with(&e.to_string()),
                "{e} is not the start of {text:?}"
            );
        }
        let nested = DockerError::Runner {
            runner: "r".into(),
            source: Box::new(DockerError::VolumeSyntax { spec: "a:".into() }),
        };
        assert_eq!(
            nested.with_hint(),
            "runner \"r\": [runners.docker] volumes entry \"a:\" is neither \"/path\" nor \"source:/path[:mode]\""
        );
        assert_eq!(nested.hint(), None);
        assert_eq!(DockerError::NoBuildContainer.hint(), None);
    }

    #[test]
    fn the_engine_gets_gitlabs_failure_reasons_and_the_same_texts() {
        let config = ExecutorError::from(DockerError::ServicesLimit {
            needed: 3,
            limit: 2,
        });
        assert!(
            matches!(&config, ExecutorError::Failed(FailureReason::RunnerConfigurationError, m)
                if m == "the job needs 3 services, but [runners.docker] services_limit is 2"),
            "{config:?}"
        );
        let pull = ExecutorError::from(DockerError::Pull {
            image: "alpine".into(),
            policies: vec![PullPolicy::Never, PullPolicy::Always],
            errors: vec![
                DockerError::Registry {
                    message: "denied".into(),
                },
                DockerError::Registry {
                    message: "not found".into(),
                },
            ],
        });
        assert!(
            matches!(&pull, ExecutorError::Failed(FailureReason::ImagePullFailure, m)
                if m == "failed to pull image \"alpine\" with specified policies [never always]: denied; not found"),
            "{pull:?}"
        );
        assert!(matches!(
            ExecutorError::from(DockerError::Canceled),
            ExecutorError::Canceled
        ));
        let system = ExecutorError::from(DockerError::NoBuildsVolume {
            dir: "/builds".into(),
        });
        assert!(
            matches!(&system, ExecutorError::System(m) if m == "the builds dir /builds has no volume"),
            "{system:?}"
        );
        // The host shell's own errors reach the engine unchanged.
        let passed = ExecutorError::from(DockerError::from(ExecutorError::Failed(
            FailureReason::RunnerSystemFailure,
            "no bash".into(),
        )));
        assert!(
            matches!(&passed, ExecutorError::Failed(FailureReason::RunnerSystemFailure, m) if m == "no bash"),
            "{passed:?}"
        );
    }
}
