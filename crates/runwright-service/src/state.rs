//! What the running service tells the operating verbs, through two small files:
//!
//! * the lock — held with `flock` by `runwright run` for its whole life, holding its pid: a second service on
//!   the same config is refused, and `status` knows whether one runs;
//! * the state (`….state.json` beside the lock) — rewritten (atomically) by the service when something
//!   changes: per runner entry the last poll and its outcome, the last successful poll, running jobs, the
//!   unhealthy back-off and the next token rotation. No token is ever written there, only short tokens.
//!
//! Where (issue 17: never in a world-writable place — a `/tmp/runwright-<hash>.lock` that another user made and
//! held stopped the service from starting, and its `.state.json` faked what `status` showed):
//!
//! 1. beside `config.toml`, as `.runwright-<config file>.lock`, when the config's directory is private to the
//!    service's user (it or root owns it, group and others may not write to it) and the service may write
//!    there — `/etc/gitlab-runner` as root, `~/.gitlab-runner` otherwise, where `runwright install` and
//!    `register` put the config;
//! 2. else in the service user's state directory, as `<config file>-<hash of its path>.lock`:
//!    `$XDG_STATE_HOME/runwright/` (`~/.local/state/runwright/`), or `/var/lib/runwright/` for root without
//!    `XDG_STATE_HOME` — created 0700 and refused when it is not the user's own.
//!
//! Both files are opened without following a symbolic link and must be the service user's and writable by
//! nobody else (`runwright_journal::trusted`), or the service refuses to start and says which file is wrong.
//! The lock is 0600: nobody else can even open it to hold its `flock`. Readers (`status`, `list`) look in both
//! places and trust a file only when it passes the same checks with an owner that is the reader, root or the
//! owner of `config.toml`; an untrusted one is reported and ignored.

use anyhow::anyhow;
use runwright_journal::trusted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The largest state file a reader reads (a real one is a few KiB).
const MAX_STATE_FILE: u64 = 4 * 1024 * 1024;

fn names(config: &Path) -> (PathBuf, String) {
    let abs = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file = abs
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".into());
    (dir, file)
}

/// The service user's state directory: `$XDG_STATE_HOME/runwright` (an absolute `XDG_STATE_HOME`), else
/// `/var/lib/runwright` for root, else `~/.local/state/runwright`; `None` without a home.
pub fn state_base() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os(runwright_static::env_vars::XDG_STATE_HOME)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(xdg.join("runwright"));
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/runwright"));
    }
    std::env::var_os(runwright_static::env_vars::HOME)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local/state/runwright"))
}

/// One place the files of a config may be: a directory and the files' stem in it.
struct Place {
    dir: PathBuf,
    stem: String,
    /// Beside the config (else: the state directory).
    beside_config: bool,
}

impl Place {
    fn lock(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }
}

/// Where the files of `config` may be, in the order the service tries them; `state_base`: the state
/// directory ([`state_base`]).
fn places(config: &Path, state_base: Option<PathBuf>) -> Vec<Place> {
    let (dir, file) = names(config);
    let abs = dir.join(&file);
    // FNV-1a of the config's absolute path: two configs in one state directory keep apart.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut out = vec![Place {
        dir,
        stem: format!(".runwright-{file}"),
        beside_config: true,
    }];
    if let Some(base) = state_base {
        out.push(Place {
            dir: base,
            stem: format!("{file}-{h:016x}"),
            beside_config: false,
        });
    }
    out
}

