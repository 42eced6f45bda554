//! What the running service tells the operating verbs, through two small files beside `config.toml`:
//!
//! * `.runwright-<config file>.lock` — held with `flock` by `runwright run` for its whole life, holding its
//!   pid: a second service on the same config is refused, and `status` knows whether one runs;
//! * `.runwright-<config file>.state.json` — rewritten (atomically) by the service when something changes:
//!   per runner entry the last poll and its outcome, the last successful poll, running jobs, the unhealthy
//!   back-off and the next token rotation. No token is ever written there, only short tokens.
//!
//! When the config's directory is not writable the files go to the temp directory under a name derived from
//! the config's absolute path; readers look in both places.

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Candidate paths of one of the files: beside the config, then in the temp directory.
fn candidates(config: &Path, suffix: &str) -> Vec<PathBuf> {
    let (dir, file) = names(config);
    let abs = dir.join(&file);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    vec![
        dir.join(format!(".runwright-{file}.{suffix}")),
        std::env::temp_dir().join(format!("runwright-{h:016x}.{suffix}")),
    ]
}

pub fn lock_paths(config: &Path) -> Vec<PathBuf> {
    candidates(config, "lock")
}

pub fn state_paths(config: &Path) -> Vec<PathBuf> {
    candidates(config, "state.json")
}

/// The service's lock; released when dropped (or when the process dies).
pub struct ServiceLock {
    _lock: nix::fcntl::Flock<File>,
    pub path: PathBuf,
}

/// Takes the service lock of `config`, or says which process holds it.
pub fn lock(config: &Path) -> anyhow::Result<ServiceLock> {
    let mut last_err = None;
    for path in lock_paths(config) {
        // An existing lock held elsewhere wins over a free one in the other place.
        if let Some(pid) = holder(&path) {
            return Err(anyhow!(
                "another runwright service (pid {pid}) is already running with {}; stop it first (systemctl stop, or kill -QUIT {pid}), or give this one another config with -c",
                config.display()
            ));
        }
    }
    for path in lock_paths(config) {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                last_err = Some(format!("{}: {e}", path.display()));
                continue;
            }
        };
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
                let pid = read_pid(&path)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into());
                return Err(anyhow!(
                    "another runwright service (pid {pid}) is already running with {}; stop it first (systemctl stop, or kill -QUIT {pid}), or give this one another config with -c",
                    config.display()
                ));
            }
            Err((_, e)) => last_err = Some(format!("{}: {e}", path.display())),
        }
    }
    Err(anyhow!(
        "cannot create the service lock file for {} ({}); make the config's directory writable for the service user",
        config.display(),
        last_err.unwrap_or_default()
    ))
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// The pid of the service holding the lock at `path`, if one does.
fn holder(path: &Path) -> Option<u32> {
    let file = File::open(path).ok()?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Some(read_pid(path).unwrap_or(0)),
        Err(_) => None,
    }
}

/// The pid of the service running with `config`, if any.
pub fn running_service(config: &Path) -> Option<u32> {
    lock_paths(config).iter().find_map(|p| holder(p))
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
    pub fn read(config: &Path) -> Option<ServiceState> {
        state_paths(config).iter().find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            serde_json::from_str(&text).ok()
        })
    }

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

/// The process's registry (the service's pollers report into it; unused elsewhere).
pub fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The service's live record, written out by [`Registry::write`].
#[derive(Default)]
pub struct Registry {
    state: Mutex<(ServiceState, bool)>,
    /// `None` until the service has said which entries it runs.
    expected: Mutex<Option<BTreeSet<String>>>,
}

fn now_str() -> String {
    super::fmt_time(super::now())
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
        let until = super::now() + wait;
        self.update(|s| {
            if let Some(r) = s.runners.get_mut(&k) {
                r.unhealthy_until = Some(super::fmt_time(until));
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
        assert_eq!(running_service(&config), Some(std::process::id()));
        // flock is per open file description: a second open in this process conflicts too.
        let err = lock(&config)
            .err()
            .expect("second lock refused")
            .to_string();
        assert!(err.contains("already running"), "{err}");
        assert_eq!(state_path_for_lock(&first.path), state_paths(&config)[0]);
        drop(first);
        assert_eq!(running_service(&config), None);
        lock(&config).expect("free again");
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
