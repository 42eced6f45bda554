//! Issue 17 item 6: nothing of a shell job outlives it. The attacker is a job author whose jobs run as another
//! local user (`user = …`, through `su`, as GitLab's runner does): the job starts a process in a new session
//! with an empty environment (`setsid env -i`) and a daemon that double-forks away from its parent. Neither is
//! in the stage's process group nor carries `RUNWRIGHT_JOB_MARK`, so before job cgroups both outlived the job.
//! Now the job's cgroup takes them when the job succeeds, is canceled, times out, or its service crashed; where
//! cgroups cannot be used the service says so at start and the mark sweep still kills what kept the mark.

use crate::harness::*;
use runwright_coordinator::JobSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Root and a cgroup2 hierarchy, or a visible skip (CI runs as root on hosts like this one).
fn cgroups_here() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let v2 = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ")));
    if !(root && v2) {
        eprintln!("skipped: needs root and a cgroup2 hierarchy (root: {root}, cgroup2: {v2})");
    }
    root && v2
}

/// A local account made for one test (`useradd`), removed with everything it still runs when dropped.
struct LocalUser {
    name: String,
}

impl LocalUser {
    fn create() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "rwcg{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = std::process::Command::new("useradd")
            .args(["--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/bin/sh", "--user-group", &name])
            .output()
            .expect("useradd runs");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    fn uid(&self) -> Option<u32> {
        nix::unistd::User::from_name(&self.name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        // Whatever of this user survived a failing test goes before the account.
        let uid = self.uid();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = uid.map(pids_of_uid).unwrap_or_default();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // userdel refuses while the user still runs something; the loop above waited for that.
        match std::process::Command::new("userdel")
            .arg(&self.name)
            .output()
        {
            Ok(o) if o.status.success() => {}
            other => eprintln!("userdel {}: {other:?}", self.name),
        }
    }
}

fn pids_of_uid(uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

/// The script a job author runs to outlive the job: a sleeper in a session of its own with an empty
/// environment, and a daemon whose parent exits (double fork, own session, empty environment). Both write their
/// pids into `dir`; neither holds the job's output.
const ESCAPE: &str = r#"d=$1
setsid env -i sh -c "echo \$\$ > $d/escaped.pid; exec sleep 300" </dev/null >/dev/null 2>&1 &
setsid env -i sh -c "sleep 300 </dev/null >/dev/null 2>&1 & echo \$! > $d/daemon.pid" </dev/null >/dev/null 2>&1
while [ ! -s $d/escaped.pid ]; do sleep 0.05; done
echo escaped
"#;

/// A harness whose one shell runner runs jobs as a fresh local user, with a directory that user may write its
/// pid files to and the escape script.
async fn attacker_setup() -> Option<(Harness, LocalUser, PathBuf)> {
    if !cgroups_here() {
        return None;
    }
    let h = Harness::new().await;
    let user = LocalUser::create();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let builds = h.path().join("builds");
    let pids = h.path().join("pids");
    for d in [&builds, &pids] {
        std::fs::create_dir_all(d).expect("dir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    std::fs::write(h.path().join("escape.sh"), ESCAPE).expect("script");
    h.single_runner(
        &format!("user = \"{}\"", user.name),
        &format!("  builds_dir = \"{}\"", builds.display()),
    );
    Some((h, user, pids))
}

fn escape_line(h: &Harness, pids: &Path) -> String {
    format!(
        "sh {} {}",
        h.path().join("escape.sh").display(),
        pids.display()
    )
}

/// The escaped pids, each checked to be alive, outside the stage's group and without the mark; with the
/// cgroup (below the cgroup2 mount) the first one is in.
async fn escaped(pids: &Path) -> (Vec<i32>, String) {
    let escaped = read_pid(&pids.join("escaped.pid")).await;
    let daemon = read_pid(&pids.join("daemon.pid")).await;
    for pid in [escaped, daemon] {
        assert!(alive(pid), "{pid} is not running");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains("RUNWRIGHT_JOB_MARK"),
            "{pid} still carries the mark: the test would not show what it should"
        );
    }
    let at = std::fs::read_to_string(format!("/proc/{escaped}/cgroup")).unwrap_or_default();
    let cgroup = at
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string();
    (vec![escaped, daemon], cgroup)
}

/// The escaped processes were in the job's cgroup, and it is gone.
fn assert_job_cgroup_removed(cgroup: &str) {
    assert!(
        cgroup
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("runwright-job-")),
        "the escaped processes were in {cgroup:?}, not in a job cgroup"
    );
    assert!(
        !cgroup_dir(cgroup).exists(),
        "the job's cgroup {cgroup} was not removed"
    );
}

async fn assert_gone(pids: &[i32], what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "{survivors:?} outlived the job ({what}); log:\n{}",
        log()
    );
}

fn cgroup_dir(cgroup: &str) -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = info
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("cgroup2 mount");
    Path::new(mount).join(cgroup.trim_start_matches('/'))
}

