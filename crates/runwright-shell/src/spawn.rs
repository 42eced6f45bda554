//! Starting a stage's shell, already inside the job's cgroup, without fork(2).
//!
//! A process must join its cgroup before it runs anything of the job, so the move happens in the child between
//! clone and exec. `Command::pre_exec` would do that, but makes std fork(2) the service instead of using
//! posix_spawn: copying the page tables of a service with tens of MiB mapped and the copy-on-write faults
//! after it cost ~6 ms per stage on the test machines (25–50 ms per job, measured with `bench/run`). Here the
//! child is made as glibc's posix_spawn makes it — `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, the
//! calling thread suspended until the child has exec'd — and runs only async-signal-safe system calls on data
//! prepared before the clone: handlers back to default, SIGPIPE to default and an empty signal mask (as std
//! leaves a child), join the cgroup, a new process group, stdin/stdout/stderr, the working directory, execve.
//!
//! The child is waited for on a blocking thread (waitpid), and killed if its [`StageProcess`] is dropped
//! before it was reaped, as tokio's `kill_on_drop`.

use nix::libc::{self, c_char, c_int, c_void};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What one stage process is started with.
pub(crate) struct Spawn<'a> {
    /// Looked up in `PATH` when it has no `/`.
    pub program: &'a str,
    pub args: &'a [&'a str],
    /// Added to (or replacing in) the service's environment.
    pub env: &'a [(&'a str, &'a str)],
    pub cwd: &'a Path,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// `cgroup.procs` of the job's cgroup, open for writing.
    pub cgroup_procs: Option<RawFd>,
}

/// What the child reads; all of it lives in the parent's frame, which the clone suspends.
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    fds: [c_int; 3],
    cgroup_procs: c_int,
    /// errno of the step that failed, written by the child before it exits (shared memory).
    error: c_int,
}

const STACK_SIZE: usize = 128 * 1024;

/// The child: only system calls, no allocation, no lock, no unwinding.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn`, alive while the parent thread is suspended (CLONE_VFORK).
    let a = unsafe { &mut *(arg as *mut ChildArgs) };
    // SAFETY: every call gets pointers prepared by the parent, valid until exec or exit.
    unsafe {
        let fail = |a: &mut ChildArgs| -> c_int {
            a.error = *libc::__errno_location();
            if a.error == 0 {
                a.error = libc::EIO;
            }
            libc::_exit(127)
        };
        // The handlers are the parent's code on the parent's memory: none may run here, nor be inherited as
        // "caught" by exec (which resets them anyway). Ignored signals stay ignored except SIGPIPE, which the
        // Rust runtime ignores and std resets for its children.
        let mut query: libc::sigaction = std::mem::zeroed();
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(sig, std::ptr::null(), &mut query) == 0
                && query.sa_sigaction != libc::SIG_IGN
                && query.sa_sigaction != libc::SIG_DFL
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if a.cgroup_procs >= 0 && libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            return fail(a);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(a);
        }
        for (target, fd) in a.fds.iter().enumerate() {
            let target = target as c_int;
            let ok = if *fd == target {
                libc::fcntl(target, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(*fd, target) == target
            };
            if !ok {
                return fail(a);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            return fail(a);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a)
    }
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// `program` as execvp(3) finds it.
fn resolve(program: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let paths = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| {
            nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{program} is not in PATH")))
}

/// Starts the process (see the module's doc). The descriptors in `spec` are closed in the parent once the
/// child has them.
pub(crate) fn spawn(spec: Spawn<'_>) -> io::Result<StageProcess> {
    let path = resolve(spec.program)?;
    let path = cstring(path.as_os_str().as_bytes(), "the program's path")?;
    let mut argv = vec![cstring(spec.program.as_bytes(), "an argument")?];
    for a in spec.args {
        argv.push(cstring(a.as_bytes(), "an argument")?);
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !spec.env.iter().any(|(name, _)| OsStr::new(name) == k))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv, "an environment variable")?);
    }
    let cwd = cstring(spec.cwd.as_os_str().as_bytes(), "the working directory")?;
    let argv_ptrs: Vec<*const c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ptr(),
        fds: [
            spec.stdin.as_raw_fd(),
            spec.stdout.as_raw_fd(),
            spec.stderr.as_raw_fd(),
        ],
        cgroup_procs: spec.cgroup_procs.unwrap_or(-1),
        error: 0,
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every architecture Linux runs this on; 16-byte aligned top.
    let top = ((stack.as_mut_ptr() as usize + STACK_SIZE) & !15) as *mut c_void;

    // SAFETY: the child runs `child` on its own stack and only reads `args` (and writes `args.error`) while
    // this thread is suspended; signals are blocked around the clone so that no handler of ours runs in the
    // child before it has reset them (glibc spawni does the same).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut ChildArgs).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // Read after the child exec'd or exited: the parent thread was suspended until then.
    // SAFETY: a plain read of our own variable, which the child no longer touches.
    let error = unsafe { std::ptr::read_volatile(&args.error) };
    drop(stack);
    if error != 0 {
        let _ = reap(pid);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(StageProcess::watch(pid))
}

