//! What `exec` learns from the user's git checkout, in as few `git` processes as it can: the run's setup is on
//! the critical path of every local pipeline (a `git` start costs 1–3 ms here; the first version asked 20
//! questions one process each).

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(super) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_env(dir, args, &[])
}

/// Runs git in the user's checkout with extra environment (e.g. a temporary `GIT_INDEX_FILE`).
pub(super) fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        // exec only reads the user's checkout: it must never take the real index's lock to refresh it.
        .env("GIT_OPTIONAL_LOCKS", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

pub(super) fn git_opt(dir: &Path, args: &[&str]) -> Option<String> {
    git(dir, args).ok().filter(|s| !s.is_empty())
}

/// `grp/sub/app` from an `origin` URL (`git@host:grp/app.git`, `https://host/grp/app.git`).
pub(super) fn path_from_remote(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let rest = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1.to_string()
    } else if let Some((_, rest)) = url.split_once(':') {
        rest.to_string()
    } else {
        return None;
    };
    let clean: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(sanitize_segment)
        .collect();
    (clean.len() >= 2).then(|| clean.join("/"))
}

fn sanitize_segment(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.is_empty() {
        "project".into()
    } else {
        out
    }
}

/// HEAD's commit as `CI_COMMIT_*` and the working tree's commit need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HeadCommit {
    pub author_name: String,
    pub author_email: String,
    pub author_date: String,
    pub committer_name: String,
    pub committer_email: String,
    /// The committer date, strict ISO 8601 (`CI_COMMIT_TIMESTAMP`).
    pub committer_date: String,
    pub message: String,
}

/// `git log -1` fields, NUL-separated, the message last (it may hold anything but NUL).
const HEAD_FORMAT: &str = "--format=%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B";

impl HeadCommit {
    fn parse(out: &str) -> HeadCommit {
        let mut f = out.splitn(7, '\0').map(str::to_string);
        let mut next = || f.next().unwrap_or_default();
        HeadCommit {
            author_name: next(),
            author_email: next(),
            author_date: next(),
            committer_name: next(),
            committer_email: next(),
            committer_date: next(),
            message: next(),
        }
    }
}

/// What `exec` knows about the checkout.
pub(super) struct Checkout {
    pub root: PathBuf,
    /// The commit the jobs run (HEAD, or the working tree's commit on top of it).
    pub sha: String,
    pub branch: String,
    pub project_path: String,
    pub default_branch: String,
    /// HEAD's tree: the working tree's commit is only made when the working tree differs from it.
    pub head_tree: String,
    /// The real index (its stat cache makes staging the working tree cheap).
    pub index: PathBuf,
    /// The object database the jobs' repository borrows from (`objects/info/alternates`).
    pub objects: PathBuf,
    pub head: HeadCommit,
}

impl Checkout {
    /// Uncommitted changes or untracked, not ignored files (only `--committed` needs to know).
    pub fn dirty(&self) -> bool {
        git_opt(&self.root, &["status", "--porcelain"]).is_some()
    }
}

