//! Which files an artifact or cache contains: GitLab's `paths`, `exclude` and `untracked` rules, resolved
//! against the project directory into a sorted list of entries. Mirrors the runner's `fileArchiver`
//! (`commands/helpers/file_archiver.go`): patterns are doublestar globs relative to the project directory
//! (`**`, `{a,b}`, `[…]`, `?`), each match is walked recursively without following symlinks, paths that leave the
//! project directory are refused with a warning, and the result is sorted by byte order (`sortedFiles`).
//!
//! Unlike GitLab's runner we never follow a symlink: a matched path whose parent goes through a symlink is
//! skipped with a warning (GitLab would archive whatever the link points at, possibly outside the project).
//!
//! Memory (issue 17): GitLab's runner selects in its helper process, whose memory is the job's; here the
//! selection is made in the service, so a job's file count must not be able to exhaust it. Each entry costs
//! its name's bytes in one arena plus a fixed ~56-byte record (no per-entry `String` or `PathBuf`: the disk
//! path is the project directory joined with the name), and [`ArchiveSpec::max_files`] bounds the count: past
//! it the walk stops and selection fails with [`Error::TooManyFiles`] before memory grows any further.

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
    /// The most files, directories and symlinks one archive may hold (`None`: no bound). More fail the
    /// selection with [`Error::TooManyFiles`], early: the walk stops once the bound is passed.
    pub max_files: Option<usize>,
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
///
/// Entries are kept compactly (see the module docs) and handed out as [`SelectedEntry`] values by [`Selection::get`]
/// and [`Selection::iter`].
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The project directory: an entry's path on disk is this joined with its relative path.
    root: PathBuf,
    /// Every entry's archive name, followed by its relative path on disk when that differs (a name that is
    /// not UTF-8, or holds a `\`).
    arena: Vec<u8>,
    items: Vec<Item>,
    /// Symlink targets, by [`Item::link`].
    links: Vec<PathBuf>,
    pub warnings: Vec<String>,
    /// Informational lines, as GitLab's runner logs them (`found N matching artifact files and directories`,
    /// `excluded N files`).
    pub infos: Vec<String>,
}

/// Where an entry's name (and its relative path, when different) is in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    name_len: u32,
    /// 0: the relative path is the name.
    path_len: u32,
}

/// One entry, metadata from `lstat` at selection time.
#[derive(Clone, Copy, Debug)]
struct Item {
    span: Span,
    mtime: i64,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    kind: Kind,
    /// Index in `links` for a symlink.
    link: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

impl Selection {
    /// Builds a selection from already-known paths (for example a single report file), reading their metadata.
    pub fn from_paths(project_dir: &Path, rel_paths: &[&str]) -> Result<Selection> {
        let mut names = Names::default();
        for rel in rel_paths {
            names.push(rel, Path::new(rel));
        }
        names.compact();
        let mut sel = Selection {
            root: project_dir.to_path_buf(),
            arena: names.arena,
            ..Selection::default()
        };
        for span in names.spans {
            let path = project_dir.join(OsStr::from_bytes(sel.path_bytes(span)));
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            sel.push(span, &path, &md)?;
        }
        Ok(sel)
    }

    /// Entries in archive order.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `i`th entry in archive order.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn get(&self, i: usize) -> SelectedEntry {
        let it = &self.items[i];
        let name = self.name_bytes(it.span);
        SelectedEntry {
            // Names are stored from `String`s: valid UTF-8.
            name: String::from_utf8_lossy(name).into_owned(),
            path: self.root.join(OsStr::from_bytes(self.path_bytes(it.span))),
            kind: match it.kind {
                Kind::Dir => EntryKind::Dir,
                Kind::File => EntryKind::File,
                Kind::Symlink => EntryKind::Symlink(
                    self.links
                        .get(it.link as usize)
                        .cloned()
                        .unwrap_or_default(),
                ),
            },
            mode: it.mode,
            mtime: it.mtime,
            size: it.size,
            uid: it.uid,
            gid: it.gid,
        }
    }

