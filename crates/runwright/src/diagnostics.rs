//! How the binary fails: the one renderer of a verb's error (the chain, then what to do about it as `hint:`
//! lines, as uv's `diagnostics.rs`), the exit classes, and the closed pipe that is not a failure (ripgrep's
//! `crates/core/main.rs`). `main` hands every error here; nothing else prints one.
//!
//! Exit classes (the README's table): 0 success; 1 a job or pipeline failed, or a check found problems; 2 a
//! usage or configuration error (clap's usage errors are 2 already). The verbs `gitlab-runner` scripts call
//! keep its exit codes: every failure of theirs is 1, as `logrus.Fatal` exits (runner `main.go`,
//! `commands/*.go`).

use std::process::ExitCode;

/// What a run of the binary ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The verb did what it was asked.
    Success,
    /// A job or pipeline failed, a check found problems, or the verb could not finish.
    Failure,
    /// The command line or a configuration file (config.toml, the CI file) is wrong.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
        }
    }
}

/// A wrong flag value or argument of one of the binary's own verbs: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether the verb's failures keep gitlab-runner's exit codes (always 1): the verbs its scripts and units
/// call. The others are runwright's own and use the classes. One difference stays on purpose: gitlab-runner's
/// `list` only warns about a config.toml it cannot load and exits 0 (commands/list.go); runwright's fails with 1,
/// so that an empty listing never passes for a good one.
pub fn keeps_gitlab_runner_codes(command: &crate::cli::Command) -> bool {
    use crate::cli::Command as C;
    matches!(
        command,
        C::Run(_)
            | C::List(_)
            | C::Register(_)
            | C::Unregister(_)
            | C::Verify(_)
            | C::ResetToken(_)
            | C::Status(_)
            | C::Install(_)
            | C::Uninstall(_)
            | C::Start(_)
            | C::Stop(_)
            | C::Restart(_)
    )
}

/// The class of a failed verb's error: a configuration or usage error anywhere in the chain is 2, the rest 1.
pub fn class(err: &anyhow::Error) -> ExitStatus {
    let usage_or_config = err.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<runwright_config::ConfigError>()
            || cause.is::<runwright_exec::ExecError>()
            || cause
                .downcast_ref::<runwright_service::ServiceError>()
                .is_some_and(runwright_service::ServiceError::is_usage_or_config)
    });
    if usage_or_config {
        ExitStatus::Error
    } else {
        ExitStatus::Failure
    }
}

/// Whether the error is a closed stdout or stderr (`runwright history | head -1`): the reader has what it
/// wanted, so the binary exits 0 without a word.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// What the errors of the chain say the user can do, each once, outermost first.
fn hints(err: &anyhow::Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cause in err.chain() {
        let hint = if let Some(e) = cause.downcast_ref::<runwright_docker::DockerError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<runwright_config::ConfigError>() {
            e.hint().map(str::to_string)
        } else {
            None
        };
        if let Some(h) = hint {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// The error as the user reads it: `error: ` and the outermost message, each cause on a `caused by:` line, then
/// the `hint:` lines. Errors carry texts from GitLab and config files: their control characters are shown, not
/// obeyed (issue 17 item 8).
pub fn render(err: &anyhow::Error) -> String {
    let mut msg = format!("error: {err}");
    let mut last = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        // Many messages quote their source already (`…: {source}`): a cause said once is enough.
        if !last.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        last = text;
    }
    for hint in hints(err) {
        msg.push_str(&format!("\nhint: {hint}"));
    }
    runwright_trace::ansi::escape_controls_keep_lines(&msg)
}

/// The end of a verb that failed: nothing for a closed pipe, else the rendered error on stderr; the exit code
/// of its class (1 for the verbs that keep gitlab-runner's codes).
pub fn report(err: &anyhow::Error, gitlab_runner_codes: bool) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitStatus::Success.into();
    }
    use std::io::Write;
    // Stderr itself may be the closed pipe: there is no one left to tell.
    let _ = writeln!(std::io::stderr().lock(), "{}", render(err));
    if gitlab_runner_codes {
        ExitStatus::Failure.into()
    } else {
        class(err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_then_each_hint_once() {
        let err = anyhow::Error::from(runwright_config::ConfigError::NotFound {
            path: "/etc/x.toml".into(),
        })
        .context("reading /etc/x.toml to find the job journal")
        .context("history");
        assert_eq!(
            render(&err),
            "error: history\n  caused by: reading /etc/x.toml to find the job journal\n  caused by: \
             /etc/x.toml: config file not found\nhint: give its path with -c/--config"
        );
        assert_eq!(class(&err), ExitStatus::Error);
    }

    #[test]
    fn docker_hints_are_lines_of_their_own() {
        let err = anyhow::Error::from(runwright_docker::DockerError::UnsupportedHost {
            host: "ssh://h".into(),
        });
        let text = render(&err);
        assert_eq!(
            text,
            "error: docker host \"ssh://h\" is not supported\nhint: use unix://, tcp:// or https://"
        );
        assert_eq!(class(&err), ExitStatus::Failure);
    }

    #[test]
    fn a_cause_the_message_quotes_is_not_repeated() {
        let io = std::io::Error::other("connection refused");
        let err = anyhow::Error::from(runwright_config::ConfigError::Read {
            path: "/etc/x.toml".into(),
            error: io,
        })
        .context("loading");
        assert_eq!(
            render(&err),
            "error: loading\n  caused by: /etc/x.toml: cannot read config file: connection refused"
        );
        // A docker error whose message quotes its source (`runner "r": [runners.docker] <source>`).
        let docker = runwright_docker::DockerError::Runner {
            runner: "r".into(),
            source: Box::new(runwright_docker::DockerError::VolumeSyntax { spec: "x".into() }),
        };
        assert_eq!(
            render(&docker.into()),
            "error: runner \"r\": [runners.docker] volumes entry \"x\" is neither \"/path\" nor \"source:/path[:mode]\""
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let err = anyhow::anyhow!("bad \x1b[2J name").context("outer");
        let text = render(&err);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.starts_with("error: outer\n  caused by: bad "),
            "{text:?}"
        );
    }

    #[test]
    fn a_closed_pipe_anywhere_in_the_chain_is_quiet_success() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::from(pipe).context("writing to stdout");
        assert!(is_broken_pipe(&err));
        assert_eq!(report(&err, true), ExitCode::SUCCESS);
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn usage_and_configuration_errors_are_class_2_others_1() {
        assert_eq!(
            class(&UsageError("--since x".into()).into()),
            ExitStatus::Error
        );
        let ci = runwright_exec::ExecError::Usage("-j 0".into());
        assert_eq!(class(&anyhow::Error::from(ci)), ExitStatus::Error);
        assert_eq!(class(&anyhow::anyhow!("git failed")), ExitStatus::Failure);
    }
}
