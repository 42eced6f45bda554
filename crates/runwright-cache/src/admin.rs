//! Listing and clearing caches for `runwright cache list/clear`: what each runner holds in its
//! local cache directory and in its S3 prefix, and deleting what a [`Filter`] selects.
//!
//! Locally an entry is a `cache.zip`; deleting it removes the archive and its `metadata.json`,
//! then every directory left empty up to (not including) `cache_dir`. A key directory that
//! also holds a longer key (`a` and `a/b`) keeps the longer one. On S3 an entry is one object.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::local::{LocalCache, ARCHIVE_FILE, METADATA_FILE};
use crate::s3::S3Cache;

/// One runner's caches, as configured.
#[derive(Debug, Clone)]
pub struct RunnerCaches {
    /// The runner's `name` from config.toml.
    pub name: String,
    /// Its local cache directory, if it has one on this machine.
    pub local: Option<LocalCache>,
    /// Its S3 cache, if `[runners.cache]` has `Type = "s3"`.
    pub s3: Option<S3Cache>,
}

/// Where a cache entry lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Location {
    /// A local archive.
    Local {
        /// The `cache.zip` file.
        path: PathBuf,
    },
    /// An S3 object.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object name.
        object: String,
    },
}

/// One cached archive.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    /// The runner's name.
    pub runner: String,
    /// Where the archive is.
    pub location: Location,
    /// Locally the project slug (`group/project`); on S3 the project id.
    pub project: String,
    /// The human key when known (`metadata.json`), else the storage key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the archive was last written (its mtime, or S3's `LastModified`).
    #[serde(serialize_with = "rfc3339")]
    pub last_used: SystemTime,
    /// How to delete it; not part of the JSON.
    #[serde(skip)]
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local { cache_dir: PathBuf },
    S3(S3Cache),
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let formatted = time::OffsetDateTime::from(*time)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&formatted)
}

/// Every cache archive of every runner, local ones first, each sorted by location.
pub async fn list(runners: &[RunnerCaches]) -> Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    for runner in runners {
        if let Some(local) = &runner.local {
            let name = runner.name.clone();
            let cache_dir = local.cache_dir.clone();
            // Walking a directory tree is blocking work.
            let found = tokio::task::spawn_blocking(move || list_local(&name, &cache_dir))
                .await
                .map_err(|e| {
                    Error::io(
                        &local.cache_dir,
                        std::io::Error::other(format!("listing was interrupted: {e}")),
                    )
                })??;
            entries.extend(found);
        }
    }
    for runner in runners {
        if let Some(s3) = &runner.s3 {
            entries.extend(list_s3(&runner.name, s3).await?);
        }
    }
    Ok(entries)
}

fn list_local(runner: &str, cache_dir: &Path) -> Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    if !cache_dir.exists() {
        return Ok(entries);
    }
    let walker = walkdir::WalkDir::new(cache_dir)
        .follow_links(false)
        .sort_by_file_name();
    for item in walker {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(cache_dir).to_path_buf();
            Error::io(path, std::io::Error::other(e.to_string()))
        })?;
        // Symlinks are never followed nor listed: clearing must not reach outside cache_dir.
        if !item.file_type().is_file() || item.file_name() != ARCHIVE_FILE {
            continue;
        }
        let archive = item.path();
        let Some(key_dir) = archive.parent() else {
            continue;
        };
        let Ok(rel) = key_dir.strip_prefix(cache_dir) else {
            continue;
        };
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (project, key) = split_project_and_key(&rel, LocalCache::read_metadata(key_dir));
        let meta = item
            .metadata()
            .map_err(|e| Error::io(archive, std::io::Error::other(e.to_string())))?;
        entries.push(CacheEntry {
            runner: runner.to_owned(),
            location: Location::Local {
                path: archive.to_path_buf(),
            },
            project,
            key,
            size: meta.len(),
            last_used: last_used(key_dir, &meta),
            backend: Backend::Local {
                cache_dir: cache_dir.to_path_buf(),
            },
        });
    }
    Ok(entries)
}

/// The archive's mtime, or `metadata.json`'s when later: restoring a cache touches `metadata.json`
/// ([`LocalCache::mark_used`]) and leaves the archive's mtime alone, which the S3 download compares with
/// `Last-Modified`.
fn last_used(key_dir: &Path, archive: &std::fs::Metadata) -> SystemTime {
    let written = archive.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let used = std::fs::metadata(key_dir.join(METADATA_FILE))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    written.max(used)
}