    /// The directory the entries are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a selected regular file for reading without following a symlink anywhere below the root (a
    /// directory swapped for a symlink since the selection fails here rather than reading outside the tree).
    pub fn open_file(&self, entry: &SelectedEntry) -> std::io::Result<std::fs::File> {
        let rel = entry.path.strip_prefix(&self.root).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is not below {}",
                    entry.path.display(),
                    self.root.display()
                ),
            )
        })?;
        crate::beneath::open_file(&self.root, rel)
    }

    /// Whether the `i`th entry is a directory (without building the entry).
    pub fn is_dir(&self, i: usize) -> bool {
        self.items.get(i).is_some_and(|it| it.kind == Kind::Dir)
    }

    /// Whether the `i`th entry is a regular file (without building the entry).
    pub fn is_file(&self, i: usize) -> bool {
        self.items.get(i).is_some_and(|it| it.kind == Kind::File)
    }

    /// The entries in archive order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SelectedEntry> + '_ {
        (0..self.items.len()).map(|i| self.get(i))
    }

    /// `n` directories `zz/<n>` after the entries (tests of the writer: archive order is not checked here).
    #[cfg(test)]
    pub(crate) fn add_made_up_dirs(&mut self, n: usize) {
        for i in 0..n {
            let name = format!("zz/{i:07}");
            let start = self.arena.len();
            self.arena.extend_from_slice(name.as_bytes());
            self.items.push(Item {
                span: Span {
                    start,
                    name_len: name.len() as u32,
                    path_len: 0,
                },
                mtime: 1_700_000_000,
                size: 0,
                mode: 0o755,
                uid: 0,
                gid: 0,
                kind: Kind::Dir,
                link: 0,
            });
        }
    }

    fn name_bytes(&self, s: Span) -> &[u8] {
        &self.arena[s.start..s.start + s.name_len as usize]
    }

    fn path_bytes(&self, s: Span) -> &[u8] {
        if s.path_len == 0 {
            self.name_bytes(s)
        } else {
            let p = s.start + s.name_len as usize;
            &self.arena[p..p + s.path_len as usize]
        }
    }

    /// Adds the entry at `span` of the arena with its `lstat` result.
    fn push(&mut self, span: Span, path: &Path, md: &std::fs::Metadata) -> Result<()> {
        let ft = md.file_type();
        let (kind, link) = if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
            self.links.push(target);
            (Kind::Symlink, (self.links.len() - 1) as u32)
        } else if ft.is_dir() {
            (Kind::Dir, 0)
        } else {
            (Kind::File, 0)
        };
        self.items.push(Item {
            span,
            mtime: md.mtime(),
            size: if ft.is_file() { md.len() } else { 0 },
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            kind,
            link,
        });
        Ok(())
    }
}

/// The names selected so far: one arena, one span each, sorted and deduplicated on demand ("compacted").
#[derive(Default)]
struct Names {
    arena: Vec<u8>,
    spans: Vec<Span>,
}

impl Names {
    fn push(&mut self, name: &str, rel: &Path) {
        let start = self.arena.len();
        self.arena.extend_from_slice(name.as_bytes());
        let rel = rel.as_os_str().as_bytes();
        let path_len = if rel == name.as_bytes() {
            0
        } else {
            self.arena.extend_from_slice(rel);
            rel.len() as u32
        };
        self.spans.push(Span {
            start,
            name_len: name.len() as u32,
            path_len,
        });
    }

    /// Sorts by name in byte order (GitLab's `sort.Strings`) and keeps one entry per name — the last one
    /// added, as the runner's map does (`files[path] = info`) — then packs the arena.
    fn compact(&mut self) {
        let arena = &self.arena;
        let name = |s: &Span| &arena[s.start..s.start + s.name_len as usize];
        // Stable: equal names keep the order they were added in, so the last one added is the last of its run.
        self.spans.sort_by(|a, b| name(a).cmp(name(b)));
        let mut kept: Vec<Span> = Vec::with_capacity(self.spans.len());
        for s in &self.spans {
            match kept.last_mut() {
                Some(last) if name(last) == name(s) => *last = *s,
                _ => kept.push(*s),
            }
        }
        let mut packed = Vec::with_capacity(
            kept.iter()
                .map(|s| s.name_len as usize + s.path_len as usize)
                .sum(),
        );
        for s in &mut kept {
            let len = s.name_len as usize + s.path_len as usize;
            let start = packed.len();
            packed.extend_from_slice(&arena[s.start..s.start + len]);
            s.start = start;
        }
        kept.shrink_to_fit();
        self.arena = packed;
        self.spans = kept;
    }
}

