//! The sources a local pipeline runs: the working tree as it is, as a commit the jobs can check out.
//!
//! The user's index, HEAD and refs are never touched: the working tree is staged into a temporary index
//! (`GIT_INDEX_FILE`), written as a tree and committed on top of HEAD with `git commit-tree`, which creates
//! objects only. The commit is unreferenced in the user's repository (`git gc` prunes it eventually) and is
//! what the jobs fetch, so `CI_COMMIT_SHA` and `git rev-parse HEAD` in a job agree.

use anyhow::Context;

/// The commit the jobs run.
pub(super) struct Snapshot {
    /// The working tree's commit, or HEAD itself when the working tree has no change.
    pub sha: String,
    /// The working tree differs from HEAD (uncommitted changes or untracked, not ignored files).
    pub changed: bool,
}

use super::checkout::{git_env as git_with, Checkout};

/// Commits the working tree of the checkout (tracked changes, deletions and untracked files that are not
/// ignored) on top of its HEAD, without touching the user's index, HEAD or refs.
pub(super) fn working_tree(co: &Checkout) -> anyhow::Result<Snapshot> {
    let root = co.root.as_path();
    let head = co.sha.as_str();
    // The index copy names every file of the working tree: this user's only.
    let tmp = tempfile::Builder::new()
        .prefix("runwright-exec-index-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
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
    if co.index.is_file() && std::fs::copy(&co.index, &index).is_ok() {
        // The user's staged-but-not-committed state is irrelevant: `add -A` makes the copy match the
        // working tree.
    } else {
        git_with(root, &["read-tree", head], &env).context(fail)?;
    }
    git_with(root, &["add", "-A", "--", ":/"], &env).context(fail)?;
    let tree = git_with(root, &["write-tree"], &env).context(fail)?;
    if tree == co.head_tree {
        return Ok(Snapshot {
            sha: head.to_string(),
            changed: false,
        });
    }

    // HEAD's message and author, so `CI_COMMIT_MESSAGE`/`CI_COMMIT_AUTHOR` (taken from HEAD) match what a job
    // sees in `git log`; HEAD's committer identity, so a machine without `user.name` configured works too.
    let h = &co.head;
    let message = if h.message.trim().is_empty() {
        "runwright exec: working tree"
    } else {
        h.message.as_str()
    };
    let sha = git_with(
        root,
        &["commit-tree", &tree, "-p", head, "-m", message],
        &[
            ("GIT_AUTHOR_NAME", &h.author_name),
            ("GIT_AUTHOR_EMAIL", &h.author_email),
            ("GIT_AUTHOR_DATE", &h.author_date),
            ("GIT_COMMITTER_NAME", &h.committer_name),
            ("GIT_COMMITTER_EMAIL", &h.committer_email),
        ],
    )
    .context(fail)?;
    Ok(Snapshot { sha, changed: true })
}