/// Splits a key directory's path below `cache_dir` into project slug and key. With the human
/// key from `metadata.json` the key part is that key (sanitized keys are paths) or its hash
/// (`FF_HASH_CACHE_KEYS`); without it the key is taken to be the last directory, a guess that
/// is right for every key without `/`.
fn split_project_and_key(rel: &[String], human: Option<String>) -> (String, String) {
    let (last, parent) = match rel.split_last() {
        Some((last, parent)) => (last.clone(), parent.join("/")),
        None => (String::new(), String::new()),
    };
    let Some(human) = human else {
        return (parent, last);
    };
    let human_parts: Vec<&str> = human.split('/').collect();
    if human_parts.len() <= rel.len()
        && rel[rel.len() - human_parts.len()..]
            .iter()
            .zip(&human_parts)
            .all(|(a, b)| a == b)
    {
        return (rel[..rel.len() - human_parts.len()].join("/"), human);
    }
    // A hashed key (`FF_HASH_CACHE_KEYS`) is one directory named by the hash; a directory that
    // matches neither is still best read as `<slug>/<one directory>`.
    (parent, human)
}

async fn list_s3(runner: &str, s3: &S3Cache) -> Result<Vec<CacheEntry>> {
    let prefix = if s3.namespace().is_empty() {
        "project".to_owned()
    } else {
        format!("{}/project", s3.namespace())
    };
    let mut entries = Vec::new();
    for object in s3.list(&prefix).await? {
        // `<prefix>/<project id>/<key>`; anything else under the prefix is not ours.
        let Some(rest) = object.name.strip_prefix(&format!("{prefix}/")) else {
            continue;
        };
        let Some((project, key)) = rest.split_once('/') else {
            continue;
        };
        if key.is_empty() || project.parse::<i64>().is_err() {
            continue;
        }
        let key = unsharded(key);
        entries.push(CacheEntry {
            runner: runner.to_owned(),
            location: Location::S3 {
                bucket: s3.bucket().to_owned(),
                object: object.name.clone(),
            },
            project: project.to_owned(),
            key: key.to_owned(),
            size: object.size,
            last_used: object.last_modified,
            backend: Backend::S3(s3.clone()),
        });
    }
    entries.sort_by_key(CacheEntry::location_key);
    Ok(entries)
}

/// A hashed key stored under its two-character shard (`ab/ab12…`, `FF_HASH_CACHE_KEYS` in GitLab Runner
/// 19.x, runner cache/cache.go `GetAdapter`) is listed as the hash, as the local layout shows it.
fn unsharded(key: &str) -> &str {
    match key.split_once('/') {
        Some((shard, hash))
            if shard.len() == 2
                && hash.len() == 64
                && hash.starts_with(shard)
                && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            hash
        }
        _ => key,
    }
}

impl CacheEntry {
    fn location_key(&self) -> String {
        match &self.location {
            Location::Local { path } => path.to_string_lossy().into_owned(),
            Location::S3 { bucket, object } => format!("{bucket}/{object}"),
        }
    }
}

/// Which entries [`clear`] removes; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The exact project: slug for local entries, id for S3 ones.
    pub project: Option<String>,
    /// The exact key.
    pub key: Option<String>,
    /// Keys starting with this.
    pub key_prefix: Option<String>,
    /// Entries last written longer ago than this.
    pub older_than: Option<Duration>,
}

impl Filter {
    /// Whether `entry` is selected, judging age against `now`.
    pub fn matches(&self, entry: &CacheEntry, now: SystemTime) -> bool {
        if self.project.as_ref().is_some_and(|p| *p != entry.project) {
            return false;
        }
        if self.key.as_ref().is_some_and(|k| *k != entry.key) {
            return false;
        }
        if self
            .key_prefix
            .as_ref()
            .is_some_and(|p| !entry.key.starts_with(p.as_str()))
        {
            return false;
        }
        if let Some(older_than) = self.older_than {
            // An mtime in the future is not old.
            let age = now.duration_since(entry.last_used).unwrap_or_default();
            if age <= older_than {
                return false;
            }
        }
        true
    }
}

/// Deletes the entries `filter` selects (or, with `dry_run`, only says which) and returns them.
/// Stops at the first failure, with the entries before it already deleted.
pub async fn clear(
    entries: &[CacheEntry],
    filter: &Filter,
    dry_run: bool,
) -> Result<Vec<CacheEntry>> {
    let now = SystemTime::now();
    let selected: Vec<CacheEntry> = entries
        .iter()
        .filter(|e| filter.matches(e, now))
        .cloned()
        .collect();
    if dry_run {
        return Ok(selected);
    }
    for entry in &selected {
        match (&entry.backend, &entry.location) {
            (Backend::Local { cache_dir }, Location::Local { path }) => {
                let (cache_dir, path) = (cache_dir.clone(), path.clone());
                tokio::task::spawn_blocking(move || delete_local(&cache_dir, &path))
                    .await
                    .map_err(|e| {
                        Error::io(
                            entry.location_key(),
                            std::io::Error::other(format!("deleting was interrupted: {e}")),
                        )
                    })??;
            }
            (Backend::S3(s3), Location::S3 { object, .. }) => s3.delete(object).await?,
            // Entries are only made by `list`, which pairs them consistently.
            _ => {}
        }
    }
    Ok(selected)
}