/// waitpid(2) until the child is gone; its raw wait status.
fn reap(pid: i32) -> io::Result<i32> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// A started stage process: its pid (the leader of its process group) and its exit, reaped on a blocking
/// thread.
pub(crate) struct StageProcess {
    pid: i32,
    exit: Option<tokio::sync::oneshot::Receiver<io::Result<i32>>>,
    status: Option<std::process::ExitStatus>,
    reaped: Arc<AtomicBool>,
}

impl StageProcess {
    fn watch(pid: i32) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reaped = Arc::new(AtomicBool::new(false));
        let flag = reaped.clone();
        // A plain thread, not tokio's blocking pool: a runtime shutting down would wait for it.
        let waiter = std::thread::Builder::new()
            .name(format!("stage-{pid}"))
            .spawn(move || {
                let status = reap(pid);
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(status);
            });
        if let Err(e) = waiter {
            // Nothing could wait for it: the stage ends here (its `wait` fails) and leaves no zombie.
            tracing::error!("starting the waiter of process {pid}: {e}; killing it");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = reap(pid);
            reaped.store(true, Ordering::SeqCst);
        }
        Self {
            pid,
            exit: Some(rx),
            status: None,
            reaped,
        }
    }

    pub(crate) fn id(&self) -> i32 {
        self.pid
    }

    /// Its exit status; cancel-safe (a later call returns the same status).
    pub(crate) async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.status {
            return Ok(status);
        }
        let Some(rx) = self.exit.as_mut() else {
            return Err(io::Error::other("the stage process is no longer watched"));
        };
        let raw = rx
            .await
            .map_err(|_| io::Error::other("the stage process's waiter ended"))??;
        self.exit = None;
        let status = std::process::ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for StageProcess {
    /// As tokio's `kill_on_drop`: a stage abandoned while running does not run on; the waiter reaps it.
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().expect("pipe");
        (OwnedFd::from(r), OwnedFd::from(w))
    }

    fn null() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"))
    }

    async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (io::Result<i32>, String) {
        let (r, w) = pipe();
        let w2 = w.try_clone().expect("dup");
        let result = spawn(Spawn {
            program,
            args,
            env,
            cwd: Path::new("/"),
            stdin: null(),
            stdout: w,
            stderr: w2,
            cgroup_procs: None,
        });
        let mut out = String::new();
        let code = match result {
            Ok(mut p) => {
                use std::io::Read;
                let mut f = std::fs::File::from(r);
                let _ = f.read_to_string(&mut out);
                p.wait().await.map(|s| s.code().unwrap_or(-1))
            }
            Err(e) => Err(e),
        };
        (code, out)
    }

    #[tokio::test]
    async fn a_spawned_process_gets_its_arguments_environment_directory_and_own_group() {
        let (code, out) = run(
            "sh",
            &[
                "-c",
                "echo \"$1 $RW_TEST_VAR $(pwd)\"; [ $(ps -o pgid= $$) -eq $$ ] && exit 3",
                "x",
                "arg",
            ],
            &[("RW_TEST_VAR", "value")],
        )
        .await;
        assert_eq!(code.expect("runs"), 3, "{out}");
        assert_eq!(out, "arg value /\n");
    }

    #[tokio::test]
    async fn sigpipe_is_default_and_no_signal_is_blocked_in_the_child() {
        let (code, out) = run(
            "sh",
            &["-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"],
            &[],
        )
        .await;
        assert_eq!(code.expect("runs"), 0);
        let blocked = out
            .lines()
            .find(|l| l.starts_with("SigBlk"))
            .expect("SigBlk");
        assert!(blocked.ends_with("0000000000000000"), "{out}");
        // SIGPIPE is signal 13: bit 12 of SigIgn.
        let ignored = out
            .lines()
            .find(|l| l.starts_with("SigIgn"))
            .expect("SigIgn");
        let mask =
            u64::from_str_radix(ignored.trim_start_matches("SigIgn:").trim(), 16).expect("hex");
        assert_eq!(mask & (1 << 12), 0, "{out}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error_and_leaves_no_process() {
        let (code, _) = run("runwright-no-such-program", &[], &[]).await;
        assert_eq!(code.expect_err("fails").kind(), io::ErrorKind::NotFound);
        let (code, _) = run("/proc/self/status", &[], &[]).await;
        assert_eq!(code.expect_err("fails").raw_os_error(), Some(libc::EACCES));
    }
}