/// The config's directory may hold the service's files: one of `owners` owns it, and nobody else may create or
/// replace an entry in it.
fn private_config_dir(dir: &Path, owners: &[u32]) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !owners.contains(&meta.uid()) {
        return Err(format!(
            "{} belongs to uid {}, not to the service's user or root",
            dir.display(),
            meta.uid()
        ));
    }
    if trusted::writable_by_others(&meta) {
        return Err(format!(
            "group or others may write to {} (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The service's lock; released when dropped (or when the process dies).
pub struct ServiceLock {
    _lock: nix::fcntl::Flock<File>,
    pub path: PathBuf,
}

fn already_running(pid: Option<u32>, config: &Path) -> anyhow::Error {
    let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    anyhow!(
        "another runwright service (pid {pid}) is already running with {}; stop it first (systemctl stop, or kill -QUIT {pid}), or give this one another config with -c",
        config.display()
    )
}

fn refused(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow!("refusing the service's lock file {}: {e}", path.display())
}

/// Takes the service lock of `config`, or says which process holds it or which file cannot be trusted.
pub fn lock(config: &Path) -> anyhow::Result<ServiceLock> {
    lock_in(config, state_base())
}

fn lock_in(config: &Path, state_base: Option<PathBuf>) -> anyhow::Result<ServiceLock> {
    let me = trusted::euid();
    let places = places(config, state_base);
    // A lock held in one place wins over a free one in the other (the config's directory may have become
    // writable since a service took the lock in the state directory).
    for place in &places {
        let path = place.lock();
        if std::fs::symlink_metadata(&path).is_err()
            || (place.beside_config && private_config_dir(&place.dir, &[me, 0]).is_err())
        {
            continue;
        }
        let file = trusted::open(&path, File::options().read(true), &[me])
            .map_err(|e| refused(&path, e))?;
        if let Some(pid) = holder_of(file) {
            return Err(already_running(pid, config));
        }
    }
    let mut passed_over = Vec::new();
    for place in &places {
        if place.beside_config {
            if let Err(why) = private_config_dir(&place.dir, &[me, 0]) {
                passed_over.push(why);
                continue;
            }
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&place.dir)
                .map_err(|e| {
                    anyhow!("creating the state directory {}: {e}", place.dir.display())
                })?;
            trusted::check_private_dir(&place.dir, me).map_err(|e| {
                anyhow!("refusing the state directory {}: {e}", place.dir.display())
            })?;
        }
        let path = place.lock();
        let existed = std::fs::symlink_metadata(&path).is_ok();
        let file = match trusted::open(
            &path,
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
            &[me],
        ) {
            Ok(f) => f,
            // The service may not create files here (a config directory of root's, a read-only one): the
            // state directory then.
            Err(e)
                if !existed
                    && matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EACCES | nix::libc::EPERM | nix::libc::EROFS)
                    ) =>
            {
                passed_over.push(format!("{}: {e}", path.display()));
                continue;
            }
            Err(e) => return Err(refused(&path, e)),
        };
        // Nobody else may open it to hold its lock (a lock file of an older runwright may be 0644).
        if file
            .metadata()
            .map(|m| m.mode() & 0o077 != 0)
            .unwrap_or(true)
        {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| refused(&path, e))?;
        }
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let _ = locked.set_len(0);
                let _ = locked.rewind();
                let _ = writeln!(locked, "{}", std::process::id());
                let _ = locked.sync_all();
                return Ok(ServiceLock {
                    _lock: locked,
                    path,
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(already_running(read_pid(&path), config));
            }
            Err((_, e)) => return Err(refused(&path, e.into())),
        }
    }
    Err(anyhow!(
        "no place for the service lock of {} ({}); make the config's directory the service user's and not writable by others, or set XDG_STATE_HOME to a directory of the service user's",
        config.display(),
        passed_over.join("; ")
    ))
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut s)
        .ok()?;
    s.trim().parse().ok()
}

/// `Some(pid)` when a process holds the lock open in `file` (the pid it wrote, if readable).
fn holder_of(file: File) -> Option<Option<u32>> {
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let _ = file.rewind();
            let _ = (&mut file).take(64).read_to_string(&mut s);
            Some(s.trim().parse().ok())
        }
        Err(_) => None,
    }
}

/// Who a reader trusts to have written the files: itself, root, and the owner of `config.toml`.
fn trusted_owners(config: &Path) -> Vec<u32> {
    let mut owners = vec![trusted::euid(), 0];
    if let Ok(meta) = std::fs::metadata(config) {
        owners.push(meta.uid());
    }
    owners
}

