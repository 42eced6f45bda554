//! Per-job cgroups (cgroup v2) of the shell executor, so that nothing a job starts outlives it. Each job's
//! stages run in a cgroup of its own, made before the first stage, killed as a whole at cancel, timeout and
//! cleanup (`cgroup.kill`; before Linux 5.14 freeze, SIGKILL every member, thaw) and then removed. `setsid`,
//! double forks and a cleared environment — all that defeats the process group and the mark sweep
//! (`kill.rs`) — do not leave a cgroup; only a write to cgroupfs does, which needs root or delegation.
//!
//! Placement follows gitlab-runner's names. By default a job's cgroup is a child of the service's own cgroup
//! (under systemd that is the unit's, which needs `Delegate=yes`). With `use_slot_cgroups = true` it is a
//! child of `slot_cgroup_template` expanded for the job's slot, `CI_CONCURRENT_ID` (runner common/config.go
//! `GetSlotCgroupPath`, `expandSlotTemplate`; default `gitlab-runner/slot-${slot}`); the slot cgroup is made
//! when missing and never removed, so limits an operator set on it hold for every job in that slot.
//!
//! This module owns the probe made when a runner entry starts ([`detect`]), the job cgroups ([`JobCgroup`]) and
//! the search for the cgroups of jobs a crashed service left running ([`kill_leftover`]).

use crate::CgroupError;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// runner common/config.go `DefaultSlotCgroupTemplate`.
pub const DEFAULT_SLOT_CGROUP_TEMPLATE: &str = "gitlab-runner/slot-${slot}";

/// A job's cgroup is `<parent>/runwright-job-<process mark>`: unique, and found again by a restarted service
/// from the mark its journal keeps.
const JOB_PREFIX: &str = "runwright-job-";

/// How long a killed cgroup may take to empty before it is left in place (a process in uninterruptible sleep).
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// The name of the cgroup of the job whose processes carry `mark`.
pub fn job_cgroup_name(mark: &str) -> String {
    format!("{JOB_PREFIX}{mark}")
}

/// What decides where a runner entry's job cgroups go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSettings {
    /// `use_slot_cgroups`.
    pub use_slot_cgroups: bool,
    /// `slot_cgroup_template` (empty or unset: gitlab-runner's default).
    pub slot_cgroup_template: Option<String>,
    /// Jobs run as this user through `su` (`run --user`): the probe checks that they stay in their cgroup.
    pub user: Option<String>,
}

/// What [`detect`] found for a runner entry.
#[derive(Debug, Clone)]
pub enum Confinement {
    /// Each job gets a cgroup; `warning` is something the operator should still know (said at start).
    Cgroups {
        placement: Arc<Placement>,
        warning: Option<String>,
    },
    /// cgroup v2 cannot be used here; jobs rely on the process group and the mark sweep. `required`: the
    /// entry asked for slot cgroups, so its jobs fail instead of running unconfined.
    Unavailable { reason: String, required: bool },
}

impl Confinement {
    /// One line for the service's log and `config check`.
    pub fn describe(&self) -> String {
        match self {
            Confinement::Cgroups { placement, .. } => format!(
                "each job runs in a cgroup of its own {}, killed with {} when the job ends",
                placement.describe(),
                if placement.kill_file {
                    "cgroup.kill"
                } else {
                    "cgroup.freeze and SIGKILL (no cgroup.kill before Linux 5.14)"
                }
            ),
            Confinement::Unavailable {
                reason,
                required: true,
            } => format!(
                "use_slot_cgroups = true, but job cgroups cannot be made: {reason}; jobs of this runner fail until that is fixed"
            ),
            Confinement::Unavailable { reason, .. } => format!(
                "job processes are not confined in cgroups: {reason}. Only the process group and the {} sweep stop them, so a process that leaves its group and clears its environment (setsid, env -i, a daemon) can outlive its job",
                crate::PROCESS_MARK_VAR
            ),
        }
    }
}

