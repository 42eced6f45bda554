//! Which files an artifact or cache contains: GitLab's `paths`, `exclude` and `untracked` rules, resolved
//! against the project directory into a sorted list of entries. Mirrors the runner's `fileArchiver`
//! (`commands/helpers/file_archiver.go`): patterns are doublestar globs relative to the project directory
//! (`**`, `{a,b}`, `[…]`, `?`), each match is walked recursively without following symlinks, paths that leave the
//! project directory are refused with a warning, and the result is sorted by byte order (`sortedFiles`).
//!
//! Unlike GitLab's runner we never follow a symlink: a matched path whose parent goes through a symlink is
//! skipped with a warning (GitLab would archive whatever the link points at, possibly outside the project).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

/// What to put in an archive: the `artifacts:` / `cache:` keys of a job.
#[derive(Clone, Debug, Default)]
pub struct ArchiveSpec {
    /// `paths:` patterns, relative to the project directory (absolute paths inside it are accepted).
    pub paths: Vec<String>,
    /// `exclude:` patterns, matched against the project-relative path of every candidate.
    pub exclude: Vec<String>,
    /// `untracked: true`: add every file git does not track.
    pub untracked: bool,
}

/// The kind of an entry, from `lstat` (symlinks are never followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// A symlink and its target, stored as the target text.
    Symlink(PathBuf),
}

/// One file, directory or symlink to archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedEntry {
    /// Path relative to the project directory with `/` separators, no trailing slash: the archive name.
    pub name: String,
    /// Where it is on disk.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`), without the file type.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Size at selection time (regular files); the writer reads the file as it is when it gets to it.
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
}

/// The outcome of [`select_files`]: entries in archive order plus the warnings to show in the job log.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub entries: Vec<SelectedEntry>,
    pub warnings: Vec<String>,
    /// Informational lines, as GitLab's runner logs them (`found N matching artifact files and directories`,
    /// `excluded N files`).
    pub infos: Vec<String>,
}

impl Selection {
    /// Builds a selection from already-known paths (for example a single report file), reading their metadata.
    pub fn from_paths(project_dir: &Path, rel_paths: &[&str]) -> Result<Selection> {
        let mut sel = Selection::default();
        for rel in rel_paths {
            let path = project_dir.join(rel);
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            sel.entries.push(entry_from(rel.to_string(), path, &md)?);
        }
        sel.entries
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(sel)
    }
}