/// What a reader found of the service of a config.
#[derive(Debug, Default)]
pub struct ServiceLookup {
    /// The service's pid (0 when its lock file holds none), if one runs.
    pub pid: Option<u32>,
    /// Its state file, if it runs and the file can be trusted.
    pub state: Option<ServiceState>,
    /// Files that were there but cannot be trusted, and why: for the reader to show.
    pub warnings: Vec<String>,
}

/// The service running with `config`, if any, and its state: read only from files that pass the checks of
/// the module's documentation.
pub fn find_service(config: &Path) -> ServiceLookup {
    find_service_in(config, state_base())
}

fn find_service_in(config: &Path, state_base: Option<PathBuf>) -> ServiceLookup {
    let owners = trusted_owners(config);
    let mut out = ServiceLookup::default();
    for place in places(config, state_base) {
        let path = place.lock();
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        if place.beside_config {
            if let Err(why) = private_config_dir(&place.dir, &owners) {
                out.warnings
                    .push(format!("ignoring {}: {why}", path.display()));
                continue;
            }
        }
        let file = match trusted::open(&path, File::options().read(true), &owners) {
            Ok(f) => f,
            Err(e) => {
                out.warnings
                    .push(format!("ignoring {}: {e}", path.display()));
                continue;
            }
        };
        let Some(pid) = holder_of(file) else {
            continue;
        };
        out.pid = Some(pid.unwrap_or(0));
        let state_path = state_path_for_lock(&path);
        match read_state(&state_path, &owners) {
            Ok(state) => out.state = state,
            Err(e) => out
                .warnings
                .push(format!("ignoring {}: {e}", state_path.display())),
        }
        break;
    }
    out
}

/// The state file at `path`; `Ok(None)` when there is none (yet) or it does not parse.
fn read_state(path: &Path, owners: &[u32]) -> std::io::Result<Option<ServiceState>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let file = trusted::open(path, File::options().read(true), owners)?;
    let mut text = String::new();
    file.take(MAX_STATE_FILE).read_to_string(&mut text)?;
    Ok(serde_json::from_str(&text).ok())
}

/// One runner entry as the service sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunnerState {
    pub name: String,
    pub url: String,
    pub short_token: String,
    /// `ok`, `no_job`, `forbidden`, `orphaned`, `unavailable`, `failed: …`, `not_started: …`.
    pub last_outcome: Option<String>,
    pub last_poll_at: Option<String>,
    pub last_success_at: Option<String>,
    pub running_jobs: Vec<i64>,
    pub unhealthy_until: Option<String>,
    pub next_token_rotation: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceState {
    pub pid: u32,
    pub started_at: String,
    pub ready: bool,
    pub stopping: bool,
    /// By entry key (URL and short token).
    pub runners: BTreeMap<String, RunnerState>,
}

impl ServiceState {
    pub fn for_runner(&self, url: &str, token: &str) -> Option<&RunnerState> {
        self.runners.get(&key(url, token))
    }
}

/// The key of an entry in the state file: URL, short token and a hash of the token (tokens of one GitLab
/// often share their short form; the token itself is never written).
pub fn key(url: &str, token: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in token.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!(
        "{} {} {:08x}",
        url,
        runwright_config::short_token(token),
        h >> 32
    )
}

/// The service's live record (`Shared::state`: its pollers report into it, the dashboard shows it), written
/// out by [`Registry::write`].
#[derive(Default)]
pub struct Registry {
    state: Mutex<(ServiceState, bool)>,
    /// `None` until the service has said which entries it runs.
    expected: Mutex<Option<BTreeSet<String>>>,
}

fn now_str() -> String {
    crate::gitlab::fmt_time(crate::gitlab::now())
}

impl Registry {
    fn update(&self, f: impl FnOnce(&mut ServiceState)) {
        if let Ok(mut g) = self.state.lock() {
            f(&mut g.0);
            g.1 = true;
        }
    }

    pub fn start(&self, pid: u32) {
        self.update(|s| {
            s.pid = pid;
            s.started_at = now_str();
        });
    }