/// Where job cgroups are made, as checked when the runner entry started.
#[derive(Debug)]
pub struct Placement {
    parent: Parent,
    /// The kernel has `cgroup.kill` (Linux 5.14).
    kill_file: bool,
}

#[derive(Debug)]
enum Parent {
    /// The service's own cgroup (a directory).
    Own(PathBuf),
    /// `slot_cgroup_template` below the cgroup2 mount.
    Slots { mount: PathBuf, template: String },
}

impl Placement {
    /// Whether jobs must have their cgroup (slot cgroups were asked for) or may run without one.
    pub fn required(&self) -> bool {
        matches!(self.parent, Parent::Slots { .. })
    }

    fn parent_dir(&self, slot: usize) -> Result<PathBuf, CgroupError> {
        match &self.parent {
            Parent::Own(dir) => Ok(dir.clone()),
            Parent::Slots { mount, template } => Ok(mount.join(slot_path(template, slot)?)),
        }
    }

    fn describe(&self) -> String {
        match &self.parent {
            Parent::Own(dir) => format!("below {} (the service's own cgroup)", dir.display()),
            Parent::Slots { mount, template } => format!(
                "below {}/{} (slot_cgroup_template, ${{slot}} = CI_CONCURRENT_ID)",
                mount.display(),
                template.trim_start_matches('/')
            ),
        }
    }

    /// Makes the cgroup of the job marked `mark` running in `slot` (`CI_CONCURRENT_ID`).
    pub fn create(&self, slot: usize, mark: &str) -> Result<JobCgroup, CgroupError> {
        if mark.is_empty() || mark.contains(['/', '\0']) || mark.starts_with('.') {
            return Err(CgroupError::BadMark {
                mark: mark.to_string(),
            });
        }
        let parent = self.parent_dir(slot)?;
        if matches!(self.parent, Parent::Slots { .. }) {
            std::fs::create_dir_all(&parent).map_err(|source| CgroupError::SlotCgroup {
                path: parent.clone(),
                source,
            })?;
        }
        JobCgroup::create(&parent, &job_cgroup_name(mark), self.kill_file)
    }
}

/// `slot_cgroup_template` for `slot`, relative to the cgroup2 mount. The runner expands it with Go's
/// `os.Expand`, only `slot` known (common/config.go `expandSlotTemplate`); a systemd slice name
/// (`runner-slot-${slot}.slice`, the form GitLab documents for Docker's systemd cgroup driver) becomes the
/// path systemd gives that slice.
fn slot_path(template: &str, slot: usize) -> Result<PathBuf, CgroupError> {
    let slot_text = slot.to_string();
    // Go reads `$$` as the special parameter `$`, which the runner's mapping knows no more than any other name:
    // it expands to nothing (runwright's `expand` keeps a `$` for it, as job variables need).
    let expanded = runwright_engine::variables::expand(&template.replace("$$", ""), &|name| {
        (name == "slot").then(|| slot_text.clone())
    });
    let relative = systemd_slice_path(&expanded).unwrap_or_else(|| {
        expanded
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    });
    if relative.is_empty()
        || relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CgroupError::SlotTemplate {
            template: template.to_string(),
            expanded,
        });
    }
    Ok(PathBuf::from(relative))
}

/// systemd's cgroup path of a slice unit: `a-b-c.slice` is `a.slice/a-b.slice/a-b-c.slice` (systemd.slice(5);
/// what Docker's systemd cgroup driver does with a `--cgroup-parent` slice). `None` when `name` is no slice.
fn systemd_slice_path(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".slice")?;
    if name.contains('/') || stem.is_empty() || stem == "-" {
        return None;
    }
    let mut parts = Vec::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return None;
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        parts.push(format!("{prefix}.slice"));
    }
    Some(parts.join("/"))
}

