//! The `get_sources` stage: fetching the job's commit with the `git` CLI, as GitLab's runner scripts it
//! (reference `protocol.md` §7.5; runner shells/abstract.go `writeGetSourcesScript`, `writeRefspecFetchCmd`,
//! `writeCheckoutCmd`, `writeSubmoduleUpdateCmd`).

use crate::script::ScriptWriter;
use runwright_client::types::JobResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitStrategy {
    Clone,
    Fetch,
    None,
    Empty,
}

impl GitStrategy {
    /// `GIT_STRATEGY`, defaulting to fetch when the project allows it (§2.5 `allow_git_fetch`).
    pub fn parse(value: Option<&str>, allow_git_fetch: bool) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or("") {
            "" => Ok(if allow_git_fetch {
                Self::Fetch
            } else {
                Self::Clone
            }),
            "clone" => Ok(Self::Clone),
            "fetch" => Ok(Self::Fetch),
            "none" => Ok(Self::None),
            "empty" => Ok(Self::Empty),
            other => Err(format!("unknown GIT_STRATEGY {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmoduleStrategy {
    None,
    Normal,
    Recursive,
}

impl SubmoduleStrategy {
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or("") {
            "" | "none" => Ok(Self::None),
            "normal" => Ok(Self::Normal),
            "recursive" => Ok(Self::Recursive),
            other => Err(format!("unknown GIT_SUBMODULE_STRATEGY {other:?}")),
        }
    }
}

/// Everything the sources script depends on, resolved from the job's variables.
#[derive(Debug, Clone)]
pub struct SourcesSettings {
    pub strategy: GitStrategy,
    pub submodules: SubmoduleStrategy,
    pub checkout: bool,
    pub clean_flags: Option<String>,
    pub fetch_flags: String,
    pub depth: i64,
    pub submodule_depth: Option<i64>,
    pub submodule_paths: String,
    pub submodule_update_flags: String,
    /// Remote URL with the job token as credentials (never echoed).
    pub remote_url: String,
    pub project_dir: String,
    pub tmp_dir: String,
}

/// The refspecs to fetch: GitLab's own when it sent them, else the ones it would have built (§2.5 `refspecs`).
pub fn refspecs(job: &JobResponse) -> Vec<String> {
    if !job.git_info.refspecs.is_empty() {
        return job.git_info.refspecs.clone();
    }
    let r = &job.git_info.ref_name;
    let is_tag = job.git_info.ref_type == "tag";
    if job.git_info.depth > 0 && !r.is_empty() {
        if is_tag {
            vec![format!("+refs/tags/{r}:refs/tags/{r}")]
        } else {
            vec![format!("+refs/heads/{r}:refs/remotes/origin/{r}")]
        }
    } else {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ]
    }
}

/// Writes the clone/fetch, checkout, clean and submodule commands.
pub fn write_sources(w: &mut ScriptWriter, job: &JobResponse, s: &SourcesSettings) {
    let dir = s.project_dir.as_str();
    match s.strategy {
        GitStrategy::None => {
            w.notice("Skipping Git repository setup");
            w.mkdir(dir);
            w.notice("Skipping Git checkout");
            w.notice("Skipping Git submodules setup");
            return;
        }
        GitStrategy::Empty => {
            w.notice("Skipping Git repository setup and creating an empty build directory");
            w.rm_dir(dir);
            w.mkdir(dir);
            w.notice("Skipping Git checkout");
            w.notice("Skipping Git submodules setup");
            return;
        }
        GitStrategy::Clone | GitStrategy::Fetch => {}
    }

    if s.strategy == GitStrategy::Clone {
        w.rm_dir(dir);
    }
    if s.depth > 0 {
        w.notice(&format!(
            "Fetching changes with git depth set to {}...",
            s.depth
        ));
    } else {
        w.notice("Fetching changes...");
    }
    // An existing repository is reused (after removing lock files a killed job may have left); a new one is
    // created from a template whose config is the new .git/config.
    w.if_directory(&format!("{dir}/.git"));
    let stale: Vec<String> = [
        "index.lock",
        "shallow.lock",
        "HEAD.lock",
        "hooks/post-checkout",
    ]
    .iter()
    .map(|f| format!("{dir}/.git/{f}"))
    .collect();
    // Tested first: they are rarely there, and `rm` is a process start on every job's critical path.
    let quoted: Vec<String> = stale
        .iter()
        .map(|f| crate::script::shell_escape(f))
        .collect();
    w.line(&format!(
        "for f in {}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then rm -f \"$f\"; fi; done",
        quoted.join(" ")
    ));
    w.else_();
    write_template(w, s);
    w.line("echo 'Created fresh repository.'");
    w.line(&format!(
        "git init {} --template {} >/dev/null",
        crate::script::shell_escape(dir),
        crate::script::shell_escape(&template_dir(s))
    ));
    w.end_if();
    w.cd(dir);
    crate::tls::write_git_ssl_config(w, job, s);
    w.line(&format!(
        "git remote set-url origin {url} 2>/dev/null || git remote add origin {url}",
        url = crate::script::shell_escape(&s.remote_url)
    ));
    let mut fetch: Vec<String> = vec![
        "git".into(),
        "fetch".into(),
        "origin".into(),
        "--no-recurse-submodules".into(),
    ];
    fetch.extend(refspecs(job));
    if s.depth > 0 {
        fetch.push("--depth".into());
        fetch.push(s.depth.to_string());
    }
    let fetch_line = fetch
        .iter()
        .map(|a| crate::script::shell_escape(a))
        .collect::<Vec<_>>()
        .join(" ");
    let unshallow = if s.depth <= 0 {
        " $(if [ -f .git/shallow ]; then echo --unshallow; fi)"
    } else {
        ""
    };
    w.line(&format!("{fetch_line}{unshallow} {}", s.fetch_flags));

    if s.checkout {
        let sha = &job.git_info.sha;
        let short = sha.get(..8).unwrap_or(sha);
        w.notice(&format!(
            "Checking out {short} as detached HEAD (ref is {})...",
            job.git_info.ref_name
        ));
        w.command(&[
            "git",
            "-c",
            "submodule.recurse=false",
            "checkout",
            "-f",
            "-q",
            sha,
        ]);
        if let Some(flags) = &s.clean_flags {
            w.line(&format!("git clean {flags}"));
        }
    } else {
        w.notice("Skipping Git checkout");
    }

    match s.submodules {
        SubmoduleStrategy::None => w.notice("Skipping Git submodules setup"),
        strategy => {
            let recursive = strategy == SubmoduleStrategy::Recursive;
            w.notice(if recursive {
                "Updating/initializing submodules recursively..."
            } else {
                "Updating/initializing submodules..."
            });
            let rec = if recursive { " --recursive" } else { "" };
            let paths = &s.submodule_paths;
            // Submodules on the same server are fetched with this job's credentials: an `insteadOf` rule given
            // with `-c` reaches the commands git starts for each submodule and never lands in a config file,
            // where the next job would find an expired token (runner: insteadOf rules for submodules).
            let git = match insteadof_pair(&s.remote_url) {
                Some((with_creds, without)) => format!(
                    "git -c {}",
                    crate::script::shell_escape(&format!("url.{with_creds}.insteadOf={without}"))
                ),
                None => "git".to_string(),
            };
            let git = format!("{git}{}", crate::tls::submodule_config_args(job, s));
            w.line(&format!("{git} submodule init {paths}"));
            w.line(&format!("{git} submodule sync{rec} {paths}"));
            let depth = match s.submodule_depth {
                Some(d) if d > 0 => format!(" --depth {d}"),
                _ => String::new(),
            };
            w.line(&format!(
                "{git} submodule update --init{rec}{depth} {} {paths}",
                s.submodule_update_flags
            ));
            if let Some(flags) = &s.clean_flags {
                w.line(&format!(
                    "git submodule foreach{rec} {}",
                    crate::script::shell_escape(&format!("git clean {flags}"))
                ));
            }
            w.line(&format!(
                "git submodule foreach{rec} {}",
                crate::script::shell_escape("git reset --hard")
            ));
        }
    }
}

fn template_dir(s: &SourcesSettings) -> String {
    format!("{}/git-template", s.tmp_dir)
}

/// The template's config becomes the new repository's .git/config. Written in one go (GitLab's runner calls
/// `git config -f` once per key; each is a process start on the job's critical path).
fn write_template(w: &mut ScriptWriter, s: &SourcesSettings) {
    let template = template_dir(s);
    w.mkdir(&template);
    let cfg = String::from(
        "[init]\n\tdefaultBranch = none\n[fetch]\n\trecurseSubmodules = false\n[credential]\n\tinteractive = never\n\
         [gc]\n\tautoDetach = false\n\tauto = 0\n[maintenance]\n\tauto = false\n",
    );
    w.line(&format!(
        "printf '%s' {} > {}",
        crate::script::shell_escape(&cfg),
        crate::script::shell_escape(&format!("{template}/config"))
    ));
}

/// For `http(s)://user:token@host/…`: the `(with credentials, without)` server prefixes for `insteadOf`.
fn insteadof_pair(remote: &str) -> Option<(String, String)> {
    let url = url::Url::parse(remote).ok()?;
    url.password()?;
    let mut base = url.clone();
    base.set_path("/");
    base.set_query(None);
    let with = base.to_string();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    Some((with, base.to_string()))
}

/// `clone_url` from config replaces scheme/host of the repository URL, keeping the job's credentials (§7.5).
pub fn remote_url(job: &JobResponse, clone_url: Option<&str>, project_path: &str) -> String {
    let Some(base) = clone_url.filter(|c| !c.trim().is_empty()) else {
        return job.git_info.repo_url.clone();
    };
    let Ok(mut url) = url::Url::parse(base.trim()) else {
        return job.git_info.repo_url.clone();
    };
    let path = format!(
        "{}/{}.git",
        url.path().trim_end_matches('/'),
        project_path.trim_matches('/')
    );
    url.set_path(&path);
    let _ = url.set_username("gitlab-ci-token");
    let _ = url.set_password(Some(&job.token));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse() {
        assert_eq!(GitStrategy::parse(None, true), Ok(GitStrategy::Fetch));
        assert_eq!(GitStrategy::parse(Some(""), false), Ok(GitStrategy::Clone));
        assert!(GitStrategy::parse(Some("rsync"), true).is_err());
        assert_eq!(
            SubmoduleStrategy::parse(Some("recursive")),
            Ok(SubmoduleStrategy::Recursive)
        );
    }

    #[test]
    fn refspecs_as_gitlab_builds_them() {
        let mut job = JobResponse::default();
        job.git_info.ref_name = "main".into();
        job.git_info.depth = 20;
        assert_eq!(
            refspecs(&job),
            ["+refs/heads/main:refs/remotes/origin/main"]
        );
        job.git_info.ref_type = "tag".into();
        assert_eq!(refspecs(&job), ["+refs/tags/main:refs/tags/main"]);
        job.git_info.depth = 0;
        assert_eq!(refspecs(&job).len(), 2);
    }

    #[test]
    fn clone_url_keeps_credentials() {
        let mut job = JobResponse {
            token: "glcbt-secret".into(),
            ..Default::default()
        };
        job.git_info.repo_url = "https://gitlab-ci-token:glcbt-secret@a/grp/app.git".into();
        assert_eq!(
            remote_url(&job, Some("http://mirror:8080/git"), "grp/app"),
            "http://gitlab-ci-token:glcbt-secret@mirror:8080/git/grp/app.git"
        );
        assert_eq!(remote_url(&job, None, "grp/app"), job.git_info.repo_url);
        let (with, without) = insteadof_pair(&job.git_info.repo_url).expect("has creds");
        assert_eq!(with, "https://gitlab-ci-token:glcbt-secret@a/");
        assert_eq!(without, "https://a/");
    }
}
