//! The local cache layout (protocol.md §6.2): `<cache_dir>/<project slug>/<key>/cache.zip` with a
//! `metadata.json` beside it, as GitLab's runner and its helper lay them out (runner
//! `common/build.go` `ProjectUniqueDir`, `commands/helpers/cache_metadata.go`).
//!
//! Every write goes to a temporary file in the target directory and is renamed into place, so a
//! crash or a concurrent job never sees half a file.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::gopath;

/// The archive's file name inside a key directory.
pub const ARCHIVE_FILE: &str = "cache.zip";
/// The metadata file's name inside a key directory.
pub const METADATA_FILE: &str = "metadata.json";

/// The directory of a project's caches below `cache_dir`: the repository URL's path without
/// `.git` (`group/project`), or `project-<id>` when the URL has no host or a suspicious path; with
/// an `-empty` suffix under `GIT_STRATEGY=empty` (runner `common/build.go` `ProjectSlug`,
/// `ProjectUniqueDir(false)`).
///
/// GitLab keeps the path's leading `/`, which `path.Join` then absorbs; we return it without.
pub fn project_slug(repo_url: &str, project_id: i64, empty_strategy: bool) -> String {
    let mut slug = slug_from_url(repo_url).unwrap_or_else(|| format!("project-{project_id}"));
    if empty_strategy {
        slug.push_str("-empty");
    }
    slug
}

fn slug_from_url(repo_url: &str) -> Option<String> {
    let url = url::Url::parse(repo_url).ok()?;
    if url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    // Go's url.URL.Path is percent-decoded.
    let path = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .ok()?
        .into_owned();
    let path = path.strip_suffix(".git").unwrap_or(&path);
    let cleaned = gopath::clean(path);
    if cleaned == "." || cleaned == "/" || cleaned.contains("..") {
        return None;
    }
    Some(cleaned.trim_start_matches('/').to_owned())
}

/// A runner's local cache directory (`cache_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCache {
    /// The directory holding `<project slug>/<key>/cache.zip`.
    pub cache_dir: PathBuf,
}

impl LocalCache {
    /// A cache rooted at `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> LocalCache {
        LocalCache {
            cache_dir: cache_dir.into(),
        }
    }

    /// `<cache_dir>/<slug>/<key>`. `key` is a storage key ([`crate::key::sanitize`] or
    /// [`crate::key::hashed`] output); segments that could leave the directory (`..`, a root) are
    /// dropped so no key ever points outside `cache_dir`.
    pub fn key_dir(&self, slug: &str, key: &str) -> PathBuf {
        let mut dir = self.cache_dir.clone();
        for part in [slug, key] {
            for component in Path::new(part).components() {
                if let Component::Normal(name) = component {
                    dir.push(name);
                }
            }
        }
        dir
    }

    /// `<cache_dir>/<slug>/<key>/cache.zip`.
    pub fn archive_path(&self, slug: &str, key: &str) -> PathBuf {
        self.key_dir(slug, key).join(ARCHIVE_FILE)
    }

    /// `<cache_dir>/<slug>/<key>/metadata.json`.
    pub fn metadata_path(&self, slug: &str, key: &str) -> PathBuf {
        self.key_dir(slug, key).join(METADATA_FILE)
    }

    /// Writes `metadata.json` (`{"cachekey":"<human key>"}`, mode 0640) beside the archive, as
    /// GitLab's `cache-archiver` does, creating the key directory if needed.
    pub fn write_metadata(&self, slug: &str, key: &str, human_key: &str) -> Result<PathBuf> {
        let path = self.metadata_path(slug, key);
        let body = serde_json::json!({ "cachekey": human_key }).to_string();
        write_atomic(&path, body.as_bytes(), 0o640)?;
        Ok(path)
    }

    /// Records that the cache was just restored: `metadata.json`'s mtime becomes now, so
    /// `runwright cache clear --older-than` spares caches in use. Missing metadata is not an error.
    pub fn mark_used(&self, slug: &str, key: &str) {
        let path = self.metadata_path(slug, key);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
    }

    /// The human key recorded in a key directory's `metadata.json`, if the file is there and
    /// readable. A missing or malformed file is not an error: GitLab's older runners wrote none.
    pub fn read_metadata(key_dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(key_dir.join(METADATA_FILE)).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value.get("cachekey")?.as_str().map(str::to_owned)
    }
}