/// The cgroup2 hierarchy as this process sees it.
struct Hierarchy {
    mount: PathBuf,
    /// This process's own cgroup, as a directory below `mount`.
    own: PathBuf,
}

/// The cgroup2 mount: `RUNWRIGHT_CGROUP_ROOT` when set, else the first `cgroup2` entry of
/// `/proc/self/mountinfo`; with the cgroup path the mount's root stands for.
fn mount() -> Result<(PathBuf, String), CgroupError> {
    use runwright_static::env_vars::RUNWRIGHT_CGROUP_ROOT;
    let (mount, root) = match std::env::var_os(RUNWRIGHT_CGROUP_ROOT).filter(|v| !v.is_empty()) {
        Some(dir) => (PathBuf::from(dir), "/".to_string()),
        None => {
            let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
                CgroupError::ReadProc {
                    file: "/proc/self/mountinfo",
                    source,
                }
            })?;
            cgroup2_mount(&info).ok_or(CgroupError::NoHierarchy)?
        }
    };
    match nix::sys::statfs::statfs(&mount) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
            Ok((mount, root))
        }
        Ok(_) => Err(CgroupError::NotCgroup2 { mount }),
        Err(source) => Err(CgroupError::Statfs { mount, source }),
    }
}

fn hierarchy() -> Result<Hierarchy, CgroupError> {
    let (mount, root) = mount()?;
    let cgroups =
        std::fs::read_to_string("/proc/self/cgroup").map_err(|source| CgroupError::ReadProc {
            file: "/proc/self/cgroup",
            source,
        })?;
    let own = own_cgroup(&cgroups).ok_or(CgroupError::NoOwnCgroup)?;
    let below_root = if root == "/" {
        Some(own.as_str())
    } else {
        own.strip_prefix(root.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let Some(rel) = below_root else {
        return Err(CgroupError::OutsideMount { own, mount, root });
    };
    Ok(Hierarchy {
        own: mount.join(rel.trim_start_matches('/')),
        mount,
    })
}

/// The cgroup2 mount point and the cgroup path it shows, from `/proc/self/mountinfo` (proc(5)).
fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        Some((
            PathBuf::from(unescape_mountinfo(fields.get(4)?)),
            unescape_mountinfo(fields.get(3)?),
        ))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the `0::` line).
fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// Checks once, when a runner entry starts, whether its jobs can have cgroups: finds the cgroup2 hierarchy,
/// makes a probe cgroup where job cgroups will go, moves a process into it the way stages are moved (and, with
/// `--user`, one started through `su` as jobs are) and removes it again.
pub fn detect(settings: &CgroupSettings) -> Confinement {
    let unavailable = |reason: String| Confinement::Unavailable {
        reason,
        required: settings.use_slot_cgroups,
    };
    let hierarchy = match hierarchy() {
        Ok(h) => h,
        Err(reason) => return unavailable(reason.to_string()),
    };
    let parent = if settings.use_slot_cgroups {
        let template = settings
            .slot_cgroup_template
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_SLOT_CGROUP_TEMPLATE);
        Parent::Slots {
            mount: hierarchy.mount,
            template: template.to_string(),
        }
    } else {
        Parent::Own(hierarchy.own)
    };
    let mut placement = Placement {
        parent,
        kill_file: false,
    };
    let slot0 = match placement.parent_dir(0) {
        Ok(dir) => dir,
        Err(reason) => return unavailable(reason.to_string()),
    };
    match probe(&slot0, settings.user.as_deref()) {
        Ok((kill_file, warning)) => {
            placement.kill_file = kill_file;
            Confinement::Cgroups {
                placement: Arc::new(placement),
                warning,
            }
        }
        Err(reason) => unavailable(reason.to_string()),
    }
}