/// Resolves `spec` against `project_dir` (GitLab's `fileArchiver.enumerate`).
///
/// Never fails for a missing or outside path: those become warnings, as in GitLab's runner, which does not
/// fail the job for them. Errors are for an unreadable project directory or a pattern that cannot be parsed.
pub fn select_files(project_dir: &Path, spec: &ArchiveSpec) -> Result<Selection> {
    let wd = std::path::absolute(project_dir).map_err(|e| Error::io(project_dir, e))?;
    let mut st = State {
        wd: wd.clone(),
        names: Names::default(),
        max_files: spec.max_files,
        compact_at: spec.max_files.map(|m| m.saturating_mul(2).max(1024)),
        too_many: false,
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
        if st.too_many {
            break;
        }
    }
    if spec.untracked && !st.too_many {
        process_untracked(&mut st);
    }
    st.names.compact();
    if let Some(limit) = st
        .max_files
        .filter(|m| st.too_many || st.names.spans.len() > *m)
    {
        return Err(Error::TooManyFiles { limit });
    }
    for (rule, count) in &st.excluded {
        st.infos.push(format!("{rule}: excluded {count} files"));
    }
    let names = std::mem::take(&mut st.names);
    let mut sel = Selection {
        root: wd,
        // The names' arena becomes the selection's: entries skipped below leave a few unused bytes in it.
        arena: names.arena,
        items: Vec::with_capacity(names.spans.len()),
        ..Selection::default()
    };
    for span in names.spans {
        let rel = OsStr::from_bytes(sel.path_bytes(span)).to_owned();
        let path = st.wd.join(&rel);
        let name = || String::from_utf8_lossy(sel.name_bytes(span)).into_owned();
        match std::fs::symlink_metadata(&path) {
            Ok(md) => {
                let ft = md.file_type();
                if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                    // Sockets, fifos, devices: GitLab's archivers skip them ("File ignored").
                    st.warnings.push(format!(
                        "File ignored: {}: not a regular file, directory or symlink",
                        name()
                    ));
                    continue;
                }
                sel.push(span, &path, &md)?;
            }
            Err(e) => st.warnings.push(format!("File ignored: {}: {e}", name())),
        }
    }
    sel.warnings = st.warnings;
    sel.infos = st.infos;
    Ok(sel)
}

struct State {
    wd: PathBuf,
    /// The archive names found, in GitLab's `sort.Strings` order (bytes) once compacted.
    names: Names,
    max_files: Option<usize>,
    /// Compact (sort, deduplicate) when this many names were added: overlapping patterns add a name more than
    /// once, and the bound is on distinct entries; memory stays within twice the bound meanwhile.
    compact_at: Option<usize>,
    /// More than `max_files` distinct entries: stop walking.
    too_many: bool,
    excluded: BTreeMap<String, u64>,
    exclude: Vec<(String, GlobMatcher)>,
    warnings: Vec<String>,
    infos: Vec<String>,
}

impl State {
    /// Adds a name; past the bound, marks the selection as too large.
    fn add(&mut self, name: &str, rel: &Path) {
        self.names.push(name, rel);
        if let (Some(at), Some(max)) = (self.compact_at, self.max_files) {
            if self.names.spans.len() >= at {
                self.names.compact();
                if self.names.spans.len() > max {
                    self.too_many = true;
                }
            }
        }
    }
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
        if st.too_many {
            return Ok(());
        }
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
        // Not sorted per directory as Walk is: walkdir would read a whole directory into memory first (the
        // selection is sorted at the end anyway).
        for item in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .follow_root_links(false)
        {
            if st.too_many {
                return Ok(());
            }
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
fn glob_matches(st: &mut State, rel: &str) -> Result<Vec<String>> {
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
    // Each match is at least one entry: more matches than the bound allows entries need not be kept.
    let max = st.max_files.unwrap_or(usize::MAX);
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
            if out.len() > max {
                st.too_many = true;
                break;
            }
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
    st.add(&name, rel);
    true
}

/// GitLab's `processUntracked`: `git ls-files -o -z` in the project directory. Note: GitLab passes no
/// `--exclude-standard`, so `untracked: true` includes files that `.gitignore` ignores — that is documented
/// GitLab behaviour and we keep it.
fn process_untracked(st: &mut State) {
    let out = match git_untracked(&st.wd, st.max_files) {
        Ok(Some(out)) => out,
        Ok(None) => {
            st.too_many = true;
            return;
        }
        Err(msg) => {
            st.warnings.push(msg);
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
        if st.too_many {
            return;
        }
    }
    if found == 0 {
        st.warnings.push("untracked: no files".to_string());
    } else {
        st.infos.push(format!("untracked: found {found} files"));
    }
}

/// `git ls-files -o -z`'s output, read as it comes: `Ok(None)` (and git stopped) once it names more files than
/// `max` — its whole output would be one more copy of every name. `Err` is the warning for a git that fails.
fn git_untracked(wd: &Path, max: Option<usize>) -> std::result::Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut child = Command::new("git")
        .args(["ls-files", "-o", "-z"])
        .current_dir(wd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("untracked: {e}"))?;
    // Drained on the side: a chatty git must not block on a full stderr pipe while stdout is read.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = e.read_to_end(&mut s);
            s
        })
    });
    let mut out = Vec::new();
    let mut names = 0usize;
    let mut too_many = false;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    names += buf[..n].iter().filter(|b| **b == 0).count();
                    out.extend_from_slice(&buf[..n]);
                    if max.is_some_and(|m| names > m) {
                        too_many = true;
                        let _ = child.kill();
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("untracked: reading git ls-files: {e}"));
                }
            }
        }
    }
    let status = child.wait().map_err(|e| format!("untracked: {e}"))?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if too_many {
        return Ok(None);
    }
    if !status.success() {
        return Err(format!(
            "untracked: git ls-files: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(Some(out))
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