/// Reads the checkout at `dir` (any directory inside it) in five `git` processes.
pub(super) fn checkout(dir: &Path) -> anyhow::Result<Checkout> {
    // 1. Paths, HEAD and its tree in one go; an unborn HEAD (or no checkout) fails it, and the slow path says
    //    which of the two it is.
    let Ok(out) = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-path",
            "index",
            "--git-path",
            "objects",
            "HEAD",
            "HEAD^{tree}",
        ],
    ) else {
        let root = git(dir, &["rev-parse", "--show-toplevel"])
            .context("runwright exec runs in a git checkout")?;
        bail!(
            "the checkout in {root} has no commit yet: make a first one (e.g. `git commit --allow-empty -m init`), then run runwright exec again"
        );
    };
    let lines: Vec<&str> = out.lines().collect();
    let [root, index, objects, sha, head_tree] = lines[..] else {
        bail!("git rev-parse in {} answered {out:?}", dir.display());
    };
    let root = PathBuf::from(root);

    // 2. The branch (a detached HEAD has none: GitLab would need one, `main` stands in).
    let branch = git_opt(&root, &["symbolic-ref", "--short", "-q", "HEAD"])
        .unwrap_or_else(|| "main".to_string());

    // 3. `origin`'s URL and init.defaultBranch (keys come back lowercased).
    let config = git_opt(
        &root,
        &[
            "config",
            "-z",
            "--get-regexp",
            r"^(remote\.origin\.url|init\.defaultbranch)$",
        ],
    )
    .unwrap_or_default();
    let mut origin_url = None;
    let mut init_default = None;
    for entry in config.split('\0').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        match key {
            "remote.origin.url" => origin_url = Some(value.to_string()),
            "init.defaultbranch" => init_default = Some(value.to_string()),
            _ => {}
        }
    }
    let project_path = origin_url
        .as_deref()
        .and_then(path_from_remote)
        .unwrap_or_else(|| {
            let name = root
                .file_name()
                .map(|n| sanitize_segment(&n.to_string_lossy()))
                .unwrap_or_else(|| "project".into());
            format!("local/{name}")
        });

    // 4. `origin`'s HEAD is what GitLab calls the default branch; without one, the local branch that is most
    //    likely it (`init.defaultBranch`, then main, then master), so that a feature branch is not taken for
    //    the default one (rules on `$CI_DEFAULT_BRANCH`, merge request targets).
    let candidates: Vec<String> = init_default
        .into_iter()
        .chain(["main".to_string(), "master".to_string()])
        .collect();
    let mut query = vec![
        "for-each-ref".to_string(),
        "--format=%(refname)%00%(symref)".to_string(),
        "refs/remotes/origin/HEAD".to_string(),
    ];
    query.extend(candidates.iter().map(|b| format!("refs/heads/{b}")));
    let refs =
        git_opt(&root, &query.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default();
    let refs: Vec<(&str, &str)> = refs
        .lines()
        .map(|l| l.split_once('\0').unwrap_or((l, "")))
        .collect();
    let default_branch = refs
        .iter()
        .find(|(name, _)| *name == "refs/remotes/origin/HEAD")
        .and_then(|(_, target)| target.strip_prefix("refs/remotes/origin/"))
        .map(str::to_string)
        .or_else(|| {
            candidates
                .iter()
                .find(|b| {
                    refs.iter()
                        .any(|(name, _)| name.strip_prefix("refs/heads/") == Some(b.as_str()))
                })
                .cloned()
        })
        .unwrap_or_else(|| branch.clone());

    // 5. HEAD's commit.
    let head = HeadCommit::parse(&git(&root, &["log", "-1", HEAD_FORMAT, sha])?);

    Ok(Checkout {
        sha: sha.to_string(),
        branch,
        project_path,
        default_branch,
        head_tree: head_tree.to_string(),
        index: PathBuf::from(index),
        objects: PathBuf::from(objects),
        head,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_remote_paths() {
        assert_eq!(
            runwright_pipeline::slug("Feature/Foo_bar"),
            "feature-foo-bar"
        );
        assert_eq!(
            path_from_remote("git@gitlab.com:grp/sub/app.git").as_deref(),
            Some("grp/sub/app")
        );
        assert_eq!(
            path_from_remote("https://gitlab.example.com/grp/app.git").as_deref(),
            Some("grp/app")
        );
        assert_eq!(path_from_remote("/srv/app"), None);
    }

    /// git in `dir` with a fixed identity; panics with git's stderr (test set-up only).
    fn sh(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@x",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn repo(branch: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        sh(t.path(), &["init", "-q", "-b", branch]);
        t
    }

    #[test]
    fn reads_a_checkout_in_a_few_git_calls() {
        let t = repo("trunk");
        let d = t.path();
        // A local init.defaultBranch beats the user's global one, whatever that is.
        sh(d, &["config", "init.defaultBranch", "trunk"]);
        sh(
            d,
            &[
                "remote",
                "add",
                "origin",
                "git@gitlab.example.com:grp/sub/app.git",
            ],
        );
        sh(
            d,
            &["commit", "-q", "--allow-empty", "-m", "first\n\nbody text"],
        );
        sh(d, &["checkout", "-q", "-b", "feature"]);
        std::fs::create_dir(d.join("nested")).expect("mkdir");
        let co = checkout(&d.join("nested")).expect("checkout");
        assert_eq!(co.root, d.canonicalize().expect("canonical"));
        assert_eq!(co.branch, "feature");
        assert_eq!(co.project_path, "grp/sub/app");
        // No origin/HEAD: init.defaultBranch names an existing branch, so a feature branch is not the default.
        assert_eq!(co.default_branch, "trunk");
        assert_eq!(co.sha.len(), 40);
        assert_eq!(co.head_tree.len(), 40);
        assert_eq!(co.head.message, "first\n\nbody text");
        assert_eq!(
            (co.head.author_name.as_str(), co.head.author_email.as_str()),
            ("T", "t@x")
        );
        assert!(
            co.objects.ends_with("objects") && co.objects.is_dir(),
            "{:?}",
            co.objects
        );
        assert!(co.index.ends_with("index"), "{:?}", co.index);
        assert!(!co.dirty());
        std::fs::write(d.join("new.txt"), "x").expect("write");
        assert!(co.dirty());

        // origin's HEAD names the default branch, as GitLab's does.
        sh(d, &["update-ref", "refs/remotes/origin/develop", "HEAD"]);
        sh(
            d,
            &[
                "symbolic-ref",
                "refs/remotes/origin/HEAD",
                "refs/remotes/origin/develop",
            ],
        );
        assert_eq!(checkout(d).expect("checkout").default_branch, "develop");

        // A detached HEAD has no branch: `main` stands in.
        sh(d, &["checkout", "-q", "--detach"]);
        assert_eq!(checkout(d).expect("checkout").branch, "main");
    }

    #[test]
    fn without_origin_the_project_is_named_after_the_directory() {
        let t = repo("main");
        sh(t.path(), &["commit", "-q", "--allow-empty", "-m", "x"]);
        let co = checkout(t.path()).expect("checkout");
        let name = sanitize_segment(&t.path().file_name().expect("name").to_string_lossy());
        assert_eq!(co.project_path, format!("local/{name}"));
        assert_eq!(co.default_branch, "main");
    }

    #[test]
    fn an_unborn_branch_or_no_checkout_says_what_to_do() {
        let t = repo("main");
        let err = checkout(t.path()).err().expect("no commit").to_string();
        assert!(
            err.contains("has no commit yet") && err.contains("git commit --allow-empty"),
            "{err}"
        );
        let plain = tempfile::tempdir().expect("tempdir");
        let err = format!(
            "{:#}",
            checkout(plain.path()).err().expect("not a checkout")
        );
        assert!(err.contains("runs in a git checkout"), "{err}");
    }

    #[test]
    fn head_commit_fields_keep_a_multi_line_message() {
        let fields = [
            "A U",
            "a@x",
            "2026-01-02T03:04:05+00:00",
            "C M",
            "c@x",
            "2026-01-02T03:04:06+00:00",
            "title\n\nbody",
        ];
        let h = HeadCommit::parse(&fields.join("\0"));
        assert_eq!(h.author_name, "A U");
        assert_eq!(h.committer_date, "2026-01-02T03:04:06+00:00");
        assert_eq!(h.message, "title\n\nbody");
    }
}