/// What to do when a cgroup cannot be written.
pub(crate) fn permission_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::EACCES | nix::libc::EPERM) => {
            " (run the service as root, or under systemd with Delegate=yes in its unit so that its own cgroup is \
             delegated to it; `runwright install` writes that)"
        }
        Some(nix::libc::EROFS) => {
            " (the cgroup2 filesystem is mounted read-only, as in most containers: give the service a writable \
             one, e.g. a private cgroup namespace with /sys/fs/cgroup mounted read-write)"
        }
        _ => "",
    }
}

/// Returns whether `cgroup.kill` exists and a warning for jobs run through `su`.
fn probe(parent: &Path, user: Option<&str>) -> Result<(bool, Option<String>), CgroupError> {
    std::fs::create_dir_all(parent).map_err(|source| CgroupError::CreateParent {
        path: parent.to_path_buf(),
        source,
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("runwright-probe-{}-{nanos:08x}", std::process::id());
    let mut cgroup = JobCgroup::create(parent, &name, false)?;
    let kill_file = cgroup.dir.join("cgroup.kill").exists();
    cgroup.kill_file = kill_file;
    let landed = |cmd: &mut std::process::Command| -> io::Result<(bool, String)> {
        let fd = cgroup.procs_fd();
        // SAFETY: `join` makes one write(2) to a descriptor that stays open until `output` returns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || join(fd));
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let at = own_cgroup(&text).unwrap_or_default();
        Ok((out.status.success(), at))
    };
    let (_, at) =
        landed(std::process::Command::new("cat").arg("/proc/self/cgroup")).map_err(|source| {
            CgroupError::MoveProbe {
                path: cgroup.dir.clone(),
                source,
            }
        })?;
    if !at.ends_with(&format!("/{name}")) {
        return Err(CgroupError::ProbeElsewhere {
            path: cgroup.dir.clone(),
            at,
        });
    }
    // runner shells/bash.go: with a user, stages run through `su`, whose PAM session may have
    // systemd-logind move the process into a session scope of its own (pam_systemd).
    let mut warning = None;
    if let Some(user) = user.filter(|_| nix::unistd::geteuid().is_root()) {
        let mut su = std::process::Command::new("su");
        su.args(["-s", "/bin/sh", user, "-c", "cat /proc/self/cgroup"]);
        if let Ok((true, at)) = landed(&mut su) {
            if !at.ends_with(&format!("/{name}")) {
                warning = Some(format!(
                    "jobs run as {user} through su leave their cgroup: su's PAM session moved a probe into {at} \
                     (pam_systemd has systemd-logind make a session scope). Processes that keep their environment \
                     are still found by the {} sweep; to keep jobs in their cgroup, skip pam_systemd for {user} in \
                     /etc/pam.d/su (e.g. `session [success=1 default=ignore] pam_succeed_if.so quiet user = {user}` \
                     right before it)",
                    crate::PROCESS_MARK_VAR
                ));
            }
        }
    }
    cgroup.remove_blocking(EMPTY_WAIT);
    Ok((kill_file, warning))
}

/// Puts the calling process into the cgroup whose `cgroup.procs` is open as `fd`: run in a stage's child
/// between fork and exec, where only async-signal-safe calls are allowed (one write(2), no allocation).
pub(crate) fn join(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller keeps `fd` open until the child has exec'd (the descriptor is close-on-exec).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::unistd::write(fd, b"0")
        .map(drop)
        .map_err(io::Error::from)
}

/// A job's cgroup: made before its first stage, killed and removed when it ends (or when dropped).
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    /// The directory, open: stages are born in it (clone3 CLONE_INTO_CGROUP).
    dir_fd: OwnedFd,
    /// `cgroup.procs`, open for the stages' children to join by where clone3 cannot place them.
    procs: OwnedFd,
    kill_file: bool,
    removed: bool,
}

impl JobCgroup {
    pub(crate) fn create(parent: &Path, name: &str, kill_file: bool) -> Result<Self, CgroupError> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|source| CgroupError::CreateJob {
            path: dir.clone(),
            source,
        })?;
        // std opens with O_CLOEXEC: no stage inherits them.
        let opened = std::fs::File::open(&dir).and_then(|d| {
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            Ok((d, procs))
        });
        match opened {
            Ok((dir_file, procs)) => Ok(Self {
                dir,
                dir_fd: OwnedFd::from(dir_file),
                procs: OwnedFd::from(procs),
                kill_file,
                removed: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(CgroupError::Open {
                    path: dir,
                    source: e,
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// For [`join`] in a child.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// For [`crate::spawn::spawn`].
    pub(crate) fn fds(&self) -> crate::spawn::CgroupFds {
        crate::spawn::CgroupFds {
            dir: self.dir_fd.as_raw_fd(),
            procs: self.procs.as_raw_fd(),
        }
    }

    /// Kills every process in the cgroup and below it, wherever they moved in their session or process tree.
    /// The job goes on (after_script, cleanup stages), so this freezes and SIGKILLs the members instead of
    /// writing `cgroup.kill`: on Linux 6.14+ (kill_seq, "cgroup: fix race between fork and cgroup.kill") a
    /// process later cloned into a cgroup that was once `cgroup.kill`ed with `CLONE_INTO_CGROUP` is killed
    /// before it runs (seen on 6.18: the after_script of a canceled or timed-out job died with 137).
    /// Removal, when nothing more will start in the cgroup, still uses `cgroup.kill`.
    pub fn kill(&self) {
        if let Err(e) = kill_members(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), "killing the job's cgroup: {e}");
        }
    }

    /// Kills what is left and removes the cgroup once it is empty (waiting up to 5 s).
    pub async fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if populated(&self.dir) {
            self.kill();
            let start = Instant::now();
            while populated(&self.dir) && start.elapsed() < EMPTY_WAIT {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), "the job's cgroup is left in place: {e}");
        }
    }

    fn remove_blocking(&mut self, wait: Duration) {
        if self.removed {
            return;
        }
        self.removed = true;
        if let Err(e) = kill_and_remove_blocking(&self.dir, self.kill_file, wait) {
            tracing::warn!(cgroup = %self.dir.display(), "the cgroup is left in place: {e}");
        }
    }
}

impl Drop for JobCgroup {
    /// A session dropped without its cleanup (a panic on the way) still takes its processes with it.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.kill();
        if remove_tree(&self.dir).is_err() {
            let (dir, kill_file) = (self.dir.clone(), self.kill_file);
            std::thread::spawn(move || kill_and_remove_blocking(&dir, kill_file, EMPTY_WAIT));
        }
    }
}

