//! The journal directory: creating job records, listing them, the service's lock, and retention.
//!
//! Layout: `<dir>/jobs/<received ms>-<job id>-<runner short token>/{meta.json,trace.log,job-token}`. The name
//! sorts by arrival and stays unique across GitLab instances (job ids repeat between them) and across
//! `runwright exec` runs (whose job ids start again at 1).

use crate::error::JournalError;
use crate::meta::{JobMeta, META_VERSION};
use crate::recorder::JobRecorder;
use crate::space::{statvfs_space, Probe, SpaceGuard};
use crate::tracefile::{trace_cap, Cap, TraceWriter};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const TRACE_FILE: &str = "trace.log";
pub(crate) const TOKEN_FILE: &str = "job-token";
const JOBS_DIR: &str = "jobs";
const LOCK_FILE: &str = "service.lock";

/// Retention defaults: the newest 1000 jobs, none older than 30 days, 5 GiB in all.
pub const DEFAULT_MAX_JOBS: usize = 1000;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_MAX_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// What the journal keeps; whichever limit is hit first removes the oldest finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_jobs: usize,
    pub max_age: Duration,
    pub max_size: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_jobs: DEFAULT_MAX_JOBS,
            max_age: DEFAULT_MAX_AGE,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept: usize,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one job's trace may take (issue 17): `[journal] max_trace_mb` and `min_free_mb`, in bytes; `None`
/// for the defaults (`tracefile::default_trace_cap`, `space::DEFAULT_MIN_FREE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceLimits {
    pub max_trace: Option<u64>,
    pub min_free: Option<u64>,
}

/// A journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    retention: Retention,
    limits: TraceLimits,
    /// The free-space floor, shared by every job (and every clone) of this journal.
    space: Arc<SpaceGuard>,
}

/// One recorded job as found on disk.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub dir: PathBuf,
    pub meta: JobMeta,
}

impl JobEntry {
    /// The job's directory name: its key in the journal, unique where job ids are not.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn trace_path(&self) -> PathBuf {
        self.dir.join(TRACE_FILE)
    }

    /// The job token kept for finalising the job after a crash, if it is still there.
    pub fn job_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    /// Re-reads the metadata (a running job's changes).
    pub fn reload(&self) -> Result<JobEntry, JournalError> {
        Ok(JobEntry {
            dir: self.dir.clone(),
            meta: read_meta(&self.dir)?,
        })
    }

    /// Bytes the job takes on disk.
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }

    /// A recorder to append to this job's trace and update its metadata (recovery after a crash), under the
    /// trace cap the job started with and `journal`'s free-space floor.
    pub fn reopen(&self, journal: &Journal) -> Result<JobRecorder, JournalError> {
        let cap = (self.meta.trace_cap > 0)
            .then(|| Cap::new(self.meta.trace_cap, self.meta.output_limit as u64));
        let trace = TraceWriter::reopen(&self.dir, cap, journal.space.clone())
            .map_err(|e| JournalError::io("reopening the trace in", &self.dir, e))?;
        Ok(JobRecorder::new(self.dir.clone(), self.meta.clone(), trace))
    }
}

/// Held by the service for as long as it runs: while another process holds it, jobs marked running in this
/// journal are that process's, not crashed ones. The kernel releases it when the holder dies, SIGKILL included.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

