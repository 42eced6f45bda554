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
