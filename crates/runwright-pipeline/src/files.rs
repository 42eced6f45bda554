//! The project's files as `rules:exists`, `rules:changes` and `include:local` wildcards see them, behind a
//! trait so that rules are testable without a checkout and so that the caller (the `exec` command) decides
//! what "changed" means (working tree, `compare_to`, …).
use std::path::PathBuf;
use std::sync::OnceLock;

/// What rules may ask about the project's files. Paths are relative to the project root, with `/`.
pub trait ProjectFiles: Send + Sync {
    /// Every file of the project (for `exists:` and include wildcards).
    fn list_files(&self) -> Vec<String>;
    /// The files changed by the pipeline's push (or against `compare_to`, a ref); `Ok(None)` when unknown, in
    /// which case `changes:` is true as GitLab's is for a new branch or a pipeline without a push. `Err`:
    /// `compare_to` names no commit (GitLab: "rules:changes:compare_to is not a valid ref").
    fn changed_files(&self, compare_to: Option<&str>) -> Result<Option<Vec<String>>, InvalidRef>;
}

/// `rules:changes:compare_to` names no commit of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRef;

/// A fixed list of files and changed files, for tests and for callers that computed both already.
#[derive(Debug, Clone, Default)]
pub struct StaticProjectFiles {
    /// All files.
    pub files: Vec<String>,
    /// Changed files; `None` when unknown.
    pub changed: Option<Vec<String>>,
    /// Changed files against each `compare_to` ref (GitLab: since the merge base of that ref and the
    /// pipeline's commit); a ref not listed is not a valid ref. `None`: `compare_to` is ignored (`changed`).
    pub compare: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

impl ProjectFiles for StaticProjectFiles {
    fn list_files(&self) -> Vec<String> {
        self.files.clone()
    }
    fn changed_files(&self, compare_to: Option<&str>) -> Result<Option<Vec<String>>, InvalidRef> {
        match (compare_to, &self.compare) {
            (Some(r), Some(map)) => map.get(r).cloned().map(Some).ok_or(InvalidRef),
            _ => Ok(self.changed.clone()),
        }
    }
}

/// The files of a directory (without `.git`), listed once; changed files as given.
#[derive(Debug)]
pub struct FsProjectFiles {
    root: PathBuf,
    changed: Option<Vec<String>>,
    cache: OnceLock<Vec<String>>,
}

impl FsProjectFiles {
    /// Lists `root`; `changed` as for [`StaticProjectFiles`].
    pub fn new(root: impl Into<PathBuf>, changed: Option<Vec<String>>) -> Self {
        FsProjectFiles {
            root: root.into(),
            changed,
            cache: OnceLock::new(),
        }
    }
}

impl ProjectFiles for FsProjectFiles {
    fn list_files(&self) -> Vec<String> {
        self.cache
            .get_or_init(|| {
                let mut out = Vec::new();
                let walker = walkdir::WalkDir::new(&self.root)
                    .sort_by_file_name()
                    .into_iter()
                    .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git");
                for entry in walker.flatten() {
                    if entry.file_type().is_file() {
                        if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                            let parts: Vec<String> = rel
                                .components()
                                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                                .collect();
                            out.push(parts.join("/"));
                        }
                    }
                }
                out
            })
            .clone()
    }
    fn changed_files(&self, _compare_to: Option<&str>) -> Result<Option<Vec<String>>, InvalidRef> {
        Ok(self.changed.clone())
    }
}