impl Journal {
    /// Opens (creating it 0700 when missing) the journal at `dir`.
    pub fn open(dir: impl Into<PathBuf>, retention: Retention) -> Result<Journal, JournalError> {
        let dir = dir.into();
        let jobs = dir.join(JOBS_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&jobs)
            .map_err(|e| JournalError::io("creating the journal directory", &jobs, e))?;
        // `mode` only applies to directories it creates; an existing journal is tightened too. One that belongs
        // to another user is refused: its owner could read every trace and swap the records (issue 17).
        for d in [&dir, &jobs] {
            let meta =
                std::fs::metadata(d).map_err(|e| JournalError::io("reading", d.as_path(), e))?;
            if !meta.is_dir() {
                return Err(JournalError::NotADirectory { path: d.clone() });
            }
            if std::os::unix::fs::MetadataExt::uid(&meta) != crate::trusted::euid() {
                return Err(JournalError::io(
                    "using",
                    d.as_path(),
                    std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "it belongs to uid {}, not to this service's user (uid {}): another user could read and change the journal; remove it or give it to the service's user",
                            std::os::unix::fs::MetadataExt::uid(&meta),
                            crate::trusted::euid()
                        ),
                    ),
                ));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| JournalError::io("restricting permissions of", d.as_path(), e))?;
            }
        }
        Ok(Journal::new(dir, retention))
    }

    fn new(dir: PathBuf, retention: Retention) -> Journal {
        let limits = TraceLimits::default();
        let space = Arc::new(SpaceGuard::new(
            dir.clone(),
            limits.min_free,
            retention,
            Arc::new(statvfs_space),
        ));
        Journal {
            dir,
            retention,
            limits,
            space,
        }
    }

    /// The journal with `limits` on every job's trace from now on.
    pub fn with_trace_limits(self, limits: TraceLimits) -> Journal {
        self.with_space_probe(limits, Arc::new(statvfs_space))
    }

    /// [`Journal::with_trace_limits`] with the free space read from `probe` (unit tests).
    pub(crate) fn with_space_probe(mut self, limits: TraceLimits, probe: Probe) -> Journal {
        self.limits = limits;
        self.space = Arc::new(SpaceGuard::new(
            self.dir.clone(),
            limits.min_free,
            self.retention,
            probe,
        ));
        self
    }

    pub fn trace_limits(&self) -> TraceLimits {
        self.limits
    }

    /// Opens an existing journal for reading, without creating anything.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Journal, JournalError> {
        let dir = dir.into();
        let jobs = dir.join(JOBS_DIR);
        std::fs::read_dir(&jobs).map_err(|e| JournalError::io("reading the journal", &jobs, e))?;
        Ok(Journal::new(dir, Retention::default()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Takes the service lock; `Ok(None)` when another live process holds it. The lock file is never followed
    /// through a symbolic link and must be this user's and writable by nobody else (`trusted`).
    pub fn try_lock(&self) -> Result<Option<JournalLock>, JournalError> {
        let path = self.dir.join(LOCK_FILE);
        let file = crate::trusted::open(
            &path,
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600),
            &[crate::trusted::euid()],
        )
        .map_err(|e| JournalError::io("opening", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(JournalLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(JournalError::io("locking", &path, e)),
        }
    }

    /// Starts the record of a job: its directory, `meta.json` (synced), an empty `trace.log`, and — for a
    /// GitLab job — `job-token`, which lets a restarted service finalise it.
    pub fn begin(&self, mut meta: JobMeta, job_token: &str) -> Result<JobRecorder, JournalError> {
        meta.version = META_VERSION;
        meta.trace_cap = trace_cap(self.limits.max_trace, meta.output_limit as u64);
        let base = format!(
            "{:013}-{}-{}",
            meta.received_at_ms.max(0),
            meta.job_id,
            sanitize(&meta.runner.short_token)
        );
        let jobs = self.dir.join(JOBS_DIR);
        let mut dir = jobs.join(&base);
        let mut n = 1;
        loop {
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                    n += 1;
                    dir = jobs.join(format!("{base}.{n}"));
                }
                Err(e) => return Err(JournalError::io("creating the job's directory", &dir, e)),
            }
        }
        if !meta.local && !job_token.is_empty() {
            let path = dir.join(TOKEN_FILE);
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| JournalError::io("creating", &path, e))?;
            f.write_all(job_token.as_bytes())
                .map_err(|e| JournalError::io("writing", &path, e))?;
        }
        let cap = Cap::new(meta.trace_cap, meta.output_limit as u64);
        let trace = TraceWriter::create(&dir, Some(cap), self.space.clone())
            .map_err(|e| JournalError::io("creating the trace in", &dir, e))?;
        write_meta(&dir, &meta, true)?;
        Ok(JobRecorder::new(dir, meta, trace))
    }

    /// Every readable job, oldest first. Unreadable entries are logged and skipped.
    pub fn list(&self) -> Result<Vec<JobEntry>, JournalError> {
        let jobs = self.dir.join(JOBS_DIR);
        let rd = std::fs::read_dir(&jobs).map_err(|e| JournalError::io("reading", &jobs, e))?;
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            match read_meta(&dir) {
                Ok(meta) if meta.version <= META_VERSION => out.push(JobEntry { dir, meta }),
                Ok(_) => {
                    tracing::debug!(dir = %dir.display(), "journal entry of a newer version: skipped")
                }
                // A directory whose metadata was never written (crash between mkdir and the first write).
                Err(e) => tracing::debug!("{e}"),
            }
        }
        Ok(out)
    }

    /// The job whose directory is `name` ([`JobEntry::name`]); `Ok(None)` for a name that is not one of the
    /// journal's jobs, including anything that would leave `jobs/` (a `/`, `..`).
    pub fn get(&self, name: &str) -> Result<Option<JobEntry>, JournalError> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid {
            return Ok(None);
        }
        let dir = self.dir.join(JOBS_DIR).join(name);
        if !dir.join(META_FILE).is_file() {
            return Ok(None);
        }
        let meta = read_meta(&dir)?;
        Ok((meta.version <= META_VERSION).then_some(JobEntry { dir, meta }))
    }

    /// Jobs of `job_id`, oldest first (ids repeat across GitLab instances and local runs).
    pub fn find(&self, job_id: i64) -> Result<Vec<JobEntry>, JournalError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|e| e.meta.job_id == job_id)
            .collect())
    }

    /// GitLab jobs a crashed service left unfinished: running, or finished but not reported.
    /// Only meaningful while holding [`Journal::try_lock`].
    pub fn unfinished(&self) -> Result<Vec<JobEntry>, JournalError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|e| !e.meta.local && !e.meta.reported)
            .collect())
    }

    /// Removes the oldest jobs beyond the limits. Running and not yet reported jobs are never removed; a
    /// running job counts towards the size all the same.
    pub fn enforce_retention(&self) -> Result<RetentionReport, JournalError> {
        self.enforce_retention_at(now_ms())
    }

    /// [`Journal::enforce_retention`] unless some process (this one or another on the same journal) did it less
    /// than `every` ago; `Ok(None)` then. Retention reads every job's record, and `runwright exec` runs last
    /// seconds: without this each pipeline would scan the whole journal.
    pub fn enforce_retention_every(
        &self,
        every: Duration,
    ) -> Result<Option<RetentionReport>, JournalError> {
        // The stamp's mtime says when retention last ran; 0600 like every file of the journal.
        let stamp = self.dir.join(RETENTION_STAMP);
        let recent = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < every);
        if recent {
            return Ok(None);
        }
        if let Err(e) = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&stamp)
            .and_then(|mut f| f.write_all(b"retention\n"))
        {
            tracing::debug!("journal retention stamp {}: {e}", stamp.display());
        }
        self.enforce_retention().map(Some)
    }

    pub(crate) fn enforce_retention_at(&self, now: i64) -> Result<RetentionReport, JournalError> {
        retention_pass(&self.dir, self.retention, now)
    }
}