/// Writes `metadata.json` beside `archive` (any path, not only this layout's) from `metadata`, keys
/// normalised as GitLab's helper does (lower-cased; empty keys dropped), mode 0640 (runner
/// commands/helpers/cache_metadata.go `writeCacheMetadataFile`). The helper's `cache-archiver --metadata` and
/// `cache-extractor` (the `x-amz-meta-*` headers of a download) write it.
pub fn write_metadata_file(
    archive: &Path,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<PathBuf> {
    let dir = parent_dir(archive)?;
    let path = dir.join(METADATA_FILE);
    let normalized: std::collections::BTreeMap<String, &String> = metadata
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let body = serde_json::to_string(&normalized).map_err(|e| Error::io(&path, e.into()))?;
    write_atomic(&path, body.as_bytes(), 0o640)?;
    Ok(path)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_dir(path)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    set_mode(tmp.as_file(), mode).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

pub(crate) fn parent_dir(path: &Path) -> Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "needs a parent directory: give a path with a directory part",
                ),
            )
        })
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_the_repository_path() {
        assert_eq!(
            project_slug(
                "https://gitlab-ci-token:xyz@gitlab.example.com/group/sub/proj.git",
                7,
                false
            ),
            "group/sub/proj"
        );
        assert_eq!(
            project_slug("http://host:8080/group/proj", 7, false),
            "group/proj"
        );
        assert_eq!(
            project_slug("https://host/group/my%20proj.git", 7, false),
            "group/my proj"
        );
        assert_eq!(
            project_slug("https://host/group/proj.git", 7, true),
            "group/proj-empty"
        );
    }

    #[test]
    fn slug_falls_back_to_the_project_id() {
        for url in [
            "",
            "git@host:group/proj.git",
            "file:///srv/git/proj.git",
            "https://host/",
            "https://host/.git",
            "https://host/group/..proj.git",
        ] {
            assert_eq!(project_slug(url, 42, false), "project-42", "{url:?}");
        }
        assert_eq!(project_slug("", 42, true), "project-42-empty");
    }

    #[test]
    fn archive_path_layout() {
        let cache = LocalCache::new("/cache");
        assert_eq!(
            cache.archive_path("group/proj", "build/main-1-non_protected"),
            Path::new("/cache/group/proj/build/main-1-non_protected/cache.zip")
        );
        // A key that is not sanitized still cannot leave the cache directory.
        assert_eq!(
            cache.archive_path("group/proj", "../../../etc"),
            Path::new("/cache/group/proj/etc/cache.zip")
        );
        assert_eq!(
            cache.archive_path("/abs", "/k"),
            Path::new("/cache/abs/k/cache.zip")
        );
    }

    #[test]
    fn metadata_is_written_atomically_as_gitlab_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = LocalCache::new(dir.path());
        let path = cache
            .write_metadata("g/p", "k/1", "k/1 \"quoted\"")
            .expect("write");
        assert_eq!(path, dir.path().join("g/p/k/1/metadata.json"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, r#"{"cachekey":"k/1 \"quoted\""}"#);
        assert_eq!(
            LocalCache::read_metadata(&dir.path().join("g/p/k/1")).as_deref(),
            Some("k/1 \"quoted\"")
        );
        // Overwriting leaves exactly one file behind, no temporary ones.
        cache
            .write_metadata("g/p", "k/1", "again")
            .expect("rewrite");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("g/p/k/1"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["metadata.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
        }
    }
}