    /// The entries the service runs now; others are dropped from the record.
    pub fn set_entries(&self, entries: &[(String, String, String, Option<String>)]) {
        let keys: BTreeSet<String> = entries.iter().map(|(_, u, t, _)| key(u, t)).collect();
        self.update(|s| {
            s.runners.retain(|k, _| keys.contains(k));
            for (name, url, token, rotation) in entries {
                let r = s.runners.entry(key(url, token)).or_default();
                r.name = name.clone();
                r.url = url.clone();
                r.short_token = runwright_config::short_token(token);
                r.next_token_rotation = rotation.clone();
            }
        });
        if let Ok(mut e) = self.expected.lock() {
            *e = Some(keys);
        }
    }

    pub fn not_started(&self, url: &str, token: &str, why: &str) {
        let k = key(url, token);
        self.update(|s| {
            if let Some(r) = s.runners.get_mut(&k) {
                r.last_outcome = Some(format!("not_started: {why}"));
            }
        });
        if let Ok(mut e) = self.expected.lock() {
            if let Some(e) = e.as_mut() {
                e.remove(&k);
            }
        }
    }

    pub fn polled(&self, url: &str, token: &str, outcome: &str, success: bool) {
        let k = key(url, token);
        self.update(|s| {
            if let Some(r) = s.runners.get_mut(&k) {
                let now = now_str();
                r.last_outcome = Some(outcome.to_string());
                r.last_poll_at = Some(now.clone());
                if success {
                    r.last_success_at = Some(now);
                    r.unhealthy_until = None;
                }
            }
        });
    }

    pub fn unhealthy(&self, url: &str, token: &str, wait: std::time::Duration) {
        let k = key(url, token);
        let until = crate::gitlab::now() + wait;
        self.update(|s| {
            if let Some(r) = s.runners.get_mut(&k) {
                r.unhealthy_until = Some(crate::gitlab::fmt_time(until));
            }
        });
    }

    pub fn job(&self, url: &str, token: &str, id: i64, running: bool) {
        let k = key(url, token);
        self.update(|s| {
            if let Some(r) = s.runners.get_mut(&k) {
                r.running_jobs.retain(|j| *j != id);
                if running {
                    r.running_jobs.push(id);
                }
            }
        });
    }

    pub fn stopping(&self) {
        self.update(|s| s.stopping = true);
    }

    /// Every started entry has finished its first job request (whatever the answer).
    pub fn all_polled(&self) -> bool {
        let Some(expected) = self.expected.lock().ok().and_then(|e| e.clone()) else {
            return false;
        };
        let Ok(g) = self.state.lock() else {
            return false;
        };
        expected
            .iter()
            .all(|k| g.0.runners.get(k).is_some_and(|r| r.last_poll_at.is_some()))
    }

    pub fn set_ready(&self) {
        self.update(|s| s.ready = true);
    }

    /// The record as it is now (the dashboard's runners).
    pub fn snapshot(&self) -> ServiceState {
        self.state
            .lock()
            .map(|g| g.0.clone())
            .unwrap_or_else(|p| p.into_inner().0.clone())
    }

