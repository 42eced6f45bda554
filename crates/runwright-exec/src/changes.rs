//! What `rules:changes` (and `only:changes`, `include` rules) see in a local pipeline: the checkout's files,
//! and the files changed by the commit the jobs run, the way GitLab computes them for the pipeline source.
//!
//! - Merge request pipeline: the merge request's diff, i.e. from the merge base of the target branch and the
//!   commit (gitlab app/models/merge_request.rb `modified_paths` of the merge request diff).
//! - Push pipeline: GitLab compares the pushed commit with the branch's previous head (`before_sha`). Locally,
//!   the previous push is what `origin` has of the branch (`refs/remotes/origin/<branch>`): the files that a
//!   push now would change. When the commit is what `origin` has already (nothing to push), the pipeline is
//!   the one of that push, taken as its last commit: the files the commit changed against its parent. Without
//!   `origin`'s branch (a branch never pushed) the changes are unknown and `changes:` is true, as GitLab's is
//!   for a new branch.
//! - `compare_to: REF`: from the merge base of REF and the commit (gitlab app/models/ci/pipeline.rb
//!   `modified_paths_since`), in every pipeline where `changes:` applies; a REF that names no commit is
//!   GitLab's "rules:changes:compare_to is not a valid ref". A branch that exists only as `origin/<name>`
//!   counts, since GitLab resolves REF in the server's repository.
//!
//! The commit is the one the jobs check out: with the working tree (the default), uncommitted changes count.

use super::git;
use runwright_pipeline::{FsProjectFiles, InvalidRef, ProjectFiles};
use std::path::{Path, PathBuf};

/// What the pipeline's own changes are compared with.
#[derive(Debug, Clone)]
pub(super) enum Base {
    /// The merge request's target branch (merge base with it).
    MergeRequest { target: String },
    /// The branch's previous push (`origin`'s copy of it).
    Push { branch: String },
    /// No comparison (tags, schedules, …: `changes:` does not apply there anyway).
    None,
}

pub(super) struct GitProjectFiles {
    root: PathBuf,
    sha: String,
    base: Base,
    files: FsProjectFiles,
}

impl GitProjectFiles {
    pub(super) fn new(root: &Path, sha: &str, base: Base) -> Self {
        GitProjectFiles {
            root: root.to_path_buf(),
            sha: sha.to_string(),
            base,
            files: FsProjectFiles::new(root, None),
        }
    }

    /// The commit `r` names in the checkout, or in `origin`'s copy of a branch.
    fn resolve(&self, r: &str) -> Option<String> {
        let branch = r.strip_prefix("refs/heads/").unwrap_or(r);
        [r.to_string(), format!("refs/remotes/origin/{branch}")]
            .iter()
            .find_map(|c| {
                super::git_opt(
                    &self.root,
                    &["rev-parse", "--verify", "-q", &format!("{c}^{{commit}}")],
                )
            })
    }

    fn diff(&self, from: &str) -> Option<Vec<String>> {
        let out = git(
            &self.root,
            &["diff", "--name-only", "-z", "--no-renames", from, &self.sha],
        )
        .ok()?;
        Some(
            out.split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    fn merge_base(&self, commit: &str) -> Option<String> {
        super::git_opt(&self.root, &["merge-base", commit, &self.sha])
    }
}

impl ProjectFiles for GitProjectFiles {
    fn list_files(&self) -> Vec<String> {
        self.files.list_files()
    }

    fn changed_files(&self, compare_to: Option<&str>) -> Result<Option<Vec<String>>, InvalidRef> {
        if let Some(r) = compare_to {
            let commit = self.resolve(r).ok_or(InvalidRef)?;
            // Unrelated histories have no merge base: the changes are unknown.
            return Ok(self.merge_base(&commit).and_then(|b| self.diff(&b)));
        }
        Ok(match &self.base {
            Base::MergeRequest { target } => self
                .resolve(target)
                .and_then(|t| self.merge_base(&t))
                .and_then(|b| self.diff(&b)),
            Base::Push { branch } => match self.resolve(&format!("refs/remotes/origin/{branch}")) {
                Some(pushed) if pushed == self.sha => self
                    .resolve(&format!("{}^", self.sha))
                    .and_then(|parent| self.diff(&parent)),
                Some(pushed) => self.diff(&pushed),
                None => None,
            },
            Base::None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(dir: &Path, file: &str, message: &str) -> String {
        let p = dir.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(&p, message).expect("file");
        run(dir, &["add", "-A"]);
        run(dir, &["commit", "-q", "-m", message]);
        run(dir, &["rev-parse", "HEAD"])
    }

    #[test]
    fn merge_requests_diff_from_the_merge_base_and_compare_to_must_name_a_commit() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        run(dir, &["init", "-q", "-b", "main"]);
        commit(dir, "README.md", "init");
        run(dir, &["checkout", "-q", "-b", "feature"]);
        let head = commit(dir, "src/a.rs", "feature");
        run(dir, &["checkout", "-q", "main"]);
        commit(dir, "docs/b.md", "main moves on");
        let mr = GitProjectFiles::new(
            dir,
            &head,
            Base::MergeRequest {
                target: "main".into(),
            },
        );
        // main's own change after the branch point is not the merge request's.
        assert_eq!(mr.changed_files(None), Ok(Some(vec!["src/a.rs".into()])));
        assert_eq!(
            mr.changed_files(Some("refs/heads/main")),
            Ok(Some(vec!["src/a.rs".into()]))
        );
        assert_eq!(mr.changed_files(Some("refs/heads/nope")), Err(InvalidRef));
        // Never pushed: a new branch, changes unknown.
        let push = GitProjectFiles::new(
            dir,
            &head,
            Base::Push {
                branch: "feature".into(),
            },
        );
        assert_eq!(push.changed_files(None), Ok(None));
        assert_eq!(
            GitProjectFiles::new(dir, &head, Base::None).changed_files(None),
            Ok(None)
        );
    }
}