#[tokio::test]
async fn a_job_authors_detached_processes_die_with_a_successful_job() {
    let Some((mut h, _user, pids)) = attacker_setup().await else {
        return;
    };
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "escapes",
        &[
            &escape_line(&h, &pids),
            // Time for the test to look at the escaped processes while the job still runs.
            &format!(
                "while [ ! -e {}/seen ]; do sleep 0.05; done",
                pids.display()
            ),
        ],
    ));
    let (escaped, cgroup) = escaped(&pids).await;
    std::fs::write(pids.join("seen"), "").expect("seen");
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());
    assert_gone(&escaped, "success", || h.log()).await;
    assert_job_cgroup_removed(&cgroup);
}

#[tokio::test]
async fn a_job_authors_detached_processes_die_with_a_canceled_job() {
    let Some((mut h, _user, pids)) = attacker_setup().await else {
        return;
    };
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "escapes-then-canceled",
        &[
            &escape_line(&h, &pids),
            "echo running; while true; do echo tick; sleep 0.3; done",
        ],
    ));
    let (escaped, cgroup) = escaped(&pids).await;
    h.wait_trace(id, "running\n").await;
    h.coordinator.cancel(id);
    let job = h.final_job(id).await;
    assert_eq!(job.state, "canceled", "{}", job.trace_text());
    assert_gone(&escaped, "cancel", || h.log()).await;
    assert_job_cgroup_removed(&cgroup);
}

#[tokio::test]
async fn a_job_authors_detached_processes_die_with_a_timed_out_job() {
    let Some((mut h, _user, pids)) = attacker_setup().await else {
        return;
    };
    h.start();
    let mut spec = JobSpec::shell(
        "escapes-then-times-out",
        &[&escape_line(&h, &pids), "sleep 120"],
    );
    spec.timeout = 6;
    let id = h.coordinator.enqueue(spec);
    let (escaped, cgroup) = escaped(&pids).await;
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed", "{}", job.trace_text());
    assert_eq!(job.failure_reason.as_deref(), Some("job_execution_timeout"));
    assert_gone(&escaped, "timeout", || h.log()).await;
    assert_job_cgroup_removed(&cgroup);
}

#[tokio::test]
async fn a_restarted_service_kills_the_cgroup_of_a_job_its_crashed_predecessor_ran() {
    let Some((mut h, _user, pids)) = attacker_setup().await else {
        return;
    };
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "escapes-then-the-service-dies",
        &[&escape_line(&h, &pids), "sleep 300"],
    ));
    let (escaped, cgroup) = escaped(&pids).await;
    h.wait_trace(id, "escaped\n").await;
    h.signal(nix::sys::signal::Signal::SIGKILL);
    h.wait_exit(Duration::from_secs(20)).await;
    assert!(
        escaped.iter().all(|p| alive(*p)),
        "the crash alone killed them"
    );

    h.start();
    let job = h.final_job(id).await;
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert_gone(&escaped, "recovery after a crash", || h.log()).await;
    assert_job_cgroup_removed(&cgroup);
}

