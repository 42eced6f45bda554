//! The shell executor: every stage script is fed on stdin to a login `bash` (or `sh`) running as the service
//! user or, as root with `--user`, through `su` (runner executors/shell, shells/bash.go `GetConfiguration`).
//!
//! Each stage runs in its own process group, and every process of the job carries a mark in its environment;
//! where cgroup v2 is writable the whole job also runs in a cgroup of its own (`cgroup.rs`). Cancelling a stage
//! sends SIGTERM to its group, SIGKILL after a grace period, then kills the job's cgroup and sweeps for marked
//! stragglers; the job's cleanup kills and removes the cgroup and sweeps again. Without a cgroup (said when the
//! runner entry starts) a process that leaves the group and clears its environment escapes both.

pub mod cgroup;
mod kill;
mod spawn;

/// Kills what is left of a job by its mark; a restarted service uses it on jobs a crash left running.
pub use kill::sweep_marked;

use cgroup::{Confinement, JobCgroup, Placement};
use std::sync::Arc;

use async_trait::async_trait;
use runwright_client::types::FeaturesInfo;
use runwright_engine::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use runwright_trace::{StreamType, TraceBuffer};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The environment variable that marks a job's processes.
pub use runwright_client::env::RUNWRIGHT_JOB_MARK as PROCESS_MARK_VAR;

#[derive(Debug, Clone)]
pub struct ShellExecutor {
    /// `bash` or `sh`; `None` picks bash when it exists, else sh.
    shell: String,
    /// Run scripts as this user (requires root), as `gitlab-runner run --user`.
    user: Option<String>,
    /// The service's working directory: relative builds dirs live below it.
    working_dir: PathBuf,
    kill_grace: Duration,
    /// Where each job's cgroup goes; `None`: no cgroups (the docker executor's host shell, or unavailable).
    cgroups: Option<Arc<Placement>>,
    /// Slot cgroups were asked for but cannot be made: why, for each job's failure.
    cgroups_missing: Option<String>,
}