fn entry_from(name: String, path: PathBuf, md: &std::fs::Metadata) -> Result<SelectedEntry> {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink(std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?)
    } else if ft.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    Ok(SelectedEntry {
        name,
        path,
        kind,
        mode: md.mode() & 0o7777,
        mtime: md.mtime(),
        size: if ft.is_file() { md.len() } else { 0 },
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// Resolves `spec` against `project_dir` (GitLab's `fileArchiver.enumerate`).
///
/// Never fails for a missing or outside path: those become warnings, as in GitLab's runner, which does not
/// fail the job for them. Errors are for an unreadable project directory or a pattern that cannot be parsed.
pub fn select_files(project_dir: &Path, spec: &ArchiveSpec) -> Result<Selection> {
    let wd = std::path::absolute(project_dir).map_err(|e| Error::io(project_dir, e))?;
    let mut st = State {
        wd: wd.clone(),
        files: BTreeMap::new(),
        excluded: BTreeMap::new(),
        exclude: Vec::new(),
        warnings: Vec::new(),
        infos: Vec::new(),
    };
    for pattern in &spec.exclude {
        match relative_in_project(&wd, pattern) {
            Ok(rel) => st.exclude.push((pattern.clone(), glob(&rel)?)),
            // GitLab logs "isExcluded: …" and ignores the rule.
            Err(msg) => st.warnings.push(format!("isExcluded: {msg}")),
        }
    }
    for pattern in &spec.paths {
        process_path(&mut st, pattern)?;
    }
    if spec.untracked {
        process_untracked(&mut st);
    }
    for (rule, count) in &st.excluded {
        st.infos.push(format!("{rule}: excluded {count} files"));
    }
    let mut entries = Vec::with_capacity(st.files.len());
    for (name, path) in st.files {
        match std::fs::symlink_metadata(&path) {
            Ok(md) => {
                let ft = md.file_type();
                if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                    // Sockets, fifos, devices: GitLab's archivers skip them ("File ignored").
                    st.warnings.push(format!(
                        "File ignored: {name}: not a regular file, directory or symlink"
                    ));
                    continue;
                }
                entries.push(entry_from(name, path, &md)?);
            }
            Err(e) => st.warnings.push(format!("File ignored: {name}: {e}")),
        }
    }
    Ok(Selection {
        entries,
        warnings: st.warnings,
        infos: st.infos,
    })
}

struct State {
    wd: PathBuf,
    /// Keyed by the archive name; `BTreeMap` gives GitLab's `sort.Strings` order (bytes).
    files: BTreeMap<String, PathBuf>,
    excluded: BTreeMap<String, u64>,
    exclude: Vec<(String, GlobMatcher)>,
    warnings: Vec<String>,
    infos: Vec<String>,
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(pattern)
        // doublestar: `*` stays within one path segment, `**` crosses them.
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::Pattern {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

/// Lexically cleans a path: drops `.`, resolves `..` against earlier components.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// GitLab's `findRelativePathInProject`: splits a pattern into its literal base and the glob part, makes the
/// base relative to the project directory, and refuses bases outside it. Returns the relative pattern with
/// `/` separators ("." for the project directory itself).
fn relative_in_project(wd: &Path, pattern: &str) -> std::result::Result<String, String> {
    let (base, patt) = if has_meta(pattern) {
        split_pattern(pattern)
    } else {
        (pattern.to_string(), String::new())
    };
    let base_path = if Path::new(&base).is_absolute() {
        PathBuf::from(&base)
    } else {
        wd.join(&base)
    };
    let cleaned = clean(&base_path);
    let rel = match cleaned.strip_prefix(wd) {
        Ok(r) => r.to_path_buf(),
        Err(_) => {
            return Err(format!(
                "artifact path is not a subpath of project directory: {pattern}"
            ))
        }
    };
    let mut rel = rel.to_string_lossy().into_owned();
    if !patt.is_empty() {
        if rel.is_empty() {
            rel = patt;
        } else {
            rel = format!("{rel}/{patt}");
        }
    }
    if rel.is_empty() {
        rel = ".".to_string();
    }
    Ok(rel)
}

/// doublestar's `SplitPattern`: the longest leading run of path segments without glob metacharacters.
fn split_pattern(pattern: &str) -> (String, String) {
    let segs: Vec<&str> = pattern.split('/').collect();
    let first_meta = segs.iter().position(|s| has_meta(s)).unwrap_or(segs.len());
    let base = segs[..first_meta].join("/");
    let patt = segs[first_meta..].join("/");
    let base = if base.is_empty() && pattern.starts_with('/') {
        "/".to_string()
    } else {
        base
    };
    let base = if base.is_empty() {
        ".".to_string()
    } else {
        base
    };
    (base, patt)
}

/// True if some proper ancestor of `rel` (inside the project) is a symlink: such paths are not followed.
fn through_symlink(wd: &Path, rel: &str) -> bool {
    let mut cur = wd.to_path_buf();
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => return true,
            _ => {}
        }
    }
    false
}

fn process_path(st: &mut State, pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        st.warnings
            .push("No matching files. Path is empty.".to_string());
        return Ok(());
    }
    let rel = match relative_in_project(&st.wd, pattern) {
        Ok(r) => r,
        Err(msg) => {
            // GitLab: logrus.Warningf("processPath: %v", err)
            st.warnings.push(format!("processPath: {msg}"));
            return Ok(());
        }
    };
    let mut found = 0u64;
    for m in glob_matches(st, &rel)? {
        if through_symlink(&st.wd, &m) {
            st.warnings.push(format!(
                "{m}: not followed: a parent directory is a symlink"
            ));
            continue;
        }
        let root = if m == "." {
            st.wd.clone()
        } else {
            st.wd.join(&m)
        };
        // filepath.Walk: the match itself, then (for a real directory) everything below, symlinks not followed.
        for item in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
        {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    st.warnings.push(format!("Walking {m}: {e}"));
                    continue;
                }
            };
            let Ok(r) = item.path().strip_prefix(&st.wd) else {
                continue;
            };
            if process(st, r) {
                found += 1;
            }
        }
    }
    if found == 0 {
        st.warnings.push(format!(
            "{pattern}: no matching files. Ensure that the artifact path is relative to the working directory ({})",
            st.wd.display()
        ));
    } else {
        st.infos.push(format!(
            "{pattern}: found {found} matching artifact files and directories"
        ));
    }
    Ok(())
}

