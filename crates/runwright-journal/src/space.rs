//! The free-space floor (issue 17): below it on the journal's file system, the journal stops writing traces —
//! the jobs go on, the service log says so once — and runs its retention at once instead of at the next job's
//! end.
//!
//! State owned: the floor, whether the file system was last seen below it (shared by every job of one
//! journal, so one job's finding stops the others' traces at their next write), and whether a retention pass
//! started by the floor is under way.
//!
//! How often: each job's trace asks every [`CHECK_EVERY`] bytes (`statvfs(2)`, about a microsecond), so the
//! floor can be undercut by at most that much per running job. Retention removes only what its limits
//! (`max_jobs`, `max_age`, `max_size_mb`) say; the floor never deletes history the operator asked to keep —
//! what fills the disk may not be the journal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::store::Retention;

/// The floor when `[journal] min_free_mb` is not set: 1 GiB, the room a build host needs for its jobs and
/// its own logs to go on once the journal has stopped …
pub const DEFAULT_MIN_FREE: u64 = 1024 * 1024 * 1024;
/// … but no more than this share of the file system (ext4's default reserve), so that a small disk is not
/// declared full while most of it is free.
pub const DEFAULT_MIN_FREE_PERCENT: u64 = 5;
/// How many trace bytes a job writes between two looks at the free space.
pub const CHECK_EVERY: u64 = 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// What a file system has: bytes available to unprivileged users (`f_bavail`: root's reserve does not count
/// as free) and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub available: u64,
    pub total: u64,
}

/// Where the free space comes from: `statvfs(2)`, or a fake in unit tests.
pub(crate) type Probe = Arc<dyn Fn(&Path) -> io::Result<Space> + Send + Sync>;

/// `statvfs(2)` of `dir`.
pub fn statvfs_space(dir: &Path) -> io::Result<Space> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    Ok(Space {
        available: (st.blocks_available() as u64).saturating_mul(frsize),
        total: (st.blocks() as u64).saturating_mul(frsize),
    })
}

/// The floor of one journal, shared by its jobs.
pub(crate) struct SpaceGuard {
    dir: PathBuf,
    /// `[journal] min_free_mb` in bytes; `None`: [`DEFAULT_MIN_FREE`] capped at [`DEFAULT_MIN_FREE_PERCENT`].
    min_free: Option<u64>,
    retention: Retention,
    probe: Probe,
    low: AtomicBool,
    retention_running: Arc<AtomicBool>,
}

impl std::fmt::Debug for SpaceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceGuard")
            .field("dir", &self.dir)
            .field("min_free", &self.min_free)
            .field("low", &self.low.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The floor in force for a file system of `total` bytes.
pub fn floor_for(min_free: Option<u64>, total: u64) -> u64 {
    min_free.unwrap_or_else(|| {
        DEFAULT_MIN_FREE
            .min((u128::from(total) * u128::from(DEFAULT_MIN_FREE_PERCENT) / 100) as u64)
    })
}

impl SpaceGuard {
    pub(crate) fn new(
        dir: PathBuf,
        min_free: Option<u64>,
        retention: Retention,
        probe: Probe,
    ) -> SpaceGuard {
        SpaceGuard {
            dir,
            min_free,
            retention,
            probe,
            low: AtomicBool::new(false),
            retention_running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether some job last found the file system below the floor.
    pub(crate) fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Looks at the free space now. Below the floor: the note for the job's trace (and, the first time, a
    /// warning in the service log and a retention pass). A file system that cannot be asked counts as free:
    /// the floor must not stop a journal that works.
    pub(crate) fn check(&self) -> Option<String> {
        let space = match (self.probe)(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), "journal: free space unknown: {e}");
                return None;
            }
        };
        let floor = floor_for(self.min_free, space.total);
        if space.available >= floor {
            if self.low.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    journal = %self.dir.display(),
                    free_mib = space.available / MIB,
                    "journal: free space is back above the floor; new jobs' traces are recorded again"
                );
            }
            return None;
        }
        let setting = match self.min_free {
            Some(_) => "[journal] min_free_mb".to_string(),
            None => format!(
                "the default floor of [journal] min_free_mb (1024, or {DEFAULT_MIN_FREE_PERCENT} % of the file system)"
            ),
        };
        if !self.low.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                journal = %self.dir.display(),
                free_mib = space.available / MIB,
                floor_mib = floor / MIB,
                "journal: its file system has {} MiB free, below {setting} = {} MiB: job traces are not recorded \
                 until space is freed (jobs go on); retention runs now",
                space.available / MIB,
                floor / MIB
            );
            self.run_retention();
        }
        Some(format!(
            "the journal stopped recording this job's output here: its file system has {} MiB free, below {setting} \
             = {} MiB (the job goes on; GitLab gets its log as usual)",
            space.available / MIB,
            floor / MIB
        ))
    }

    /// Retention on a thread of its own: the caller holds a job's trace lock.
    fn run_retention(&self) {
        if self.retention_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let dir = self.dir.clone();
        let retention = self.retention;
        let running = self.retention_running.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-retention".into())
            .spawn(move || {
                match crate::store::retention_pass(&dir, retention, crate::store::now_ms()) {
                    Ok(r) => tracing::info!(
                        removed = r.removed,
                        freed_bytes = r.freed_bytes,
                        kept = r.kept,
                        "journal retention (free space below the floor)"
                    ),
                    Err(e) => tracing::warn!("journal retention: {e}"),
                }
                running.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::warn!("journal retention: starting its thread: {e}");
            self.retention_running.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_floor_is_a_gib_or_five_percent_of_a_small_disk() {
        assert_eq!(floor_for(None, 1 << 40), DEFAULT_MIN_FREE);
        assert_eq!(floor_for(None, 10 * 1024 * MIB), 512 * MIB);
        assert_eq!(floor_for(Some(7), 1 << 40), 7);
    }

    #[test]
    fn statvfs_answers_for_a_real_directory() {
        let s = statvfs_space(Path::new("/")).expect("statvfs");
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
    }
}