fn kill_and_remove_blocking(dir: &Path, kill_file: bool, wait: Duration) -> io::Result<()> {
    if populated(dir) {
        kill_dir(dir, kill_file)?;
        let start = Instant::now();
        while populated(dir) && start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    remove_tree(dir)
}

/// Whether any process is in the cgroup or below it (`cgroup.events`). A cgroup that cannot be read counts as
/// empty: there is nothing more to wait for.
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// `cgroup.kill` where the kernel has it (it takes the descendants too and races no fork); else the freezer:
/// frozen members cannot fork, and SIGKILL still reaches them (Documentation/admin-guide/cgroup-v2.rst).
fn kill_dir(dir: &Path, kill_file: bool) -> io::Result<()> {
    if kill_file {
        match std::fs::write(dir.join("cgroup.kill"), "1") {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    kill_members(dir)
}

fn kill_members(dir: &Path) -> io::Result<()> {
    let cgroups: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    for cgroup in &cgroups {
        let _ = std::fs::write(cgroup.join("cgroup.freeze"), "1");
    }
    let start = Instant::now();
    loop {
        let mut any = false;
        for cgroup in &cgroups {
            let procs = match std::fs::read_to_string(cgroup.join("cgroup.procs")) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !any || start.elapsed() > EMPTY_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for cgroup in &cgroups {
        let _ = std::fs::write(cgroup.join("cgroup.freeze"), "0");
    }
    Ok(())
}

/// rmdir of the cgroup and any it holds (a root job may have made some), deepest first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .contents_first(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    if dirs.is_empty() {
        dirs.push(dir.to_path_buf());
    }
    for d in dirs {
        match std::fs::remove_dir(&d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Kills and removes the cgroup of the job marked `mark`, wherever in the hierarchy it is (a crashed service
/// may have had another placement): the restarted service's recovery. Returns how many were found.
pub fn kill_leftover(mark: &str) -> usize {
    let Ok((mount, _)) = mount() else {
        return 0;
    };
    let name = job_cgroup_name(mark);
    let found: Vec<PathBuf> = walkdir::WalkDir::new(&mount)
        .max_depth(16)
        .into_iter()
        .filter_entry(|e| e.file_type().is_dir())
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == name.as_str())
        .map(|e| e.into_path())
        .collect();
    for dir in &found {
        let kill_file = dir.join("cgroup.kill").exists();
        if let Err(e) = kill_and_remove_blocking(dir, kill_file, EMPTY_WAIT) {
            tracing::warn!(cgroup = %dir.display(), "a crashed job's cgroup: {e}");
        }
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{alive, wait_dead};

    #[test]
    fn slot_templates_expand_as_the_runner_does() {
        assert_eq!(
            slot_path(DEFAULT_SLOT_CGROUP_TEMPLATE, 5).unwrap(),
            PathBuf::from("gitlab-runner/slot-5")
        );
        assert_eq!(
            slot_path("/ci/$slot/x", 0).unwrap(),
            PathBuf::from("ci/0/x")
        );
        // Only `slot` is known to the runner's mapping: other names expand to nothing.
        assert_eq!(
            slot_path("ci/${other}slot-${slot}", 2).unwrap(),
            PathBuf::from("ci/slot-2")
        );
        assert_eq!(
            slot_path("ci/a$$b-$$$slot", 4).unwrap(),
            PathBuf::from("ci/ab-4")
        );
        assert_eq!(
            slot_path("runner-slot-${slot}.slice", 3).unwrap(),
            PathBuf::from("runner.slice/runner-slot.slice/runner-slot-3.slice")
        );
    }

    #[test]
    fn slot_templates_that_leave_the_hierarchy_are_refused() {
        for t in [
            "",
            "/",
            "../x/${slot}",
            "a/../../${slot}",
            "${nothing}",
            "a//b",
        ] {
            assert!(slot_path(t, 1).is_err(), "{t:?}");
        }
    }

    #[test]
    fn slice_names_become_systemd_paths() {
        assert_eq!(systemd_slice_path("a.slice").as_deref(), Some("a.slice"));
        assert_eq!(
            systemd_slice_path("a-b-c.slice").as_deref(),
            Some("a.slice/a-b.slice/a-b-c.slice")
        );
        assert_eq!(systemd_slice_path("-.slice"), None);
        assert_eq!(systemd_slice_path("a--b.slice"), None);
        assert_eq!(systemd_slice_path("x/a.slice"), None);
        assert_eq!(systemd_slice_path("gitlab-runner/slot-1"), None);
    }

    #[test]
    fn the_cgroup2_mount_and_own_cgroup_are_read_from_proc() {
        let info = "24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                    35 24 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                    36 24 0:31 /docker/abc /sys/fs/cgroup/unified\\040x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some((
                PathBuf::from("/sys/fs/cgroup/unified x"),
                "/docker/abc".to_string()
            ))
        );
        assert_eq!(
            cgroup2_mount("35 24 0:30 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(
            own_cgroup("4:memory:/m\n0::/system.slice/gitlab-runner.service\n").as_deref(),
            Some("/system.slice/gitlab-runner.service")
        );
        assert_eq!(own_cgroup("4:memory:/m\n"), None);
    }

    /// Root and a writable cgroup2 hierarchy, or a visible skip.
    #[allow(clippy::print_stderr)]
    fn writable_hierarchy() -> Option<Hierarchy> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        match hierarchy() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("skipped: no cgroup2 hierarchy: {e}");
                None
            }
        }
    }

    fn spawn_detached_sleeper(cgroup: &JobCgroup) -> i32 {
        // A shell that detaches a sleeper into its own session with an empty environment, then exits: the
        // sleeper is an orphan no process group or mark reaches.
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "setsid env -i sh -c 'echo $$; exec sleep 300 >/dev/null 2>&1 </dev/null' &",
        ]);
        let fd = cgroup.procs_fd();
        // SAFETY: `join` makes one write(2) to a descriptor that stays open until `output` returns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || join(fd));
        }
        let out = cmd.output().expect("sh runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid")
    }

    #[test]
    fn killing_a_job_cgroup_takes_detached_orphans_with_it_with_and_without_cgroup_kill() {
        let Some(h) = writable_hierarchy() else {
            return;
        };
        for kill_file in [true, false] {
            let name = format!("runwright-unit-{}-{kill_file}", std::process::id());
            let mut cgroup = JobCgroup::create(&h.own, &name, kill_file).expect("cgroup");
            let pid = spawn_detached_sleeper(&cgroup);
            assert!(alive(pid));
            assert!(populated(cgroup.dir()));
            cgroup.remove_blocking(EMPTY_WAIT);
            assert!(wait_dead(pid), "kill_file={kill_file}: {pid} survived");
            assert!(!cgroup.dir().exists(), "kill_file={kill_file}: not removed");
        }
    }

    #[tokio::test]
    async fn a_stage_process_starts_inside_the_job_cgroup() {
        let Some(h) = writable_hierarchy() else {
            return;
        };
        let name = format!("runwright-unit-spawn-{}", std::process::id());
        let mut cgroup = JobCgroup::create(&h.own, &name, true).expect("cgroup");
        let (r, w) = std::io::pipe().expect("pipe");
        let w = OwnedFd::from(w);
        let mut child = crate::spawn::spawn(crate::spawn::Spawn {
            program: "cat",
            args: &["/proc/self/cgroup"],
            env: &[],
            cwd: Path::new("/"),
            stdin: OwnedFd::from(std::fs::File::open("/dev/null").expect("null")),
            stderr: w.try_clone().expect("dup"),
            stdout: w,
            cgroup: Some(cgroup.fds()),
        })
        .expect("spawns");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(OwnedFd::from(r)), &mut out)
            .expect("read");
        assert!(child.wait().await.expect("exit").success());
        assert!(
            own_cgroup(&out).is_some_and(|c| c.ends_with(&format!("/{name}"))),
            "{out}"
        );
        // Born there (clone3 CLONE_INTO_CGROUP, Linux 5.7), not moved: a move costs an RCU grace period.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut version = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
        if cfg!(target_arch = "x86_64") && (major, minor) >= (5, 7) {
            assert!(
                !crate::spawn::clone3_fell_back(),
                "clone3 could not place the process on Linux {}",
                release.trim()
            );
        }
        cgroup.remove().await;
        assert!(!cgroup.dir().exists());
    }

    #[test]
    fn a_dropped_job_cgroup_kills_and_goes() {
        let Some(h) = writable_hierarchy() else {
            return;
        };
        let name = format!("runwright-unit-drop-{}", std::process::id());
        let cgroup = JobCgroup::create(&h.own, &name, true).expect("cgroup");
        let dir = cgroup.dir().to_path_buf();
        let pid = spawn_detached_sleeper(&cgroup);
        drop(cgroup);
        assert!(wait_dead(pid));
        let start = Instant::now();
        while dir.exists() && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!dir.exists());
    }
}