/// One retention pass over the journal at `dir` (see [`Journal::enforce_retention`]).
pub(crate) fn retention_pass(
    dir: &Path,
    r: Retention,
    now: i64,
) -> Result<RetentionReport, JournalError> {
    {
        let entries = Journal::new(dir.to_path_buf(), r).list()?;
        let sized: Vec<(JobEntry, u64)> = entries
            .into_iter()
            .map(|e| {
                let s = e.size();
                (e, s)
            })
            .collect();
        let mut total: u64 = sized.iter().map(|(_, s)| s).sum();
        let mut count = sized.len();
        let max_age_ms = i64::try_from(r.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut report = RetentionReport::default();
        // Oldest first: drop while any limit is exceeded.
        for (e, size) in &sized {
            let removable = e.meta.state.is_final() && (e.meta.reported || e.meta.local);
            let when = e.meta.finished_at_ms.unwrap_or(e.meta.received_at_ms);
            let too_old = now.saturating_sub(when) > max_age_ms;
            let over = count > r.max_jobs || total > r.max_size || too_old;
            if !(removable && over) {
                continue;
            }
            match std::fs::remove_dir_all(&e.dir) {
                Ok(()) => {
                    report.removed += 1;
                    report.freed_bytes += size;
                    total -= size;
                    count -= 1;
                }
                Err(err) => {
                    tracing::warn!("journal retention: removing {}: {err}", e.dir.display())
                }
            }
        }
        report.kept = count;
        Ok(report)
    }
}

fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(32)
        .collect();
    if out.is_empty() {
        "local".into()
    } else {
        out
    }
}

pub(crate) fn read_meta(dir: &Path) -> Result<JobMeta, JournalError> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| JournalError::io("reading", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| JournalError::Meta { path, source })
}

/// Where `meta.json` is written before it takes its place; afterwards, the previous version (see [`replace`]).
const META_SPARE: &str = ".meta.json.tmp";
/// In the journal's directory: touched by each retention scan.
const RETENTION_STAMP: &str = ".retention";

/// A job that is over (and reported) is not rewritten again: the previous version of its metadata goes.
fn remove_meta_spare(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(META_SPARE));
}

/// Writes `meta.json` whole through the spare file and an exchange (or rename), so readers see the old or the
/// new version.
pub(crate) fn write_meta(dir: &Path, meta: &JobMeta, sync: bool) -> Result<(), JournalError> {
    let tmp = dir.join(META_SPARE);
    let path = dir.join(META_FILE);
    let body = serde_json::to_vec_pretty(meta).map_err(|source| JournalError::Meta {
        path: path.clone(),
        source,
    })?;
    // The temporary file is the previous version after each exchange below: rewriting it reuses its inode.
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| JournalError::io("creating", &tmp, e))?;
    f.write_all(&body)
        .map_err(|e| JournalError::io("writing", &tmp, e))?;
    // A local (`runwright exec`) job's record is history only: nothing recovers it after a crash.
    if sync && !meta.local {
        f.sync_data()
            .map_err(|e| JournalError::io("syncing", &tmp, e))?;
    }
    drop(f);
    replace(&tmp, &path).map_err(|e| JournalError::io("replacing", &path, e))?;
    if meta.state.is_final() && meta.reported {
        remove_meta_spare(dir);
    }
    Ok(())
}

/// Puts `new` in `path`'s place atomically. An exchange keeps both inodes (the old version becomes `new`, to
/// be rewritten next time): a job's metadata is rewritten at every stage boundary, and a fresh inode each time
/// was most of what the journal cost (allocating and freeing inodes is a scan on ext4). A plain rename where
/// there is nothing to exchange with yet, or the file system cannot.
fn replace(new: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, new, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => return Ok(()),
            Err(
                nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS,
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::rename(new, path)
}

/// What a job's files take, without the spare metadata a job keeps only while it is written to.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != META_SPARE)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