#[tokio::test]
async fn slot_cgroups_hold_each_job_below_the_slot_gitlab_runner_names() {
    if !cgroups_here() {
        return;
    }
    let mut h = Harness::new().await;
    let base = format!("runwright-it-{}-slots", std::process::id());
    // Removed whatever the test's outcome.
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(self.0.join("slot-0"));
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let base_dir = cgroup_dir(&base);
    let _cleanup = Rmdir(base_dir.clone());
    h.single_runner(
        "",
        &format!("  use_slot_cgroups = true\n  slot_cgroup_template = \"{base}/slot-${{slot}}\""),
    );
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("in-a-slot", &["cat /proc/self/cgroup"]));
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "success", "{trace}");
    let prefix = format!("0::/{base}/slot-0/runwright-job-{id}-");
    assert!(trace.contains(&prefix), "{prefix} not in:\n{trace}");
    // The slot stays (an operator's limits live there); the job's own cgroup is gone.
    let slot = base_dir.join("slot-0");
    assert!(slot.is_dir(), "{}", slot.display());
    let left: Vec<String> = std::fs::read_dir(&slot)
        .expect("slot dir")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in the slot: {left:?}");
}

#[tokio::test]
async fn without_writable_cgroups_the_service_says_so_and_the_mark_sweep_still_works() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    // As on a host without a writable cgroup2 hierarchy.
    let missing = h.path().join("no-cgroup2-here");
    h.start_with(|cmd| {
        cmd.env("RUNWRIGHT_CGROUP_ROOT", &missing);
    });
    let pid_file = h.path().join("marked.pid");
    let id = h.coordinator.enqueue(JobSpec::shell(
        "marked-straggler",
        &[&format!(
            "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}",
            pid_file.display()
        )],
    ));
    let straggler = read_pid(&pid_file).await;
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());
    assert_gone(&[straggler], "mark sweep without cgroups", || h.log()).await;
    let log = h.log();
    let said = "job processes are not confined in cgroups";
    assert_eq!(log.matches(said).count(), 1, "{log}");
    assert!(log.contains(&missing.display().to_string()), "{log}");

    // `config check` says the same, and that it is what the service would find.
    let check = |env: Option<&Path>| {
        let mut cmd = h.command();
        if let Some(p) = env {
            cmd.env("RUNWRIGHT_CGROUP_ROOT", p);
        }
        let out = cmd
            .args(["config", "check", "-c"])
            .arg(&h.config_path)
            .output()
            .expect("runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check(Some(&missing));
    assert!(
        err.lines()
            .any(|l| l.starts_with("WARNING: runner \"test-runner\": ") && l.contains(said)),
        "{err}"
    );
    if cgroups_here() {
        let err = check(None);
        assert!(
            err.contains("runner \"test-runner\": each job runs in a cgroup of its own below "),
            "{err}"
        );
    }
}

#[tokio::test]
async fn slot_cgroups_that_cannot_be_made_fail_the_job_instead_of_running_it_unconfined() {
    let mut h = Harness::new().await;
    h.single_runner("", "  use_slot_cgroups = true");
    let missing = h.path().join("no-cgroup2-here");
    h.start_with(|cmd| {
        cmd.env("RUNWRIGHT_CGROUP_ROOT", &missing);
    });
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("needs-a-slot", &["echo should-not-run"]));
    let job = h.final_job(id).await;
    let trace = job.trace_text();
    assert_eq!(job.state, "failed", "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(!trace.contains("should-not-run\n"), "{trace}");
    assert!(
        trace.contains("use_slot_cgroups = true, but job cgroups cannot be made here"),
        "{trace}"
    );
    assert!(
        h.log()
            .contains("use_slot_cgroups = true, but job cgroups cannot be made"),
        "{}",
        h.log()
    );
}
