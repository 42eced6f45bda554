//! Stopping a stage's processes: the process group first, then anything that still carries the job's mark
//! (runner helpers/process/killer_unix.go: SIGTERM, then SIGKILL after a grace period).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// SIGTERM to the group, SIGKILL once the grace period is over or the leader is gone.
pub(crate) async fn terminate_group(
    pgid: i32,
    child: &mut crate::spawn::StageProcess,
    grace: Duration,
) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::info!(pgid, "stage ignored SIGTERM for {grace:?}: sending SIGKILL");
    }
    kill_group(pgid);
    let _ = child.wait().await;
}

pub fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Kills every process whose environment carries `var=mark`. Processes that changed their group or session
/// (`setsid`, `nohup … &`) are found this way. Returns how many were signalled.
pub fn sweep_marked(var: &str, mark: &str) -> usize {
    let needle = format!("{var}={mark}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut signalled = 0;
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            signalled += 1;
        }
    }
    signalled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{spawn, Spawn, StageProcess};
    use crate::test_util::{alive, needs, unique_mark, wait_dead};
    use std::io::BufRead;
    use std::os::fd::OwnedFd;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::time::Instant;

    /// Starts `sh -c script` in a process group of its own (as a stage is), and reads the first line it prints.
    fn start(script: &str) -> (StageProcess, String) {
        let (r, w) = std::io::pipe().expect("pipe");
        let w = OwnedFd::from(w);
        let process = spawn(Spawn {
            program: "sh",
            args: &["-c", script],
            env: &[],
            cwd: Path::new("/"),
            stdin: OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null")),
            stderr: w.try_clone().expect("dup"),
            stdout: w,
            cgroup: None,
        })
        .expect("sh starts");
        let mut line = String::new();
        std::io::BufReader::new(r)
            .read_line(&mut line)
            .expect("a line");
        (process, line.trim().to_string())
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_gets_sigkill_once_the_grace_is_over() {
        // The leader and a background child of its group both ignore SIGTERM (an ignored signal stays ignored
        // across fork and exec).
        let (mut process, child) = start("trap '' TERM; sleep 60 & echo $!; wait; wait");
        let child: i32 = child.parse().expect("the child's pid");
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        terminate_group(process.id(), &mut process, grace).await;
        assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
        let status = process.wait().await.expect("reaped");
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
        assert!(wait_dead(child), "{child} outlived its group");
    }

    #[tokio::test]
    async fn a_group_that_obeys_sigterm_ends_without_waiting_for_the_grace() {
        let (mut process, child) = start("sleep 60 & echo $!; wait");
        let child: i32 = child.parse().expect("the child's pid");
        let started = Instant::now();
        terminate_group(process.id(), &mut process, Duration::from_secs(30)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let status = process.wait().await.expect("reaped");
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
        assert!(wait_dead(child));
    }

    #[test]
    fn the_sweep_kills_every_process_with_the_mark_and_only_those() {
        if !needs("setsid") {
            return;
        }
        let var = "RUNWRIGHT_UNIT_MARK";
        let mark = unique_mark("sweep");
        let other = format!("{mark}0"); // The mark is a prefix of this one: not the same job.
        let sleeper = |mark: &str, detach: bool| {
            let mut cmd = std::process::Command::new(if detach { "setsid" } else { "sleep" });
            if detach {
                // In a session of its own: no process group reaches it, the mark does.
                cmd.arg("sleep");
            }
            cmd.arg("60").env(var, mark).spawn().expect("sleep starts")
        };
        let mut marked = [sleeper(&mark, false), sleeper(&mark, true)];
        let mut unmarked = sleeper(&other, false);
        let pids: Vec<i32> = marked.iter().map(|c| c.id() as i32).collect();
        // `setsid` execs `sleep`: wait until both are `sleep` (an environment read in the middle of an exec may
        // be empty).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3)
            && !pids.iter().all(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
            })
        {
            std::thread::sleep(Duration::from_millis(5));
        }

        assert_eq!(sweep_marked(var, &mark), 2);
        for child in &mut marked {
            let status = child.wait().expect("reaped");
            assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        }
        assert!(
            alive(unmarked.id() as i32),
            "an unmarked process was killed"
        );
        assert_eq!(sweep_marked(var, &mark), 0, "nothing is left to kill");
        let _ = unmarked.kill();
        let _ = unmarked.wait();
    }
}