    /// Writes the state file if anything changed since the last write.
    pub fn write(&self, path: &Path) {
        let text = {
            let Ok(mut g) = self.state.lock() else {
                return;
            };
            if !g.1 {
                return;
            }
            g.1 = false;
            serde_json::to_string_pretty(&g.0).unwrap_or_default()
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let result = tempfile::Builder::new()
            .prefix(".runwright-state.")
            .tempfile_in(dir)
            .and_then(|mut tmp| {
                tmp.write_all(text.as_bytes())?;
                tmp.persist(path).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::debug!(
                "cannot write the service state file {}: {e}",
                path.display()
            );
        }
    }
}

/// Where the service writes its state: beside the lock it got.
pub fn state_path_for_lock(lock: &Path) -> PathBuf {
    let s = lock.to_string_lossy();
    PathBuf::from(format!("{}.state.json", s.trim_end_matches(".lock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let first = lock(&config).expect("first lock");
        assert_eq!(find_service(&config).pid, Some(std::process::id()));
        // flock is per open file description: a second open in this process conflicts too.
        let err = lock(&config)
            .err()
            .expect("second lock refused")
            .to_string();
        assert!(err.contains("already running"), "{err}");
        assert_eq!(
            first.path,
            places(&config, None)[0].lock(),
            "beside the config"
        );
        let mode = std::fs::metadata(&first.path).expect("lock").mode() & 0o777;
        assert_eq!(mode, 0o600, "nobody else may open the lock");
        drop(first);
        assert_eq!(find_service(&config).pid, None);
        lock(&config).expect("free again");
    }

    /// A config in a directory of `mode`, and a state directory (not made yet) in the same temp dir.
    fn setup(mode: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("etc");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let config = dir.join("config.toml");
        std::fs::write(&config, "concurrent = 1\n").expect("config");
        let state = tmp.path().join("state/runwright");
        (tmp, config, state)
    }

    #[test]
    fn a_config_directory_others_may_write_to_is_passed_over_for_the_state_directory() {
        // World-writable and sticky, as /tmp: anyone may create a file beside the config.
        let (_tmp, config, state) = setup(0o1777);
        let planted = places(&config, None)[0].lock();
        std::fs::write(&planted, "1\n").expect("planted");
        let held = lock_in(&config, Some(state.clone())).expect("lock in the state directory");
        assert!(held.path.starts_with(&state), "{}", held.path.display());
        assert_eq!(
            std::fs::metadata(&state).expect("state dir").mode() & 0o777,
            0o700
        );
        let found = find_service_in(&config, Some(state.clone()));
        assert_eq!(found.pid, Some(std::process::id()));
        assert!(
            found.warnings.iter().any(|w| w.contains("may write to")),
            "{:?}",
            found.warnings
        );
    }

    #[test]
    fn a_symbolic_link_as_lock_or_state_file_is_refused_and_not_followed() {
        let (tmp, config, state) = setup(0o755);
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let lock_path = places(&config, None)[0].lock();
        std::os::unix::fs::symlink(&victim, &lock_path).expect("symlink");
        let err = lock_in(&config, Some(state.clone()))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&lock_path.display().to_string()) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious\n"
        );
        // A reader ignores it, and a state file that is a link, and says why.
        let found = find_service_in(&config, Some(state.clone()));
        assert_eq!(found.pid, None);
        assert!(found.warnings.iter().any(|w| w.contains("symbolic link")));
        std::fs::remove_file(&lock_path).expect("rm");
        let held = lock_in(&config, Some(state.clone())).expect("lock");
        let state_file = state_path_for_lock(&held.path);
        std::os::unix::fs::symlink(&victim, &state_file).expect("symlink");
        let found = find_service_in(&config, Some(state));
        assert_eq!(found.pid, Some(std::process::id()));
        assert!(found.state.is_none());
        assert!(
            found.warnings.iter().any(|w| w.contains("state.json")),
            "{:?}",
            found.warnings
        );
    }

    #[test]
    fn a_lock_file_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: a file of another user needs root to make");
            return;
        }
        let (_tmp, config, state) = setup(0o755);
        let lock_path = places(&config, None)[0].lock();
        std::fs::write(&lock_path, "").expect("lock file");
        nix::unistd::chown(&lock_path, Some(nix::unistd::Uid::from_raw(65534)), None)
            .expect("chown");
        let err = lock_in(&config, Some(state))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("belongs to uid 65534"), "{err}");
    }

    #[test]
    fn readiness_waits_for_every_entry() {
        let reg = Registry::default();
        assert!(!reg.all_polled(), "not before the entries are known");
        reg.set_entries(&[
            (
                "a".into(),
                "http://x/".into(),
                "glrt-aaaaaaaaaaaa".into(),
                None,
            ),
            (
                "b".into(),
                "http://x/".into(),
                "glrt-bbbbbbbbbbbb".into(),
                None,
            ),
        ]);
        assert!(!reg.all_polled());
        reg.polled("http://x/", "glrt-aaaaaaaaaaaa", "no_job", true);
        assert!(!reg.all_polled());
        reg.not_started("http://x/", "glrt-bbbbbbbbbbbb", "executor");
        assert!(reg.all_polled());
    }
}
