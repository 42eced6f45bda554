//! The sources a local pipeline runs: the working tree as it is, as a commit the jobs can check out.
//!
//! The user's index, HEAD and refs are never touched: the working tree is staged into a temporary index
//! (`GIT_INDEX_FILE`), written as a tree and committed on top of HEAD with `git commit-tree`, which creates
//! objects only. The commit is unreferenced in the user's repository (`git gc` prunes it eventually) and is
//! what the jobs fetch, so `CI_COMMIT_SHA` and `git rev-parse HEAD` in a job agree.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The commit the jobs run.
pub(super) struct Snapshot {
    /// The working tree's commit, or HEAD itself when the working tree has no change.
    pub sha: String,
    /// The working tree differs from HEAD (uncommitted changes or untracked, not ignored files).
    pub changed: bool,
}

use super::git_env as git_with;

/// Commits the working tree of `root` (tracked changes, deletions and untracked files that are not ignored) on
/// top of `head`, without touching the user's index, HEAD or refs.
pub(super) fn working_tree(root: &Path, head: &str) -> anyhow::Result<Snapshot> {
    let tmp = tempfile::Builder::new()
        .prefix("runwright-exec-index-")
        .tempdir()
        .context("creating a temporary directory for the working tree's index")?;
    let index = tmp.path().join("index");
    let index_s = index.to_string_lossy().to_string();
    let env = [("GIT_INDEX_FILE", index_s.as_str())];
    let fail =
        "committing the working tree for the jobs (run with --committed to use HEAD as it is)";

    // A copy of the real index keeps its stat cache (`git add -A` then hashes only what changed, not the
    // whole tree) and its skip-worktree bits (a sparse checkout's absent files are not taken for deletions).
    // Without one (a fresh clone never staged into), HEAD's tree is the start.
    let real_index = PathBuf::from(git_with(root, &["rev-parse", "--git-path", "index"], &[])?);
    let real_index = if real_index.is_absolute() {
        real_index
    } else {
        root.join(real_index)
    };
    if real_index.is_file() && std::fs::copy(&real_index, &index).is_ok() {
        // The user's staged-but-not-committed state is irrelevant: `add -A` makes the copy match the
        // working tree.
    } else {
        git_with(root, &["read-tree", head], &env).context(fail)?;
    }
    git_with(root, &["add", "-A", "--", ":/"], &env).context(fail)?;
    let tree = git_with(root, &["write-tree"], &env).context(fail)?;
    let head_tree = git_with(root, &["rev-parse", &format!("{head}^{{tree}}")], &[])?;
    if tree == head_tree {
        return Ok(Snapshot {
            sha: head.to_string(),
            changed: false,
        });
    }

    // HEAD's message and author, so `CI_COMMIT_MESSAGE`/`CI_COMMIT_AUTHOR` (taken from HEAD) match what a job
    // sees in `git log`; HEAD's committer identity, so a machine without `user.name` configured works too.
    let meta = git_with(
        root,
        &[
            "log",
            "-1",
            "--format=%an%x00%ae%x00%aI%x00%cn%x00%ce",
            head,
        ],
        &[],
    )?;
    let fields: Vec<&str> = meta.split('\0').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let message = git_with(root, &["log", "-1", "--format=%B", head], &[])?;
    let message = if message.trim().is_empty() {
        "runwright exec: working tree".to_string()
    } else {
        message
    };
    let sha = git_with(
        root,
        &["commit-tree", &tree, "-p", head, "-m", &message],
        &[
            ("GIT_AUTHOR_NAME", field(0)),
            ("GIT_AUTHOR_EMAIL", field(1)),
            ("GIT_AUTHOR_DATE", field(2)),
            ("GIT_COMMITTER_NAME", field(3)),
            ("GIT_COMMITTER_EMAIL", field(4)),
        ],
    )
    .context(fail)?;
    Ok(Snapshot { sha, changed: true })
}