impl ShellExecutor {
    pub fn new(
        shell: Option<&str>,
        user: Option<&str>,
        working_dir: PathBuf,
        kill_grace: Duration,
    ) -> Result<Self, String> {
        let shell = match shell.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s @ ("bash" | "sh")) => s.to_string(),
            Some(other) => {
                return Err(format!(
                    "shell {other:?} is not supported by the shell executor here (use bash or sh)"
                ))
            }
            None if which("bash") => "bash".to_string(),
            None => "sh".to_string(),
        };
        Ok(Self {
            shell,
            user: user.map(str::to_string).filter(|u| !u.is_empty()),
            working_dir,
            kill_grace,
            cgroups: None,
            cgroups_missing: None,
        })
    }

    /// Runs each job in a cgroup of its own as [`cgroup::detect`] found possible for this runner entry.
    pub fn with_confinement(mut self, confinement: &Confinement) -> Self {
        match confinement {
            Confinement::Cgroups { placement, .. } => self.cgroups = Some(placement.clone()),
            Confinement::Unavailable {
                reason,
                required: true,
            } => self.cgroups_missing = Some(reason.clone()),
            Confinement::Unavailable { .. } => {}
        }
        self
    }

    /// The job's cgroup, made before its first stage. Slot cgroups are the operator's resource limits: a job
    /// that cannot have one fails; otherwise it runs with the process group and the mark sweep only.
    fn job_cgroup(&self, job: &PreparedJob) -> Result<Option<JobCgroup>, ExecutorError> {
        if let Some(reason) = &self.cgroups_missing {
            return Err(ExecutorError::System(format!(
                "use_slot_cgroups = true, but job cgroups cannot be made here: {reason}"
            )));
        }
        let Some(placement) = &self.cgroups else {
            return Ok(None);
        };
        match placement.create(job.concurrent_id, &job.process_mark) {
            Ok(cgroup) => Ok(Some(cgroup)),
            Err(e) if placement.required() => Err(ExecutorError::System(e)),
            Err(e) => {
                runwright_engine::job::warn(
                    &job.trace,
                    &format!(
                        "{e}; this job's processes are stopped by process group and mark only"
                    ),
                );
                tracing::warn!(job = job.job_id, "{e}");
                Ok(None)
            }
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

#[async_trait]
impl Executor for ShellExecutor {
    fn name(&self) -> &str {
        "shell"
    }

    fn shell(&self) -> &str {
        &self.shell
    }

    fn features(&self, f: &mut FeaturesInfo) {
        // runner executors/shell/shell.go: variables and shared builds dirs; session/terminal are not offered
        // because runwright has no session server.
        f.variables = true;
        f.shared = true;
    }

    fn default_builds_dir(&self) -> PathBuf {
        self.working_dir.join("builds")
    }

    fn builds_dir_shared(&self) -> bool {
        true
    }

    fn job_owner(&self) -> Option<(u32, u32)> {
        // An unknown user fails the job when its script starts (`su`); restoring as root meanwhile is harmless.
        let name = self.user.as_deref()?;
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        Some((user.uid.as_raw(), user.gid.as_raw()))
    }

    fn description(&self) -> String {
        format!("Using Shell ({}) executor...", self.shell)
    }

    fn host_name(&self) -> Option<String> {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
    }

    async fn prepare(&self, job: &PreparedJob) -> Result<Box<dyn ExecutorSession>, ExecutorError> {
        tokio::fs::create_dir_all(&job.builds_dir)
            .await
            .map_err(|e| {
                ExecutorError::System(format!(
                    "creating builds dir {}: {e}",
                    job.builds_dir.display()
                ))
            })?;
        // Every stage script starts with `[ -d <tmp> ] || mkdir -p <tmp>`: made here it is a test instead of a
        // process start per job. Not for `--user`: there the job's user must own it, so its script makes it.
        if self.user.is_none() {
            if let Err(e) = tokio::fs::create_dir_all(&job.tmp_dir).await {
                tracing::debug!(
                    "creating {}: {e}; the job's script will",
                    job.tmp_dir.display()
                );
            }
        }
        let cgroup = self.job_cgroup(job)?;
        Ok(Box::new(ShellSession {
            exec: self.clone(),
            job: job.clone(),
            cgroup,
        }))
    }
}

/// The stage script as the shell's stdin, as GitLab's runner hands it over, but in a memory file instead of a
/// pipe: from a pipe bash must read its script one byte at a time (it cannot give back what it read past a
/// command), a system call per byte of the ~5 KB of exports each stage starts with; from a seekable file it
/// reads blocks and seeks back. What the script's commands read from stdin is the same either way: the rest of
/// the script.
fn script_stdin(script: &str) -> Result<OwnedFd, ExecutorError> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::io::{Seek, Write};
    let fail =
        |e: &dyn std::fmt::Display| ExecutorError::System(format!("writing the stage script: {e}"));
    let fd = memfd_create("runwright-stage-script", MFdFlags::MFD_CLOEXEC).map_err(|e| fail(&e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(script.as_bytes()).map_err(|e| fail(&e))?;
    file.rewind().map_err(|e| fail(&e))?;
    Ok(OwnedFd::from(file))
}

struct ShellSession {
    exec: ShellExecutor,
    job: PreparedJob,
    /// Every stage's processes, and all they start, live here until the job's cleanup.
    cgroup: Option<JobCgroup>,
}

impl ShellSession {
    /// Starts a stage: `bash -l` (or `su … -c "bash -l"`) in its own process group, in the job's cgroup when it
    /// has one, with the job's mark in its environment.
    fn start(
        &self,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<spawn::StageProcess> {
        let shell = &self.exec.shell;
        let login_shell = format!("/bin/{shell}");
        let login = format!("{shell} -l");
        let (program, args): (&str, Vec<&str>) = match &self.exec.user {
            Some(user) => ("su", vec!["-s", &login_shell, user, "-c", &login]),
            None => (shell, vec!["-l"]),
        };
        spawn::spawn(spawn::Spawn {
            program,
            args: &args,
            env: &[(PROCESS_MARK_VAR, &self.job.process_mark)],
            cwd: &self.job.builds_dir,
            stdin,
            stdout,
            stderr,
            cgroup: self.cgroup.as_ref().map(JobCgroup::fds),
        })
    }

    /// Kills everything of the job: its cgroup, and the processes that carry its mark (the only net without a
    /// cgroup; with one it still catches what `su`'s session may have moved elsewhere).
    fn kill_job(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        kill::sweep_marked(PROCESS_MARK_VAR, &self.job.process_mark);
    }
}

#[async_trait]
impl ExecutorSession for ShellSession {
    async fn run_stage(
        &mut self,
        stage: &str,
        script: &str,
        trace: &TraceBuffer,
        cancel: CancellationToken,
    ) -> Result<i32, ExecutorError> {
        // stdout and stderr share one pipe so their lines keep the order the job wrote them in.
        let (reader, writer) = std::io::pipe()
            .map_err(|e| ExecutorError::System(format!("creating output pipe: {e}")))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| ExecutorError::System(format!("creating output pipe: {e}")))?;
        // `start` closes our copies of the pipe's write end once the child has them.
        let mut child = self
            .start(
                script_stdin(script)?,
                OwnedFd::from(writer),
                OwnedFd::from(writer2),
            )
            .map_err(|e| {
                ExecutorError::System(format!("starting {} for {stage}: {e}", self.exec.shell))
            })?;
        let pgid = Some(child.id());

        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| ExecutorError::System(format!("reading stage output: {e}")))?;
        // The stage's output is the job's work stream (runner executors/shell/shell.go `Run`:
        // `Stream(StreamWorkLevel, Stdout)`), closed with the stage; stderr shares it here (one pipe, see above).
        let stream = trace.stream(runwright_trace::timestamp::STREAM_WORK, StreamType::Stdout);
        let pump = tokio::spawn(async move {
            let mut reader = reader;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stream.write(&buf[..n]),
                }
            }
            stream.close();
        });

        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = cancel.cancelled() => None,
        };
        let result = match status {
            Some(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }
            Some(Err(e)) => Err(ExecutorError::System(format!("waiting for {stage}: {e}"))),
            None => {
                if let Some(pgid) = pgid {
                    kill::terminate_group(pgid, &mut child, self.exec.kill_grace).await;
                }
                Err(ExecutorError::Canceled)
            }
        };
        // Whatever the stage left behind in its group (background jobs) goes now; only then does the pipe reach
        // EOF. A process that left the group (`setsid`) and still holds the output is killed with the job's
        // cgroup and by its mark — at once after a cancel, otherwise only when the output stays open (a detached
        // daemon may serve a later stage of the job); the job's cleanup kills both anyway.
        if let Some(pgid) = pgid {
            kill::kill_group(pgid);
        }
        let mut pump = pump;
        let mut swept = matches!(result, Err(ExecutorError::Canceled));
        if swept {
            self.kill_job();
        }
        if !swept
            && tokio::time::timeout(Duration::from_millis(100), &mut pump)
                .await
                .is_err()
        {
            self.kill_job();
            swept = true;
        }
        if swept
            && tokio::time::timeout(Duration::from_secs(5), pump)
                .await
                .is_err()
        {
            tracing::warn!(stage, "stage output still open 5 s after the stage ended");
        }
        result
    }

    async fn cleanup(&mut self) {
        if let Some(cgroup) = &mut self.cgroup {
            cgroup.remove().await;
        }
        kill::sweep_marked(PROCESS_MARK_VAR, &self.job.process_mark);
    }
}
