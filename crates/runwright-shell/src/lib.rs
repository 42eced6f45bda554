//! The shell executor: every stage script is fed on stdin to a login `bash` (or `sh`) running as the service
//! user or, as root with `--user`, through `su` (runner executors/shell, shells/bash.go `GetConfiguration`).
//!
//! Each stage runs in its own process group, and every process of the job carries a mark in its environment;
//! where cgroup v2 is writable the whole job also runs in a cgroup of its own (`cgroup.rs`). Cancelling a stage
//! sends SIGTERM to its group, SIGKILL after a grace period, then kills the job's cgroup and sweeps for marked
//! stragglers; the job's cleanup kills and removes the cgroup and sweeps again. Without a cgroup (said when the
//! runner entry starts) a process that leaves the group and clears its environment escapes both.

pub mod cgroup;
mod error;
mod kill;
mod spawn;
#[cfg(test)]
mod test_util;

/// Kills what is left of a job by its mark; a restarted service uses it on jobs a crash left running.
pub use error::{CgroupError, ShellError};
pub use kill::sweep_marked;

use cgroup::{Confinement, JobCgroup, Placement};
use std::sync::Arc;

use async_trait::async_trait;
use runwright_api::types::FeaturesInfo;
use runwright_engine::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use runwright_trace::{StreamType, TraceBuffer};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The environment variable that marks a job's processes.
pub use runwright_static::env_vars::RUNWRIGHT_JOB_MARK as PROCESS_MARK_VAR;

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
    /// What the predefined stages call for caches and artifacts: this process's executable.
    helper: String,
}