/// All project-relative paths matching `rel` (a cleaned pattern relative to the project directory).
fn glob_matches(st: &State, rel: &str) -> Result<Vec<String>> {
    if !has_meta(rel) {
        let p = if rel == "." {
            st.wd.clone()
        } else {
            st.wd.join(rel)
        };
        return Ok(if std::fs::symlink_metadata(&p).is_ok() {
            vec![rel.to_string()]
        } else {
            Vec::new()
        });
    }
    let (base, _) = split_pattern(rel);
    let matcher = glob(rel)?;
    let base_dir = if base == "." {
        st.wd.clone()
    } else {
        st.wd.join(&base)
    };
    let mut out = BTreeSet::new();
    if base != "." && through_symlink(&st.wd, &format!("{base}/x")) {
        return Ok(Vec::new());
    }
    for item in walkdir::WalkDir::new(&base_dir)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
    {
        let Ok(item) = item else { continue };
        let Ok(r) = item.path().strip_prefix(&st.wd) else {
            continue;
        };
        let r = r.to_string_lossy();
        if matcher.is_match(r.as_ref()) {
            out.insert(r.into_owned());
        }
    }
    Ok(out.into_iter().collect())
}

/// GitLab's `fileArchiver.process`: exclusion check, then add by `lstat`.
fn process(st: &mut State, rel: &Path) -> bool {
    let name = rel.to_string_lossy().replace('\\', "/");
    let name = if name.is_empty() {
        ".".to_string()
    } else {
        name
    };
    if name.starts_with("../") || name == ".." {
        st.warnings
            .push(format!("{name}: not supported: outside build directory"));
        return false;
    }
    for (rule, m) in &st.exclude {
        if m.is_match(&name) {
            *st.excluded.entry(rule.clone()).or_default() += 1;
            return false;
        }
    }
    if name == "." {
        // The project directory itself is walked but has no entry of its own.
        return true;
    }
    let path = st.wd.join(rel);
    st.files.insert(name, path);
    true
}

/// GitLab's `processUntracked`: `git ls-files -o -z` in the project directory. Note: GitLab passes no
/// `--exclude-standard`, so `untracked: true` includes files that `.gitignore` ignores — that is documented
/// GitLab behaviour and we keep it.
fn process_untracked(st: &mut State) {
    let out = Command::new("git")
        .args(["ls-files", "-o", "-z"])
        .current_dir(&st.wd)
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            st.warnings.push(format!(
                "untracked: git ls-files: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            st.warnings.push(format!("untracked: {e}"));
            return;
        }
    };
    let mut found = 0u64;
    for raw in out.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let rel = Path::new(OsStr::from_bytes(raw));
        let rel_s = rel.to_string_lossy().into_owned();
        if through_symlink(&st.wd, &rel_s) {
            continue;
        }
        if process(st, rel) {
            found += 1;
        }
    }
    if found == 0 {
        st.warnings.push("untracked: no files".to_string());
    } else {
        st.infos.push(format!("untracked: found {found} files"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_patterns_like_doublestar() {
        assert_eq!(split_pattern("a/b/**/*.o"), ("a/b".into(), "**/*.o".into()));
        assert_eq!(split_pattern("*.o"), (".".into(), "*.o".into()));
        assert_eq!(split_pattern("{a,b}/c"), (".".into(), "{a,b}/c".into()));
    }

    #[test]
    fn refuses_paths_outside() {
        let wd = Path::new("/p/proj");
        assert!(relative_in_project(wd, "../x").is_err());
        assert!(relative_in_project(wd, "/etc/passwd").is_err());
        assert!(relative_in_project(wd, "a/../../x/*").is_err());
        assert_eq!(
            relative_in_project(wd, "/p/proj/a/*.txt").unwrap(),
            "a/*.txt"
        );
        assert_eq!(relative_in_project(wd, "./a/b").unwrap(), "a/b");
        assert_eq!(relative_in_project(wd, "/p/proj").unwrap(), ".");
    }
}
