//! Test support: bare git repositories made with the `git` CLI, to be served by a coordinator's `git_root`.
//!
//! Commits are deterministic (fixed author, committer and dates; no user or system git config), so the same
//! files give the same sha on every machine.

use crate::error::CoordinatorError;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "Runwright Fixture"),
    ("GIT_AUTHOR_EMAIL", "fixture@example.invalid"),
    ("GIT_COMMITTER_NAME", "Runwright Fixture"),
    ("GIT_COMMITTER_EMAIL", "fixture@example.invalid"),
    ("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z"),
    ("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_TERMINAL_PROMPT", "0"),
];

fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, CoordinatorError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args).envs(ENV.iter().copied());
    let out = cmd.output().map_err(|source| CoordinatorError::Io {
        action: "running git in",
        path: dir.map(Path::to_path_buf).unwrap_or_default(),
        source,
    })?;
    if !out.status.success() {
        return Err(CoordinatorError::Git {
            command: format!("git {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CoordinatorError + 'a {
    move |source| CoordinatorError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A scratch clone of a bare repository, removed on drop.
struct WorkTree {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn work_tree(bare: &Path, branch: &str) -> Result<WorkTree, CoordinatorError> {
    let dir = tempfile::tempdir().map_err(io_err("creating a temporary directory for", bare))?;
    let path = dir.path().join("work");
    let bare_str = bare.to_string_lossy().into_owned();
    let path_str = path.to_string_lossy().into_owned();
    git(None, &["clone", "--quiet", &bare_str, &path_str])?;
    // An empty clone has no branch yet; otherwise switch to (or create) the branch.
    let has_branch =
        git(Some(&path), &["ls-remote", "--heads", "origin", branch]).map(|o| !o.is_empty())?;
    if has_branch {
        git(Some(&path), &["checkout", "--quiet", branch])?;
    } else {
        git(Some(&path), &["checkout", "--quiet", "-B", branch])?;
    }
    Ok(WorkTree { _dir: dir, path })
}

fn write_files(root: &Path, files: &[(&str, &str)]) -> Result<(), CoordinatorError> {
    for (name, content) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::write(&path, content).map_err(io_err("writing", &path))?;
    }
    Ok(())
}

fn commit_and_push(work: &Path, branch: &str, message: &str) -> Result<String, CoordinatorError> {
    git(Some(work), &["add", "-A"])?;
    git(
        Some(work),
        &["commit", "--quiet", "--allow-empty", "-m", message],
    )?;
    git(
        Some(work),
        &[
            "push",
            "--quiet",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ],
    )?;
    git(Some(work), &["rev-parse", "HEAD"])
}

/// Create the bare repository `<git_root>/<repo>` (e.g. `grp/app.git`) with branch `main` holding one commit
/// of `files` (path, content). Returns the commit sha.
pub fn create_repo(
    git_root: &Path,
    repo: &str,
    files: &[(&str, &str)],
) -> Result<String, CoordinatorError> {
    let bare = git_root.join(repo);
    std::fs::create_dir_all(&bare).map_err(io_err("creating", &bare))?;
    git(
        Some(&bare),
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    )?;
    commit(git_root, repo, "main", files, "initial commit")
}

/// Add a commit with `files` on `branch` (created from the current `main` when missing). Returns its sha.
pub fn commit(
    git_root: &Path,
    repo: &str,
    branch: &str,
    files: &[(&str, &str)],
    message: &str,
) -> Result<String, CoordinatorError> {
    let bare = git_root.join(repo);
    let work = work_tree(&bare, branch)?;
    write_files(&work.path, files)?;
    commit_and_push(&work.path, branch, message)
}

/// Add a submodule at `path` pointing at `url` (relative URLs like `../lib.git` resolve against the
/// superproject's own URL, as GitLab users write them) on branch `main`. Returns the new commit sha.
pub fn add_submodule(
    git_root: &Path,
    repo: &str,
    url: &str,
    path: &str,
) -> Result<String, CoordinatorError> {
    let bare = git_root.join(repo);
    let work = work_tree(&bare, "main")?;
    git(
        Some(&work.path),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            url,
            path,
        ],
    )?;
    commit_and_push(&work.path, "main", &format!("add submodule {path}"))
}

/// Create (or move) the lightweight tag `tag` at `sha`.
pub fn tag(git_root: &Path, repo: &str, tag: &str, sha: &str) -> Result<(), CoordinatorError> {
    let bare = git_root.join(repo);
    git(
        Some(&bare),
        &["update-ref", &format!("refs/tags/{tag}"), sha],
    )?;
    Ok(())
}

/// `git rev-parse <rev>` in the bare repository.
pub fn rev_parse(git_root: &Path, repo: &str, rev: &str) -> Result<String, CoordinatorError> {
    let bare = git_root.join(repo);
    git(Some(&bare), &["rev-parse", rev])
}