impl ShellExecutor {
    pub fn new(
        shell: Option<&str>,
        user: Option<&str>,
        working_dir: PathBuf,
        kill_grace: Duration,
    ) -> Result<Self, ShellError> {
        let shell = match shell.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s @ ("bash" | "sh")) => s.to_string(),
            Some(other) => {
                return Err(ShellError::UnsupportedShell {
                    shell: other.to_string(),
                })
            }
            None if which("bash") => "bash".to_string(),
            None => "sh".to_string(),
        };
        let user = user.map(str::to_string).filter(|u| !u.is_empty());
        let helper = own_executable();
        if let Some(user) = &user {
            if let Some(why) = closed_to_others(std::path::Path::new(&helper)) {
                tracing::warn!(
                    "jobs run as {user}, who may not be able to run {helper} ({why}): their cache and artifact \
                     stages call it and would be skipped with \"Missing {helper}\"; install runwright where every \
                     user can run it (/usr/local/bin)"
                );
            }
        }
        Ok(Self {
            shell,
            user,
            working_dir,
            kill_grace,
            cgroups: None,
            cgroups_missing: None,
            helper,
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
            Err(e) if placement.required() => Err(ExecutorError::System(e.to_string())),
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

/// This process's executable by its absolute path; `runwright` (from `PATH`) if the system cannot say.
fn own_executable() -> String {
    match std::env::current_exe() {
        Ok(path) => path.to_string_lossy().to_string(),
        Err(e) => {
            tracing::warn!("cannot find runwright's own executable ({e}); the job's stages call runwright from PATH");
            "runwright".to_string()
        }
    }
}

/// Why another user could not run `path` (it, or a directory above it, lacks the execute bit for others);
/// `None` when nothing stands in the way that the modes show (group membership is not considered).
fn closed_to_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    for p in path.ancestors() {
        if p.as_os_str().is_empty() {
            continue;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.permissions().mode() & 0o001 == 0 => {
                return Some(format!(
                    "{} is mode {:o}",
                    p.display(),
                    m.permissions().mode() & 0o7777
                ))
            }
            Ok(_) => {}
            Err(e) => return Some(format!("{}: {e}", p.display())),
        }
    }
    None
}

fn which(program: &str) -> bool {
    std::env::var_os(runwright_static::env_vars::PATH)
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

    /// The runner's own binary by its absolute path, as gitlab-runner's shell executor calls its own
    /// executable (executors/shell `RunnerCommand`): the predefined stages run it in the job's shell, as the
    /// job's user.
    fn helper_command(&self) -> String {
        self.helper.clone()
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
        // The project's dirs (`<project>.tmp` too) are made by the job's own stage scripts, as the job's user: the
        // service opens no path below the builds dir, where a job can plant symlinks (issue 19 item 7).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{alive, needs, unique_mark, wait_dead};
    use runwright_api::types::JobResponse;
    use runwright_engine::variables::Variables;
    use runwright_trace::TraceOptions;
    use std::path::Path;
    use std::time::Instant;

    struct Stage {
        session: Box<dyn ExecutorSession>,
        trace: TraceBuffer,
        job: PreparedJob,
        _dir: tempfile::TempDir,
    }

    impl Stage {
        /// A session of the shell executor with `shell` (as `user`), on a builds dir of its own.
        async fn new(shell: &str, user: Option<&str>, grace: Duration) -> Stage {
            let dir = tempfile::tempdir().expect("tempdir");
            let exec = ShellExecutor::new(Some(shell), user, dir.path().to_path_buf(), grace)
                .expect("a shell the executor knows");
            let builds_dir = exec.default_builds_dir();
            let trace = TraceBuffer::new(TraceOptions::default());
            let job = PreparedJob {
                job_id: 1,
                project_dir: builds_dir.join("project"),
                tmp_dir: builds_dir.join("project.tmp"),
                cache_dir: dir.path().join("cache"),
                builds_dir,
                process_mark: unique_mark("session"),
                job: Arc::new(JobResponse::default()),
                trace: trace.clone(),
                cancel: CancellationToken::new(),
                variables: Variables::new(),
                concurrent_id: 0,
                concurrent_project_id: 0,
                system_id: "s_unit".into(),
                feature_flags: Default::default(),
            };
            let session = exec.prepare(&job).await.expect("prepared");
            Stage {
                session,
                trace,
                job,
                _dir: dir,
            }
        }

        async fn run(&mut self, script: &str) -> Result<i32, ExecutorError> {
            let cancel = CancellationToken::new();
            self.session
                .run_stage("step_script", script, &self.trace, cancel)
                .await
        }

        /// Runs `script` and cancels it once its output holds `ready`.
        async fn run_and_cancel_when(
            &mut self,
            script: &str,
            ready: &str,
        ) -> (Result<i32, ExecutorError>, Duration) {
            let cancel = CancellationToken::new();
            let trace = self.trace.clone();
            let canceled_at = std::sync::Mutex::new(None);
            let stage = self
                .session
                .run_stage("step_script", script, &trace, cancel.clone());
            let watch = async {
                let start = Instant::now();
                while !String::from_utf8_lossy(&trace.read(0, usize::MAX)).contains(ready)
                    && start.elapsed() < Duration::from_secs(20)
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if let Ok(mut at) = canceled_at.lock() {
                    *at = Some(Instant::now());
                }
                cancel.cancel();
            };
            let (result, ()) = tokio::join!(stage, watch);
            let took = canceled_at
                .lock()
                .ok()
                .and_then(|at| *at)
                .map(|at| at.elapsed())
                .unwrap_or_default();
            (result, took)
        }

        fn output(&self) -> String {
            String::from_utf8_lossy(&self.trace.read(0, usize::MAX)).into_owned()
        }

        /// The number printed after `key=` in the output.
        fn pid(&self, key: &str) -> i32 {
            let out = self.output();
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key}= in {out}"))
        }
    }

    // The tests that need no bash run `sh`: a login bash reads the machine's profile, which can cost half a
    // second a stage.

    /// Shell code that waits until the process `$!` has left the stage's process group (a background
    /// `setsid` has not yet when `$!` is known, and the group's kill would take it then).
    const WAIT_DETACHED: &str =
        "while [ \"$(ps -o pgid= -p $!)\" -eq \"$(ps -o pgid= -p $$)\" ]; do sleep 0.01; done\n";

    #[test]
    fn the_shell_is_bash_or_sh_and_bash_when_there_is_one() {
        let dir = PathBuf::from("/nonexistent");
        let grace = Duration::from_secs(1);
        let default = if which("bash") { "bash" } else { "sh" };
        for asked in [None, Some(""), Some("  ")] {
            let exec = ShellExecutor::new(asked, None, dir.clone(), grace).expect("default");
            assert_eq!(exec.shell(), default, "{asked:?}");
        }
        for shell in ["bash", "sh"] {
            let exec = ShellExecutor::new(Some(shell), None, dir.clone(), grace).expect(shell);
            assert_eq!(exec.shell(), shell);
            assert_eq!(
                exec.description(),
                format!("Using Shell ({shell}) executor...")
            );
        }
        for other in ["pwsh", "zsh", "cmd"] {
            assert_eq!(
                ShellExecutor::new(Some(other), None, dir.clone(), grace)
                    .err()
                    .map(|e| e.to_string()),
                Some(format!(
                    "shell \"{other}\" is not supported by the shell executor here (use bash or sh)"
                ))
            );
        }
    }

    #[tokio::test]
    async fn a_stage_runs_in_a_login_shell_with_the_jobs_mark() {
        if !needs("bash") {
            return;
        }
        let mut stage = Stage::new("bash", None, Duration::from_secs(1)).await;
        let code = stage
            .run("shopt -q login_shell && echo login=yes || echo login=no\necho \"mark=$RUNWRIGHT_JOB_MARK\"\necho \"pwd=$PWD\"\n")
            .await
            .expect("runs");
        assert_eq!(code, 0);
        let out = stage.output();
        assert!(out.contains("login=yes\n"), "{out}");
        assert!(
            out.contains(&format!("mark={}\n", stage.job.process_mark)),
            "{out}"
        );
        assert!(
            out.contains(&format!("pwd={}\n", stage.job.builds_dir.display())),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_script_reaches_the_shell_on_stdin_and_its_commands_read_the_rest_of_it() {
        for shell in ["bash", "sh"] {
            if !needs(shell) {
                continue;
            }
            let mut stage = Stage::new(shell, None, Duration::from_secs(1)).await;
            // What a command reads from stdin is what it would read from GitLab's pipe: for bash the script's
            // next line, for dash what its read-ahead left (nothing here).
            let script = "read -r line\nthis line is data\necho \"got:$line\"\n";
            let code = stage.run(script).await.expect("runs");
            assert_eq!(code, 0);
            let mut lines: Vec<String> = stage.output().lines().map(str::to_string).collect();
            lines.sort();
            assert_eq!(lines, through_a_pipe(shell, script), "{shell}");
            if shell == "bash" {
                assert_eq!(stage.output(), "got:this line is data\n");
            }

            // A script far larger than a pipe's buffer arrives whole.
            let mut big = String::from("echo start\n");
            for i in 0..4_000 {
                big.push_str(&format!(": padding line {i} of a long generated script\n"));
            }
            big.push_str("echo end\nexit 4\n");
            assert!(big.len() > 128 * 1024, "{}", big.len());
            assert_eq!(stage.run(&big).await.expect("runs"), 4, "{shell}");
            assert!(stage.output().ends_with("start\nend\n"), "{shell}");
        }
    }

    /// `script` fed to `shell -l` through a pipe, as GitLab's runner feeds it: its output's lines, sorted
    /// (stdout and stderr come apart here).
    fn through_a_pipe(shell: &str, script: &str) -> Vec<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(shell)
            .arg("-l")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the shell starts");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).expect("script written");
        }
        let out = child.wait_with_output().expect("the shell ends");
        let mut lines: Vec<String> = [out.stdout, out.stderr]
            .iter()
            .flat_map(|o| {
                String::from_utf8_lossy(o)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn output_keeps_its_order_and_exit_codes_reach_the_engine() {
        if !needs("sh") {
            return;
        }
        let mut stage = Stage::new("sh", None, Duration::from_secs(1)).await;
        assert_eq!(
            stage
                .run("echo out; echo err >&2; echo out2; exit 3\n")
                .await
                .expect("runs"),
            3
        );
        assert_eq!(stage.output(), "out\nerr\nout2\n");
        // Killed by a signal: 128 + its number, as a shell reports it.
        assert_eq!(stage.run("kill -9 $$\n").await.expect("runs"), 137);
    }

    #[tokio::test]
    async fn a_canceled_stage_gets_sigterm_then_sigkill_and_its_detached_processes_are_swept() {
        if !needs("setsid") {
            return;
        }
        let grace = Duration::from_millis(300);
        let mut stage = Stage::new("sh", None, grace).await;
        // The stage ignores SIGTERM; one child stays in its group, one leaves it (no group reaches it, the
        // job's mark does).
        let (result, took) = stage
            .run_and_cancel_when(
                &format!(
                    "trap '' TERM\nsleep 60 &\necho child=$!\nsetsid sleep 60 &\n{WAIT_DETACHED}\
                     echo detached=$!\nwait\n"
                ),
                "detached=",
            )
            .await;
        assert!(matches!(result, Err(ExecutorError::Canceled)), "{result:?}");
        assert!(
            took >= grace,
            "SIGKILL came before the grace was over: {took:?}"
        );
        for key in ["child", "detached"] {
            let pid = stage.pid(key);
            assert!(wait_dead(pid), "{key} {pid} outlived the canceled stage");
        }
    }

    #[tokio::test]
    async fn a_canceled_stage_that_obeys_sigterm_does_not_wait_for_the_grace() {
        if !needs("sh") {
            return;
        }
        let mut stage = Stage::new("sh", None, Duration::from_secs(30)).await;
        let (result, took) = stage
            .run_and_cancel_when("echo started\nsleep 60\n", "started")
            .await;
        assert!(matches!(result, Err(ExecutorError::Canceled)), "{result:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[tokio::test]
    async fn what_a_stage_leaves_running_goes_with_the_stage_or_with_the_job() {
        if !needs("setsid") {
            return;
        }
        let mut stage = Stage::new("sh", None, Duration::from_secs(1)).await;
        // A background child of the stage's group dies with the stage; a detached daemon that let go of the
        // stage's output may serve a later stage, until the job's cleanup.
        let code = stage
            .run(&format!(
                "sleep 60 &\necho child=$!\n\
                 setsid sleep 60 >/dev/null 2>&1 </dev/null &\n{WAIT_DETACHED}echo daemon=$!\n"
            ))
            .await
            .expect("runs");
        assert_eq!(code, 0);
        assert!(wait_dead(stage.pid("child")), "the group's child survived");
        let daemon = stage.pid("daemon");
        assert!(alive(daemon), "the daemon died with the stage");
        assert_eq!(stage.run("echo later\n").await.expect("runs"), 0);
        assert!(alive(daemon), "the daemon died with a later stage");
        stage.session.cleanup().await;
        assert!(wait_dead(daemon), "the daemon outlived the job");

        // One that left the group but still holds the output would keep the stage from ending: everything
        // of the job is swept then.
        let mut stage = Stage::new("sh", None, Duration::from_secs(1)).await;
        let started = Instant::now();
        let code = stage
            .run(&format!(
                "setsid sleep 60 >/dev/null 2>&1 </dev/null &\n{WAIT_DETACHED}echo daemon=$!\n\
                 setsid sleep 60 &\n{WAIT_DETACHED}echo holder=$!\n"
            ))
            .await
            .expect("runs");
        assert_eq!(code, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            wait_dead(stage.pid("holder")),
            "the output's holder survived"
        );
        assert!(
            wait_dead(stage.pid("daemon")),
            "the mark's sweep missed a process"
        );
    }

    /// As root with `--user`: the stage runs as that user through `su`, still a login shell.
    #[tokio::test]
    #[allow(clippy::print_stderr)]
    async fn with_a_user_the_stage_runs_as_that_user_in_a_login_shell() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        if !needs("su") || !needs("bash") || !Path::new("/bin/bash").exists() {
            return;
        }
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            eprintln!("skipped: no user nobody");
            return;
        };
        let mut stage = Stage::new("bash", Some("nobody"), Duration::from_secs(1)).await;
        // The builds dir must be the user's to enter.
        std::fs::set_permissions(
            stage._dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::create_dir_all(&stage.job.builds_dir).expect("builds dir");
        let code = stage
            .run("echo \"user=$(id -un)\"\necho \"ids=$(id -u):$(id -g)\"\nshopt -q login_shell && echo login=yes || echo login=no\n")
            .await
            .expect("runs");
        let out = stage.output();
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("user=nobody\n"), "{out}");
        // What the job's stages write (caches, artifacts through the helper) is the user's own.
        assert!(
            out.contains(&format!(
                "ids={}:{}\n",
                nobody.uid.as_raw(),
                nobody.gid.as_raw()
            )),
            "{out}"
        );
        assert!(out.contains("login=yes\n"), "{out}");
        // The stages call the runner's own binary for that, by its absolute path.
        let exec = ShellExecutor::new(Some("bash"), Some("nobody"), PathBuf::new(), Duration::ZERO)
            .expect("bash");
        let own = std::env::current_exe().expect("current exe");
        assert_eq!(exec.helper_command(), own.to_string_lossy());
        assert!(own.is_absolute());
    }

    #[test]
    fn a_binary_below_a_closed_directory_is_closed_to_other_users() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("dir");
        let exe = bin.join("runwright");
        std::fs::write(&exe, "").expect("file");
        for (p, mode) in [
            (dir.path(), 0o755),
            (bin.as_path(), 0o755),
            (exe.as_path(), 0o755),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        // The temp dir's own parents (/tmp) are open; so is everything here.
        assert_eq!(closed_to_others(&exe), None);
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let why = closed_to_others(&exe).expect("closed");
        assert!(why.contains("is mode 750"), "{why}");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(closed_to_others(&exe).is_some());
    }
}