fn delete_local(cache_dir: &Path, archive: &Path) -> Result<()> {
    let Some(key_dir) = archive.parent() else {
        return Ok(());
    };
    for file in [archive.to_path_buf(), key_dir.join(METADATA_FILE)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(file, e)),
        }
    }
    // Remove the directories left empty, never cache_dir itself nor anything outside it.
    let mut dir = Some(key_dir);
    while let Some(d) = dir {
        if d == cache_dir || !d.starts_with(cache_dir) {
            break;
        }
        match std::fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Not empty (another key, a download in progress): keep it and everything above.
            Err(_) => break,
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key;

    fn parts(s: &str) -> Vec<String> {
        s.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn a_restore_makes_an_old_archive_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalCache::new(dir.path());
        let archive = local.archive_path("grp/app", "k");
        std::fs::create_dir_all(archive.parent().expect("parent")).expect("mkdir");
        std::fs::write(&archive, b"zip").expect("archive");
        local.write_metadata("grp/app", "k", "k").expect("metadata");
        let old = SystemTime::now() - Duration::from_secs(30 * 86_400);
        for p in [archive.clone(), local.metadata_path("grp/app", "k")] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .expect("open");
            f.set_modified(old).expect("age it");
        }
        let aged = list_local("r", dir.path()).expect("list");
        let month = Filter {
            older_than: Some(Duration::from_secs(7 * 86_400)),
            ..Filter::default()
        };
        assert!(month.matches(&aged[0], SystemTime::now()));
        local.mark_used("grp/app", "k");
        let used = list_local("r", dir.path()).expect("list");
        assert!(!month.matches(&used[0], SystemTime::now()));
        // The archive's own mtime (compared with S3's Last-Modified) is untouched.
        let mtime = std::fs::metadata(&archive)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(mtime <= old + Duration::from_secs(1));
    }

    #[test]
    fn project_and_key_from_the_directory() {
        assert_eq!(
            split_project_and_key(
                &parts("group/proj/build/main"),
                Some("build/main".to_owned())
            ),
            ("group/proj".to_owned(), "build/main".to_owned())
        );
        let h = key::hashed("build/main");
        assert_eq!(
            split_project_and_key(
                &parts(&format!("group/proj/{h}")),
                Some("build/main".to_owned())
            ),
            ("group/proj".to_owned(), "build/main".to_owned())
        );
        assert_eq!(
            split_project_and_key(&parts("group/proj/default-1"), None),
            ("group/proj".to_owned(), "default-1".to_owned())
        );
    }

    fn entry(project: &str, key: &str, age: Duration) -> CacheEntry {
        CacheEntry {
            runner: "r".to_owned(),
            location: Location::Local {
                path: PathBuf::from("/c/x/cache.zip"),
            },
            project: project.to_owned(),
            key: key.to_owned(),
            size: 1,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) - age,
            backend: Backend::Local {
                cache_dir: PathBuf::from("/c"),
            },
        }
    }

    #[test]
    fn filter_fields_all_apply() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let e = entry("g/p", "build/main-1", Duration::from_secs(3600));
        assert!(Filter::default().matches(&e, now));
        let f = |project: Option<&str>,
                 key: Option<&str>,
                 prefix: Option<&str>,
                 older: Option<u64>| Filter {
            project: project.map(str::to_owned),
            key: key.map(str::to_owned),
            key_prefix: prefix.map(str::to_owned),
            older_than: older.map(Duration::from_secs),
        };
        assert!(f(Some("g/p"), None, None, None).matches(&e, now));
        assert!(!f(Some("g"), None, None, None).matches(&e, now));
        assert!(f(None, Some("build/main-1"), None, None).matches(&e, now));
        assert!(!f(None, Some("build/main"), None, None).matches(&e, now));
        assert!(f(None, None, Some("build/"), None).matches(&e, now));
        assert!(!f(None, None, Some("test/"), None).matches(&e, now));
        assert!(f(None, None, None, Some(60)).matches(&e, now));
        assert!(!f(None, None, None, Some(7200)).matches(&e, now));
        assert!(f(Some("g/p"), None, Some("build"), Some(60)).matches(&e, now));
        assert!(!f(Some("g/p"), None, Some("build"), Some(7200)).matches(&e, now));
    }

    #[test]
    fn entries_serialize_for_json_output() {
        let e = entry("g/p", "k", Duration::ZERO);
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "runner": "r",
                "location": {"type": "local", "path": "/c/x/cache.zip"},
                "project": "g/p",
                "key": "k",
                "size": 1,
                "last_used": "1970-01-12T13:46:40Z",
            })
        );
    }
}
