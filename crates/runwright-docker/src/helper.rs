//! The job's helper container (GitLab's "predefined" container, runner executors/docker/docker_command.go
//! `requestHelperContainer`): every predefined stage (`prepare_script`, `get_sources`, `clear_worktree`, caches,
//! artifacts, `cleanup_file_variables`) runs in it, on the job's volumes and network, never in the runner's
//! process or on the host. Only the user's stages run in the build container.
//!
//! GitLab starts the stopped predefined container again for every stage; here it is started once and each stage
//! is a `docker exec` in it (measured: an exec costs ~80 ms where a restart costs ~420 ms, bench/docker.md).
//! Output streams into the trace as with `attach`, the exit code comes from the exec's inspection, and a cancel
//! stops the whole container (SIGTERM, then SIGKILL after the grace period), which the next stage starts again.

use crate::engine_api;
use crate::DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use runwright_trace::TraceBuffer;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The stages GitLab runs in the predefined container (`common.ExecutorCommand.Predefined`).
pub const PREDEFINED_STAGES: &[&str] = &[
    "prepare_script",
    "get_sources",
    "clear_worktree",
    "restore_cache",
    "download_artifacts",
    "archive_cache",
    "archive_cache_on_failure",
    "upload_artifacts_on_success",
    "upload_artifacts_on_failure",
    "cleanup_file_variables",
];

pub fn is_predefined(stage: &str) -> bool {
    PREDEFINED_STAGES.contains(&stage)
}

/// The helper container's main process: it only waits, and on SIGTERM passes the signal on to every process of
/// the container (the stages `exec` started) before it exits. `sleep` in the background keeps it answering
/// signals at once.
pub const KEEPALIVE: &str =
    "trap 'kill -s TERM -1 2>/dev/null; exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// The job's helper container.
#[derive(Debug)]
pub struct Helper {
    pub name: String,
    /// Whether the stage commands run with umask 0000 (GitLab's default: files the helper writes are writable
    /// by the build container's user, whoever that is; `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` turns it off).
    pub umask: bool,
    /// False after a cancel stopped it: the next stage starts it again.
    pub running: bool,
}

impl Helper {
    /// The command each stage runs: GitLab's shell detection (with umask 0000 first unless disabled), reading the
    /// stage script on stdin.
    fn command(&self) -> Vec<String> {
        let mut script = String::new();
        if self.umask {
            script.push_str("umask 0000\n");
        }
        script.push_str(crate::prepare::DETECT_SHELL);
        vec!["sh".to_string(), "-c".to_string(), script]
    }

    /// Runs one stage in the helper: `exec` of the shell with `script` on stdin, its stdout and stderr into the
    /// trace's work streams; the exit code. On cancel the container is stopped (see the module's comment).
    pub async fn run_stage(
        &mut self,
        docker: &Docker,
        script: &str,
        trace: &TraceBuffer,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> Result<i32, DockerError> {
        if !self.running {
            docker
                .start_container(&self.name, None)
                .await
                .map_err(|e| DockerError::daemon("starting the helper container again", e))?;
            self.running = true;
        }
        let exec = docker
            .create_exec(
                &self.name,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    cmd: Some(self.command()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| DockerError::daemon("starting a stage in the helper container", e))?;
        let started = docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| DockerError::daemon("attaching to the helper container", e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(DockerError::NoExitCode {
                container: self.name.clone(),
            });
        };
        let feeder = engine_api::feed_stdin(input, script);
        let finished = tokio::select! {
            () = engine_api::pump_output(output, trace) => true,
            () = cancel.cancelled() => false,
        };
        feeder.abort();
        if !finished {
            engine_api::terminate(docker, &self.name, grace).await;
            self.running = false;
            return Err(DockerError::Canceled);
        }
        exit_code(docker, &exec.id, &self.name).await
    }
}

/// The exec's exit code, once the daemon has it (the output can end a moment before the process is reaped).
async fn exit_code(docker: &Docker, exec: &str, container: &str) -> Result<i32, DockerError> {
    for _ in 0..200 {
        let info = docker
            .inspect_exec(exec)
            .await
            .map_err(|e| DockerError::daemon("inspecting a stage of the helper container", e))?;
        if info.running != Some(true) {
            if let Some(code) = info.exit_code {
                return Ok(code as i32);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(DockerError::NoExitCode {
        container: container.to_string(),
    })
}

/// Whether the job has predefined work a helper must do: sources, caches, artifacts to upload, or artifacts of
/// dependencies to download; or a build container user who is not root, for whom the helper makes the job's
/// dirs (with umask 0000) where that user could not. A job with none of these (`GIT_STRATEGY: none`, no cache,
/// no artifacts, root) gets no helper: its few predefined stages (`mkdir` of the project dir, an empty
/// cleanup) run in the build container.
pub fn job_needs_helper(job: &runwright_engine::PreparedJob, build_user: Option<&str>) -> bool {
    if !is_root(build_user) {
        return true;
    }
    let strategy = job.variables.value("GIT_STRATEGY").unwrap_or("");
    let sources = !matches!(strategy, "none");
    let j = &job.job;
    sources
        || !j.cache.is_empty()
        || !j.artifacts.is_empty()
        || j.dependencies.iter().any(|d| d.has_artifacts())
}

/// Whether a container user (`user`, `uid[:gid]`, `name[:group]`) is root; `None` is the image's own user,
/// which GitLab's runner also treats as root.
pub fn is_root(user: Option<&str>) -> bool {
    match user.map(|u| u.split(':').next().unwrap_or(u)) {
        None | Some("") | Some("0") | Some("root") => true,
        Some(_) => false,
    }
}

/// A non-root build user given by number (`uid` or `uid:gid`), as `chown` takes it; `None` for root, the
/// image's own user and user names (which only the build image's `/etc/passwd` resolves).
pub fn numeric_owner(user: Option<&str>) -> Option<String> {
    let user = user.filter(|u| !is_root(Some(u)))?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match user.split_once(':') {
        Some((u, g)) if numeric(u) && numeric(g) => Some(user.to_string()),
        Some((u, _)) if numeric(u) => Some(u.to_string()),
        None if numeric(user) => Some(user.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_owners() {
        assert_eq!(numeric_owner(Some("1000")), Some("1000".into()));
        assert_eq!(numeric_owner(Some("1000:50")), Some("1000:50".into()));
        assert_eq!(numeric_owner(Some("1000:staff")), Some("1000".into()));
        assert_eq!(numeric_owner(Some("nobody")), None);
        assert_eq!(numeric_owner(Some("0")), None);
        assert_eq!(numeric_owner(None), None);
    }

    #[test]
    fn root_users() {
        assert!(is_root(None));
        assert!(is_root(Some("root:root")));
        assert!(is_root(Some("0")));
        assert!(!is_root(Some("1000:1000")));
        assert!(!is_root(Some("nobody")));
    }

    #[test]
    fn the_stage_command_sets_the_umask_unless_disabled() {
        let mut h = Helper {
            name: "x".into(),
            umask: true,
            running: true,
        };
        assert!(h.command()[2].starts_with("umask 0000\nif [ -x /usr/local/bin/bash ]"));
        h.umask = false;
        assert!(h.command()[2].starts_with("if [ -x"));
    }

    #[test]
    fn predefined_stages_are_gitlabs() {
        assert!(is_predefined("get_sources"));
        assert!(is_predefined("upload_artifacts_on_failure"));
        assert!(!is_predefined("step_script"));
        assert!(!is_predefined("after_script"));
        assert!(!is_predefined("build_script"));
    }
}
