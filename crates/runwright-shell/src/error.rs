//! The crate's errors: [`ShellError`] for setting up the executor, [`CgroupError`] for the job cgroups
//! (`cgroup.rs`). Their texts reach the service's log, `runwright config check` and the job's trace
//! (`ERROR: Job failed (system failure): …`) as they are, permission hints included.

use crate::cgroup::permission_hint;
use std::io;
use std::path::PathBuf;

/// The shell executor cannot be set up for a runner entry.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// `shell` names a shell the executor does not drive.
    #[error("shell {shell:?} is not supported by the shell executor here (use bash or sh)")]
    UnsupportedShell {
        /// The shell as configured.
        shell: String,
    },
}

/// Job cgroups cannot be used, or one cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The job's process mark cannot be a directory name.
    #[error("the process mark {mark:?} cannot name a cgroup")]
    BadMark {
        /// The mark.
        mark: String,
    },
    /// The slot's cgroup could not be made.
    #[error("creating the slot cgroup {}: {source}", path.display())]
    SlotCgroup {
        /// The slot cgroup's directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `slot_cgroup_template` expands to no cgroup below the root.
    #[error("slot_cgroup_template {template:?} gives {expanded:?}, which names no cgroup below the hierarchy's root")]
    SlotTemplate {
        /// The template as configured.
        template: String,
        /// What it expanded to.
        expanded: String,
    },
    /// A file of `/proc/self` could not be read.
    #[error("reading {file}: {source}")]
    ReadProc {
        /// `/proc/self/mountinfo` or `/proc/self/cgroup`.
        file: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// No cgroup2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (a cgroup v1 host: boot with systemd.unified_cgroup_hierarchy=1, or mount cgroup2)")]
    NoHierarchy,
    /// The directory taken for the cgroup2 mount is another file system.
    #[error("{} is not a cgroup2 filesystem", mount.display())]
    NotCgroup2 {
        /// The directory.
        mount: PathBuf,
    },
    /// The mount could not be inspected.
    #[error("{}: {source}", mount.display())]
    Statfs {
        /// The directory.
        mount: PathBuf,
        /// What the OS said.
        #[source]
        source: nix::Error,
    },
    /// This process is in no cgroup v2.
    #[error("this process is in no cgroup v2 (no `0::` line in /proc/self/cgroup)")]
    NoOwnCgroup,
    /// This process's cgroup is not below the mount.
    #[error("the service's cgroup {own} is outside the cgroup2 mount at {} (which shows {root})", mount.display())]
    OutsideMount {
        /// The service's cgroup path.
        own: String,
        /// The cgroup2 mount.
        mount: PathBuf,
        /// The cgroup path the mount shows.
        root: String,
    },
    /// The probe's parent directory could not be made.
    #[error("cannot create {}: {source}{}", path.display(), permission_hint(source))]
    CreateParent {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A process could not be moved into the probe cgroup.
    #[error("cannot move a process into {}: {source}{}", path.display(), permission_hint(source))]
    MoveProbe {
        /// The probe cgroup.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A process moved into the probe cgroup is somewhere else.
    #[error("a process moved into {} says it is in {at:?}", path.display())]
    ProbeElsewhere {
        /// The probe cgroup.
        path: PathBuf,
        /// Where the process says it is.
        at: String,
    },
    /// The job's cgroup could not be made.
    #[error("creating the job's cgroup {}: {source}{}", path.display(), permission_hint(source))]
    CreateJob {
        /// The job's cgroup.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The job's cgroup could not be opened.
    #[error("opening {} and its cgroup.procs: {source}{}", path.display(), permission_hint(source))]
    Open {
        /// The job's cgroup.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}
