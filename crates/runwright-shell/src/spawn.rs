//! Starting a stage's shell inside the job's cgroup, cheaply.
//!
//! A process must be in its cgroup before it runs anything of the job. Two obvious ways are slow on the test
//! machines (a VM; `bench/run`): `Command::pre_exec` makes std fork(2) the service instead of posix_spawn —
//! its page tables and the copy-on-write faults after it cost milliseconds per stage — and moving a process by
//! writing `cgroup.procs` takes the kernel's cgroup threadgroup lock for writing, an RCU grace period each
//! time (~11 ms measured here). So the child is made as glibc's posix_spawn makes it — on a stack of its own,
//! sharing the service's memory, the calling thread suspended until the child has exec'd (CLONE_VM |
//! CLONE_VFORK) — and with clone3's CLONE_INTO_CGROUP it is born in the job's cgroup (Linux 5.7; the kernel
//! then takes that lock for reading only). Where clone3 cannot do that (an older kernel, a seccomp filter, an
//! architecture without the few lines of assembly below) the child is made with clone(2) and joins by writing
//! `cgroup.procs` itself, before anything else. Either way it then runs only async-signal-safe system calls on
//! data prepared before the clone: handlers back to default, SIGPIPE to default and an empty signal mask (as
//! std leaves a child), a new process group, stdin/stdout/stderr, the working directory, execve.
//!
//! The child is waited for on a thread of its own (waitpid), and killed if its [`StageProcess`] is dropped
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
    /// The job's cgroup: its directory and its `cgroup.procs`, open.
    pub cgroup: Option<CgroupFds>,
}

/// Descriptors of a cgroup for [`spawn`]: the directory (clone3's CLONE_INTO_CGROUP) and `cgroup.procs`, open
/// for writing (joining by a write where clone3 cannot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupFds {
    pub dir: RawFd,
    pub procs: RawFd,
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
    let paths = std::env::var_os(runwright_static::env_vars::PATH)
        .unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
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
    // A source descriptor among 0–2 (a service started with its stdio closed) could be overwritten by an
    // earlier dup2 in the child: move such ones up first.
    let above_stdio = |fd: OwnedFd| -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        let raw = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
        // SAFETY: a descriptor fcntl just made, owned by nothing else.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    };
    let (stdin, stdout, stderr) = (
        above_stdio(spec.stdin)?,
        above_stdio(spec.stdout)?,
        above_stdio(spec.stderr)?,
    );
    let mut args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ptr(),
        fds: [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
        cgroup_procs: -1,
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
        let born_in_cgroup = match spec.cgroup {
            Some(cgroup) => clone3_into_cgroup(
                cgroup.dir,
                stack.as_mut_ptr(),
                STACK_SIZE,
                (&mut args as *mut ChildArgs).cast(),
            ),
            None => None,
        };
        let result = match born_in_cgroup {
            Some(r) => r,
            None => {
                args.cgroup_procs = spec.cgroup.map_or(-1, |c| c.procs);
                let pid = libc::clone(
                    child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    (&mut args as *mut ChildArgs).cast(),
                );
                if pid < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(pid)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result?
    };
    // Read after the child exec'd or exited: the parent thread was suspended until then.
    // SAFETY: a plain read of our own variable, which the child no longer touches.
    let error = unsafe { std::ptr::read_volatile(&args.error) };
    drop(stack);
    drop((stdin, stdout, stderr));
    if error != 0 {
        let _ = reap(pid);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(StageProcess::watch(pid))
}

/// clone3(2)'s argument (linux/sched.h `struct clone_args` up to `cgroup`, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// linux/sched.h (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Set once clone3 turned CLONE_INTO_CGROUP down for good (no clone3, a kernel before 5.7, a seccomp filter).
static CLONE3_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)` running `child(arg)` on `stack` in the cgroup whose
/// directory is open as `cgroup`; returns once the child has exec'd or exited. `None` when clone3 cannot do
/// that here (the caller falls back to clone(2) and a write to `cgroup.procs`).
///
/// # Safety
/// As for clone(2) with CLONE_VM: `child` may only make system calls on memory that stays valid until it has
/// exec'd, and the calling thread's signals should be blocked.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_into_cgroup(
    cgroup: RawFd,
    stack: *mut u8,
    stack_size: usize,
    arg: *mut c_void,
) -> Option<io::Result<i32>> {
    if CLONE3_UNSUPPORTED.load(Ordering::Relaxed) || cgroup < 0 {
        return None;
    }
    let args = CloneArgs {
        flags: libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    let ret: i64;
    // glibc sysdeps/unix/sysv/linux/x86_64/clone3.S: the child returns from the system call on its new stack
    // (the kernel sets rsp to stack + stack_size) with rax = 0, calls `child(arg)` — both kept in registers the
    // system call preserves — and exits with its result (`child` never returns: it execs or _exits).
    // SAFETY: the caller's contract (see `# Safety`): `child` and `arg` are valid for the child, which runs on
    // `stack` and only execs or exits; `args` outlives the system call.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") child as extern "C" fn(*mut c_void) -> c_int,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret >= 0 {
        return Some(Ok(ret as i32));
    }
    let errno = (-ret) as c_int;
    if matches!(
        errno,
        libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM
    ) {
        if !CLONE3_UNSUPPORTED.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "clone3 cannot start processes in a cgroup here ({}): stages join theirs by a write to \
                 cgroup.procs, which is slower",
                io::Error::from_raw_os_error(errno)
            );
        }
        return None;
    }
    Some(Err(io::Error::from_raw_os_error(errno)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_into_cgroup(
    _cgroup: RawFd,
    _stack: *mut u8,
    _stack_size: usize,
    _arg: *mut c_void,
) -> Option<io::Result<i32>> {
    None
}

/// Whether stages join their cgroup by a write (clone3 could not place them).
#[cfg(test)]
pub(crate) fn clone3_fell_back() -> bool {
    CLONE3_UNSUPPORTED.load(Ordering::Relaxed)
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
            cgroup: None,
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
