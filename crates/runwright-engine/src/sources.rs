//! The `get_sources` stage: fetching the job's commit with the `git` CLI, as GitLab's runner scripts it
//! (reference `protocol.md` §7.5; runner shells/abstract.go `writeGetSourcesScript`, `writeCloneFetchCmds`,
//! `handleGetSourcesStrategy`, `setupTemplateDir`, `setupExternalGitConfig`, `writeRefspecFetchCmd`,
//! `writeCheckoutCmd`, `writeSubmoduleUpdateCmd`, `writeGitCleanup`, `writeClearWorktreeScript`,
//! `writeClearGitCredentials`), and the credentials git uses for it (runner helpers/url/gitauth.go).
//!
//! The job token never lands in `.git/config`: the remote is the URL without credentials, and `insteadOf` rules
//! that add them live in `<project>.tmp/.gitlab-runner.ext.conf`, which `.git/config` includes and which goes
//! away with the temporary directory when the job ends. Every value that comes from the job (flags, paths,
//! URLs) is one shell-quoted argument, never shell text.

use crate::error::Error;
use crate::script::{shell_escape, ScriptWriter};
use runwright_api::types::JobResponse;

/// The externalized git config (runner `externalGitConfigFile`).
pub const EXT_GIT_CONFIG: &str = ".gitlab-runner.ext.conf";
/// The variable holding the absolute path of [`EXT_GIT_CONFIG`] in the sources script
/// (runner `envVarExternalGitConfigFile`).
const EXT_GIT_CONFIG_VAR: &str = "GLR_EXT_GIT_CONFIG_PATH";
/// `regexp.QuoteMeta(EXT_GIT_CONFIG) + "$"`: the `include.path` values the runner replaces.
const EXT_GIT_CONFIG_PATTERN: &str = "\\.gitlab-runner\\.ext\\.conf$";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitStrategy {
    Clone,
    Fetch,
    None,
    Empty,
}

impl GitStrategy {
    /// One of GitLab's names, exactly (runner common/build_settings.go `validate`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "clone" => Some(Self::Clone),
            "fetch" => Some(Self::Fetch),
            "none" => Some(Self::None),
            "empty" => Some(Self::Empty),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clone => "clone",
            Self::Fetch => "fetch",
            Self::None => "none",
            Self::Empty => "empty",
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
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "normal" => Some(Self::Normal),
            "recursive" => Some(Self::Recursive),
            _ => None,
        }
    }
}

/// The remote URL with and without the job's credentials, and the `insteadOf` rules that put them back.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GitAuth {
    /// What git fetches from (GitLab's `repo_url`, or `clone_url` + project path), with `gitlab-ci-token`.
    pub remote_with_credentials: String,
    /// The same without credentials: what `.git/config` holds.
    pub remote: String,
    /// `(replacement with credentials, original)`: `url.<replacement>.insteadOf = <original>`.
    pub instead_ofs: Vec<(String, String)>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never reach a log.
        f.debug_struct("GitAuth")
            .field("remote", &self.remote)
            .field("instead_ofs", &self.instead_ofs.len())
            .finish()
    }
}

/// Where the runner's SSH daemon is, for `GIT_SUBMODULE_FORCE_HTTPS` (`CI_SERVER_HOST`,
/// `CI_SERVER_SHELL_SSH_HOST`, `CI_SERVER_SHELL_SSH_PORT`).
#[derive(Debug, Clone, Default)]
pub struct SshServer {
    pub host: String,
    pub ssh_host: String,
    pub ssh_port: String,
}

/// What [`GitAuth::new`] reads.
pub struct GitAuthInput<'a> {
    pub job: &'a JobResponse,
    /// `clone_url` of the runner entry.
    pub clone_url: Option<&'a str>,
    /// `url` of the runner entry (runner `CredentialsURL`).
    pub credentials_url: &'a str,
    /// `CI_PROJECT_PATH`.
    pub project_path: &'a str,
    pub force_https: bool,
    pub server: SshServer,
}

fn is_http(u: &url::Url) -> bool {
    u.scheme().eq_ignore_ascii_case("http") || u.scheme().eq_ignore_ascii_case("https")
}

/// Go's `strings.TrimRight(u.String(), "/")`.
fn trimmed(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

impl GitAuth {
    /// runner helpers/url/gitauth.go `GetRemoteURL` and `GetInsteadOfs` (credentials in URLs, the default while
    /// `FF_GIT_URLS_WITHOUT_TOKENS` is off), and shells/abstract.go `setupExternalGitConfig` (the remote's own
    /// rule first, duplicates dropped).
    pub fn new(input: &GitAuthInput<'_>) -> Self {
        let token = input.job.token.as_str();
        let with_auth = |u: &url::Url| -> url::Url {
            let mut c = u.clone();
            if c.scheme() == "ssh" {
                if c.username().is_empty() {
                    let _ = c.set_username("git");
                }
            } else {
                let _ = c.set_username("gitlab-ci-token");
                let _ = c.set_password(Some(token));
            }
            c
        };
        let without_auth = |u: &url::Url| -> String {
            let mut c = u.clone();
            let _ = c.set_username("");
            let _ = c.set_password(None);
            c.to_string()
        };
        let clone_base = input
            .clone_url
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .and_then(|c| url::Url::parse(c).ok());

        // The remote: `clone_url` + project path, or GitLab's repo_url as it came.
        let (remote_with_credentials, remote) = match &clone_base {
            Some(base) => {
                let mut u = base.clone();
                let path = format!(
                    "{}/{}.git",
                    u.path().trim_end_matches('/'),
                    input.project_path.trim_matches('/')
                );
                u.set_path(&path);
                let authed = with_auth(&u);
                (authed.to_string(), without_auth(&authed))
            }
            None => match url::Url::parse(&input.job.git_info.repo_url) {
                Ok(u) => (input.job.git_info.repo_url.clone(), without_auth(&u)),
                // Not a URL git understands as one (a local path): used as it is.
                Err(_) => (
                    input.job.git_info.repo_url.clone(),
                    input.job.git_info.repo_url.clone(),
                ),
            },
        };

        let mut rules: Vec<(String, String)> = Vec::new();
        if remote_with_credentials != remote {
            rules.push((remote_with_credentials.clone(), remote.clone()));
        }
        // The server: `clone_url` when set, else the runner's URL.
        let base = clone_base.or_else(|| url::Url::parse(input.credentials_url).ok());
        if let Some(base) = base.filter(is_http) {
            let authed = trimmed(&with_auth(&base));
            rules.push((authed.clone(), trimmed(&base)));
            if input.force_https {
                let host = if input.server.ssh_host.is_empty() {
                    input.server.host.as_str()
                } else {
                    input.server.ssh_host.as_str()
                };
                let port = input.server.ssh_port.as_str();
                if port.is_empty() || port == "22" {
                    rules.push((format!("{authed}/"), format!("git@{host}:")));
                    rules.push((authed.clone(), format!("ssh://git@{host}")));
                } else {
                    rules.push((authed.clone(), format!("ssh://git@{host}:{port}")));
                }
            }
            // Submodules of other projects on the host GitLab's repo_url names (runner `repoBaseInsteadOf`).
            if let Ok(repo) = url::Url::parse(&input.job.git_info.repo_url) {
                if is_http(&repo) {
                    let mut b = repo.clone();
                    b.set_path("");
                    b.set_query(None);
                    b.set_fragment(None);
                    let authed = trimmed(&with_auth(&b));
                    let _ = b.set_username("");
                    let _ = b.set_password(None);
                    rules.push((authed, trimmed(&b)));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        rules.retain(|r| seen.insert(r.clone()));
        GitAuth {
            remote_with_credentials,
            remote,
            instead_ofs: rules,
        }
    }

    /// `scheme://host[:port]` of the remote, for `git credential reject` and scoped `http.<url>.*` settings;
    /// `None` for remotes git cannot turn into a credential request (local paths).
    pub fn remote_host(&self) -> Option<String> {
        let u = url::Url::parse(&self.remote).ok()?;
        let host = u.host_str()?;
        if !matches!(u.scheme(), "http" | "https" | "ssh") {
            return None;
        }
        Some(match u.port() {
            Some(p) => format!("{}://{host}:{p}", u.scheme()),
            None => format!("{}://{host}", u.scheme()),
        })
    }
}

/// Everything the sources script depends on, resolved from the job's variables and the runner's settings.
#[derive(Debug, Clone)]
pub struct SourcesSettings {
    pub strategy: GitStrategy,
    /// `None`: an unknown `GIT_SUBMODULE_STRATEGY`, which fails the stage (runner `SubmoduleInvalid`).
    pub submodules: Option<SubmoduleStrategy>,
    pub checkout: bool,
    /// `GIT_CLEAN_FLAGS` as arguments; empty: no `git clean` of the main repository.
    pub clean_flags: Vec<String>,
    pub fetch_flags: Vec<String>,
    /// `git_info.depth` (GitLab already applied `GIT_DEPTH`).
    pub depth: i64,
    pub submodule_depth: i64,
    pub submodule_paths: Vec<String>,
    pub submodule_update_flags: Vec<String>,
    /// `GIT_LFS_SKIP_SMUDGE` set by the job: LFS objects are not pulled at all.
    pub lfs_skip_smudge: bool,
    /// The remote has no Git LFS objects to give (`RunnerConfig::without_lfs_objects`, `runwright exec`): no
    /// `git lfs pull`.
    pub without_lfs_objects: bool,
    /// `git_info.repo_object_format` (`sha1` when empty).
    pub object_format: String,
    pub auth: GitAuth,
    /// Delete `.git/config` and hooks (and the submodules') before fetching (`clean_git_config`).
    pub clean_git_config: bool,
    /// `git config --global --add safe.directory <project dir>` (`safe_directory_checkout`).
    pub safe_directory: bool,
    /// `transfer.bundleURI` (`FF_USE_GIT_BUNDLE_URIS`).
    pub bundle_uris: bool,
    /// `http.<host>.proactiveAuth=basic` (`FF_USE_GIT_PROACTIVE_AUTH`).
    pub proactive_auth: bool,
    /// `http.userAgent` of fetches: `<name> <version> <os>/<arch>`.
    pub user_agent: String,
    /// The project dir where this script runs (the runner's view of it).
    pub project_dir: String,
    /// The project's temporary dir where this script runs.
    pub tmp_dir: String,
    /// The temporary dir as the job's own scripts see it (differs from `tmp_dir` when the runner reaches the
    /// job's volumes at other paths): the configs include the external config there too, for git in the job's
    /// scripts.
    pub job_tmp_dir: String,
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

fn args_line(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_escape(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `GIT_TERMINAL_PROMPT=0` and `GCM_INTERACTIVE=Never`: git and Git Credential Manager never wait for a
/// person (runner `writeGetSourcesScript`, before the `pre_get_sources_script` hooks).
pub fn write_git_env(w: &mut ScriptWriter) {
    w.line("export GIT_TERMINAL_PROMPT=0");
    w.line("export GCM_INTERACTIVE=Never");
}

fn ext_config(s: &SourcesSettings) -> String {
    format!("{}/{EXT_GIT_CONFIG}", s.tmp_dir)
}

fn template_dir(s: &SourcesSettings) -> String {
    format!("{}/git-template", s.tmp_dir)
}

/// The `include.path` values a repository's config gets: the external config where this script runs, and, when
/// the job's own scripts see the temporary dir elsewhere (the docker executor's volumes, which the runner
/// reaches at their host paths), also there. Git skips an include whose file does not exist, so each side reads
/// the one it can see. The runner, whose helper sees the job's paths, writes just the one.
fn ext_includes(s: &SourcesSettings) -> Vec<String> {
    let here = ext_config(s);
    let job = format!("{}/{EXT_GIT_CONFIG}", s.job_tmp_dir);
    if job == here {
        vec![here]
    } else {
        vec![here, job]
    }
}

/// A value in git's config syntax: always quoted, so `#`, `;` and spaces stay part of it.
fn config_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A subsection name (`[url "<name>"]`): `\` and `"` escaped; a newline cannot be written and is dropped.
fn config_subsection(v: &str) -> String {
    v.chars()
        .filter(|c| *c != '\n')
        .flat_map(|c| match c {
            '\\' => vec!['\\', '\\'],
            '"' => vec!['\\', '"'],
            c => vec![c],
        })
        .collect()
}

/// Removes `dir` as the runner does: made writable first, so read-only trees (Go's module cache) go too
/// (runner shells/bash.go `RmDir`).
fn rm_dir_writable(w: &mut ScriptWriter, dir: &str) {
    w.if_directory(dir);
    w.command(&["chmod", "-R", "u+rwX", dir]);
    w.end_if();
    w.rm_dir(dir);
}

/// `find <dir> -name <name> -type f -exec rm -f {} +` inside `if [ -d <dir> ]` (runner `RmFilesRecursive`),
/// with several names in one walk.
fn rm_files_recursive(w: &mut ScriptWriter, dir: &str, names: &[&str]) {
    let mut expr: Vec<String> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            expr.push("-o".into());
        }
        expr.push("-name".into());
        expr.push(n.to_string());
    }
    let expr = if names.len() > 1 {
        format!("\\( {} \\)", args_line(&expr))
    } else {
        args_line(&expr)
    };
    w.if_directory(dir);
    w.line(&format!(
        "find {} {expr} -type f -exec rm -f {{}} +",
        shell_escape(dir)
    ));
    w.end_if();
}

/// The lock files a killed git can leave behind, in `.git` and (with submodules) `.git/modules/**`.
const STALE_FILES: [&str; 5] = [
    "index.lock",
    "shallow.lock",
    "HEAD.lock",
    "hooks/post-checkout",
    "config.lock",
];

/// runner `writeGitCleanup` / `writeGitCleanupAllConfigs`: stale lock files go; with `clean_git_config`, the
/// configs and hooks a previous job could have planted go too, so git running here never executes them.
fn write_git_cleanup(w: &mut ScriptWriter, s: &SourcesSettings, submodules: bool) {
    let dir = s.project_dir.as_str();
    let quoted: Vec<String> = STALE_FILES
        .iter()
        .map(|f| shell_escape(&format!("{dir}/.git/{f}")))
        .collect();
    // Tested first: they are rarely there, and `rm` is a process start on every job's critical path.
    w.line(&format!(
        "for f in {}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then rm -f \"$f\"; fi; done",
        quoted.join(" ")
    ));
    let modules = format!("{dir}/.git/modules");
    if submodules {
        let names: Vec<&str> = STALE_FILES
            .iter()
            .map(|f| f.rsplit('/').next().unwrap_or(f))
            .collect();
        rm_files_recursive(w, &modules, &names);
    }
    rm_files_recursive(w, &format!("{dir}/.git/refs"), &["*.lock"]);

    if !s.clean_git_config {
        return;
    }
    for d in [template_dir(s), format!("{dir}/.git")] {
        w.rm_file(&format!("{d}/config"));
        w.rm_dir(&format!("{d}/hooks"));
    }
    if submodules {
        rm_files_recursive(w, &modules, &["config"]);
        w.if_directory(&modules);
        w.line(&format!(
            "find {} -name hooks -type d -depth -exec rm -rf -- {{}} +",
            shell_escape(&modules)
        ));
        w.end_if();
    }
}

/// runner `setupTemplateDir` and `setupExternalGitConfig`: the template whose config becomes a new
/// repository's `.git/config` (including the external config), and the external config with the credentials.
/// Each file is written in one go (the runner calls `git config -f` once per key, each a process start on the
/// job's critical path); the files hold the same settings.
fn write_template_and_ext_config(w: &mut ScriptWriter, s: &SourcesSettings) {
    let template = template_dir(s);
    let ext = ext_config(s);
    w.ensure_dir(&template);
    if s.safe_directory {
        // The exact entry replaced rather than added again: the same effect as the runner's `--add` without
        // a global config that grows by one line per job.
        w.command(&[
            "git",
            "config",
            "--global",
            "--replace-all",
            "safe.directory",
            &s.project_dir,
            &format!("^{}$", regex_quote(&s.project_dir)),
        ]);
    }
    // gc.auto and maintenance.auto are runwright's own: no automatic gc on the job's critical path.
    let mut template_cfg = String::from(
        "[init]\n\tdefaultBranch = none\n[fetch]\n\trecurseSubmodules = false\n[credential]\n\tinteractive = never\n\
         [gc]\n\tautoDetach = false\n\tauto = 0\n[maintenance]\n\tauto = false\n[include]\n",
    );
    for path in ext_includes(s) {
        template_cfg.push_str(&format!("\tpath = {}\n", config_value(&path)));
    }
    w.line(&format!(
        "printf '%s' {} > {}",
        shell_escape(&template_cfg),
        shell_escape(&format!("{template}/config"))
    ));
    let mut ext_cfg = String::new();
    if s.bundle_uris {
        ext_cfg.push_str("[transfer]\n\tbundleURI = true\n");
    }
    for (with, orig) in &s.auth.instead_ofs {
        ext_cfg.push_str(&format!(
            "[url \"{}\"]\n\tinsteadOf = {}\n",
            config_subsection(with),
            config_value(orig)
        ));
    }
    w.line(&format!(
        "printf '%s' {} > {}",
        shell_escape(&ext_cfg),
        shell_escape(&ext)
    ));
    w.line(&format!(
        "export {EXT_GIT_CONFIG_VAR}={}",
        shell_escape(&ext)
    ));
}

/// Go's `regexp.QuoteMeta`.
fn regex_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn proactive_auth_args(s: &SourcesSettings) -> Vec<String> {
    if !s.proactive_auth {
        return Vec::new();
    }
    let arg = match s.auth.remote_host() {
        Some(host) => format!("http.{host}.proactiveAuth=basic"),
        None => "http.proactiveAuth=basic".to_string(),
    };
    vec!["-c".into(), arg]
}

/// Writes the clone/fetch, checkout, LFS and submodule commands (runner `writeCloneFetchCmds`,
/// `writeSubmoduleUpdateCmds`). An error is what the runner fails the stage with before running anything.
pub fn write_sources(
    w: &mut ScriptWriter,
    job: &JobResponse,
    s: &SourcesSettings,
) -> Result<(), Error> {
    let dir = s.project_dir.as_str();
    // Smudging LFS objects during checkout can exhaust memory; they are pulled afterwards instead
    // (runner gitlab-runner#3366).
    if !s.lfs_skip_smudge {
        w.line("export GIT_LFS_SKIP_SMUDGE=1");
    }
    match s.strategy {
        GitStrategy::None => {
            w.notice("Skipping Git repository setup");
            w.mkdir(dir);
        }
        GitStrategy::Empty => {
            w.notice("Skipping Git repository setup and creating an empty build directory");
            rm_dir_writable(w, dir);
            w.mkdir(dir);
        }
        GitStrategy::Clone | GitStrategy::Fetch => write_fetch(w, job, s),
    }
    let git = matches!(s.strategy, GitStrategy::Clone | GitStrategy::Fetch);
    if git && s.checkout {
        write_checkout(w, job, s);
    } else {
        w.notice("Skipping Git checkout");
    }
    let submodules = if git {
        s.submodules.ok_or(Error::UnknownSubmoduleStrategy)?
    } else {
        SubmoduleStrategy::None
    };
    match submodules {
        SubmoduleStrategy::None => w.notice("Skipping Git submodules setup"),
        SubmoduleStrategy::Normal => write_submodules(w, s, false)?,
        SubmoduleStrategy::Recursive => write_submodules(w, s, true)?,
    }
    Ok(())
}

fn write_fetch(w: &mut ScriptWriter, job: &JobResponse, s: &SourcesSettings) {
    let dir = s.project_dir.as_str();
    let submodules = matches!(
        s.submodules,
        Some(SubmoduleStrategy::Normal | SubmoduleStrategy::Recursive)
    );
    write_git_cleanup(w, s, submodules);
    write_template_and_ext_config(w, s);
    if s.strategy == GitStrategy::Clone {
        rm_dir_writable(w, dir);
    }
    if s.depth > 0 {
        w.notice(&format!(
            "Fetching changes with git depth set to {}...",
            s.depth
        ));
    } else {
        w.notice("Fetching changes...");
    }
    let mut init = strs(&["git", "init", dir, "--template"]);
    init.push(template_dir(s));
    if !s.object_format.is_empty() && s.object_format != "sha1" {
        init.push("--object-format".into());
        init.push(s.object_format.clone());
    }
    w.line(&args_line(&init));
    w.cd(dir);
    crate::tls::write_git_ssl_config(w, job, s);
    w.line(&format!(
        "if git remote add origin {} >/dev/null 2>&1; then",
        shell_escape(&s.auth.remote)
    ));
    w.line(&format!(
        "  echo {}",
        shell_escape(&format!(
            "{}Created fresh repository.{}",
            runwright_trace::ansi::BOLD_GREEN,
            runwright_trace::ansi::RESET
        ))
    ));
    w.line("else");
    w.line(&format!(
        "  git remote set-url origin {}",
        shell_escape(&s.auth.remote)
    ));
    // An existing repository does not get the template again: it includes the external config itself.
    for (i, path) in ext_includes(s).iter().enumerate() {
        let mut set = strs(&["git", "config", "--file", ".git/config"]);
        if i == 0 {
            set.extend(strs(&[
                "--replace-all",
                "include.path",
                path,
                EXT_GIT_CONFIG_PATTERN,
            ]));
        } else {
            set.extend(strs(&["--add", "include.path", path]));
        }
        w.line(&format!("  {}", args_line(&set)));
    }
    w.line("fi");

    let mut fetch = vec!["git".to_string(), "-c".into(), s.user_agent.clone()];
    fetch.extend(proactive_auth_args(s));
    fetch.extend(strs(&["fetch", "origin", "--no-recurse-submodules"]));
    fetch.extend(refspecs(job));
    if s.depth > 0 {
        fetch.push("--depth".into());
        fetch.push(s.depth.to_string());
    }
    fetch.extend(s.fetch_flags.iter().cloned());
    if s.depth <= 0 {
        let mut unshallow = fetch.clone();
        unshallow.push("--unshallow".into());
        w.if_file(".git/shallow");
        w.line(&args_line(&unshallow));
        w.else_();
        w.line(&args_line(&fetch));
        w.end_if();
    } else {
        w.line(&args_line(&fetch));
    }
}

fn write_checkout(w: &mut ScriptWriter, job: &JobResponse, s: &SourcesSettings) {
    let sha = &job.git_info.sha;
    let short = sha.get(..8).unwrap_or(sha);
    w.notice(&format!(
        "Checking out {short} as detached HEAD (ref is {})...",
        job.git_info.ref_name
    ));
    let mut checkout = strs(&["git", "-c", "submodule.recurse=false"]);
    checkout.extend(proactive_auth_args(s));
    checkout.extend(strs(&["checkout", "-f", "-q", sha]));
    w.line(&args_line(&checkout));
    if !s.clean_flags.is_empty() {
        let mut clean = strs(&["git", "clean"]);
        clean.extend(s.clean_flags.iter().cloned());
        w.line(&args_line(&clean));
    }
    if !s.lfs_skip_smudge && !s.without_lfs_objects {
        w.line("if git lfs version >/dev/null 2>&1; then");
        w.line("  git lfs pull");
        w.line("  echo");
        w.line("fi");
    }
}

/// runner `writeSubmoduleUpdateCmd`: init, sync, clean and reset, update (retried once), clean, credentials
/// for git in the submodules, LFS.
fn write_submodules(
    w: &mut ScriptWriter,
    s: &SourcesSettings,
    recursive: bool,
) -> Result<(), Error> {
    let depth = s.submodule_depth;
    w.notice(&match (recursive, depth > 0) {
        (true, true) => {
            format!("Updating/initializing submodules recursively with git depth set to {depth}...")
        }
        (true, false) => "Updating/initializing submodules recursively...".to_string(),
        (false, true) => {
            format!("Updating/initializing submodules with git depth set to {depth}...")
        }
        (false, false) => "Updating/initializing submodules...".to_string(),
    });
    if s.submodule_paths.iter().any(|p| p == ":(exclude)") {
        return Err(Error::InvalidSubmodulePaths(s.submodule_paths.clone()));
    }
    let mut path_args: Vec<String> = Vec::new();
    if !s.submodule_paths.is_empty() {
        path_args.push("--".into());
        path_args.extend(s.submodule_paths.iter().cloned());
    }
    let rec: Vec<String> = if recursive {
        vec!["--recursive".into()]
    } else {
        Vec::new()
    };
    let git = |args: Vec<String>| -> String {
        let mut all = vec!["git".to_string()];
        all.extend(args);
        args_line(&all)
    };
    let ext = ext_config(s);
    let with_creds = |args: Vec<String>| -> Vec<String> {
        let mut all = vec!["-c".to_string(), format!("include.path={ext}")];
        all.extend(args);
        all
    };
    let foreach = |cmd: &[String]| -> Vec<String> {
        let mut all = strs(&["submodule", "foreach"]);
        all.extend(rec.iter().cloned());
        all.extend(cmd.iter().cloned());
        all
    };

    // Init before sync, so .git/config knows every submodule; sync picks up URL changes.
    w.line(&git(strs(&["submodule", "init"])));
    let mut sync = strs(&["submodule", "sync"]);
    sync.extend(rec.iter().cloned());
    sync.extend(path_args.iter().cloned());
    w.line(&git(sync.clone()));

    let mut update = strs(&["submodule", "update", "--init"]);
    update.extend(rec.iter().cloned());
    if depth > 0 {
        update.push("--depth".into());
        update.push(depth.to_string());
    }
    update.extend(s.submodule_update_flags.iter().cloned());
    update.extend(path_args.iter().cloned());

    // Submodules are cleaned even when GIT_CLEAN_FLAGS is `none`.
    let mut clean = strs(&["git", "clean"]);
    if s.clean_flags.is_empty() {
        clean.push("-ffdx".into());
    } else {
        clean.extend(s.clean_flags.iter().cloned());
    }
    let reset = strs(&["git", "reset", "--hard"]);
    w.line(&git(foreach(&clean)));
    w.line(&git(foreach(&reset)));

    w.line(&format!("if {} ; then", git(with_creds(update.clone()))));
    w.line(&format!(
        "  echo {}",
        shell_escape(&format!(
            "{}Updated submodules{}",
            runwright_trace::ansi::BOLD_GREEN,
            runwright_trace::ansi::RESET
        ))
    ));
    w.line(&format!("  {}", git(sync.clone())));
    w.line("else");
    w.line(&format!(
        "  echo {}",
        shell_escape(&format!(
            "{}Updating submodules failed. Retrying...{}",
            runwright_trace::ansi::YELLOW,
            runwright_trace::ansi::RESET
        ))
    ));
    if s.submodule_update_flags
        .iter()
        .any(|f| f.eq_ignore_ascii_case("--remote"))
    {
        // A `branch` in .gitmodules that is not the default branch is not fetched by the first update.
        w.line(&format!(
            "  {}",
            git(with_creds(foreach(&strs(&[
                "git",
                "fetch",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ]))))
        ));
    }
    w.line(&format!("  {}", git(sync)));
    w.line(&format!("  {}", git(with_creds(update))));
    w.line(&format!("  {}", git(foreach(&reset))));
    w.line("fi");
    w.line(&git(foreach(&clean)));

    // Git in a submodule's directory (a `git pull` in the job's script) authenticates as the parent does.
    w.notice("Configuring submodules to use parent git credentials...");
    for (i, path) in ext_includes(s).iter().enumerate() {
        let mut include = strs(&["submodule", "foreach", "--recursive", "git", "config"]);
        include.push(if i == 0 { "--replace-all" } else { "--add" }.into());
        include.extend(strs(&["include.path", path]));
        w.line(&git(include));
    }

    if !s.lfs_skip_smudge {
        w.line("if git lfs version >/dev/null 2>&1; then");
        w.line(&format!(
            "  echo {}",
            shell_escape(&format!(
                "{}Pulling LFS files...{}",
                runwright_trace::ansi::BOLD_GREEN,
                runwright_trace::ansi::RESET
            ))
        ));
        w.line(&format!(
            "  {}",
            git(with_creds(foreach(&strs(&["git", "lfs", "pull"]))))
        ));
        w.line("fi");
    }
    Ok(())
}

/// runner `writeClearGitCredentials`: a credential helper of the job's (`credential.helper=store`) forgets the
/// job token it cached. Best effort.
pub fn write_clear_credentials(w: &mut ScriptWriter, s: &SourcesSettings) {
    if let Some(host) = s.auth.remote_host() {
        // Best effort, as the runner's (`CommandWithStdin(true, …)`); only where git exists: a docker job with
        // no predefined work runs this in its build image, which may have no git (GitLab's helper always has).
        w.line(&format!(
            "if command -v git >/dev/null 2>&1; then echo {} | git credential reject || true; fi",
            shell_escape(&format!("url={host}\nusername=gitlab-ci-token"))
        ));
    }
}

/// The `clear_worktree` stage between `get_sources` attempts: a repository `git clean` cannot repair (an
/// untracked file in an uninitialised submodule) gets its files deleted (runner `writeClearWorktreeScript`).
pub fn write_clear_worktree(w: &mut ScriptWriter, project_dir: &str) {
    w.notice("Deleting tracked and untracked files...");
    w.if_directory(project_dir);
    w.cd(project_dir);
    w.command(&["git", "rm", "-rf", "--ignore-unmatch", "--quiet", "."]);
    w.command(&["git", "clean", "-ffdx", "-q"]);
    w.end_if();
}

/// The git part of the runner's cleanup stage (runner `writeCleanupScript`: `writeClearGitCredentials`, then
/// `writeGitCleanup`): cached credentials forgotten, stale lock files removed, and with `clean_git_config` the
/// configs and hooks, so nothing of this job's git configuration is run by the next one. Written into the
/// `cleanup_file_variables` stage, which runs where the job's stages run (never in the runner process).
pub fn write_cleanup(w: &mut ScriptWriter, s: &SourcesSettings, submodules: bool) {
    write_clear_credentials(w, s);
    write_git_cleanup(w, s, submodules);
}

/// Removes a directory tree as the runner does (runner shells/bash.go `RmDir`): made writable first.
pub fn write_rm_dir(w: &mut ScriptWriter, dir: &str) {
    rm_dir_writable(w, dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(token: &str, repo_url: &str) -> JobResponse {
        let mut job = JobResponse {
            token: token.into(),
            ..Default::default()
        };
        job.git_info.repo_url = repo_url.into();
        job
    }

    #[test]
    fn strategies_parse_exactly() {
        assert_eq!(GitStrategy::parse("fetch"), Some(GitStrategy::Fetch));
        assert_eq!(GitStrategy::parse(" clone"), None);
        assert_eq!(GitStrategy::parse("rsync"), None);
        assert_eq!(
            SubmoduleStrategy::parse("recursive"),
            Some(SubmoduleStrategy::Recursive)
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
    fn remote_has_no_credentials_and_instead_ofs_put_them_back() {
        let j = job(
            "glcbt-secret",
            "https://gitlab-ci-token:glcbt-secret@gitlab.example/grp/app.git",
        );
        let auth = GitAuth::new(&GitAuthInput {
            job: &j,
            clone_url: None,
            credentials_url: "https://gitlab.example/",
            project_path: "grp/app",
            force_https: false,
            server: SshServer::default(),
        });
        assert_eq!(auth.remote, "https://gitlab.example/grp/app.git");
        assert_eq!(auth.remote_with_credentials, j.git_info.repo_url);
        assert_eq!(
            auth.instead_ofs,
            [
                (
                    j.git_info.repo_url.clone(),
                    "https://gitlab.example/grp/app.git".to_string()
                ),
                (
                    "https://gitlab-ci-token:glcbt-secret@gitlab.example".to_string(),
                    "https://gitlab.example".to_string()
                ),
            ]
        );
        assert_eq!(
            auth.remote_host().as_deref(),
            Some("https://gitlab.example")
        );
        assert!(!format!("{auth:?}").contains("glcbt-secret"));
    }

    #[test]
    fn clone_url_and_force_https_rules_follow_the_runner() {
        let j = job(
            "tok",
            "http://gitlab-ci-token:tok@gitlab.internal:8080/grp/app.git",
        );
        let auth = GitAuth::new(&GitAuthInput {
            job: &j,
            clone_url: Some("http://mirror:8080/git"),
            credentials_url: "https://gitlab.example/",
            project_path: "grp/app",
            force_https: true,
            server: SshServer {
                host: "gitlab.example".into(),
                ssh_host: String::new(),
                ssh_port: "2222".into(),
            },
        });
        assert_eq!(
            auth.remote_with_credentials,
            "http://gitlab-ci-token:tok@mirror:8080/git/grp/app.git"
        );
        assert_eq!(auth.remote, "http://mirror:8080/git/grp/app.git");
        let rules: Vec<(&str, &str)> = auth
            .instead_ofs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                (
                    "http://gitlab-ci-token:tok@mirror:8080/git/grp/app.git",
                    "http://mirror:8080/git/grp/app.git"
                ),
                (
                    "http://gitlab-ci-token:tok@mirror:8080/git",
                    "http://mirror:8080/git"
                ),
                (
                    "http://gitlab-ci-token:tok@mirror:8080/git",
                    "ssh://git@gitlab.example:2222"
                ),
                (
                    "http://gitlab-ci-token:tok@gitlab.internal:8080",
                    "http://gitlab.internal:8080"
                ),
            ]
        );
        // Port 22 (or none): the scp-like form too.
        let auth = GitAuth::new(&GitAuthInput {
            job: &j,
            clone_url: None,
            credentials_url: "http://gitlab.internal:8080/",
            project_path: "grp/app",
            force_https: true,
            server: SshServer {
                host: "gitlab.internal".into(),
                ssh_host: "ssh.gitlab.internal".into(),
                ssh_port: String::new(),
            },
        });
        assert!(auth.instead_ofs.contains(&(
            "http://gitlab-ci-token:tok@gitlab.internal:8080/".into(),
            "git@ssh.gitlab.internal:".into()
        )));
        assert!(auth.instead_ofs.contains(&(
            "http://gitlab-ci-token:tok@gitlab.internal:8080".into(),
            "ssh://git@ssh.gitlab.internal".into()
        )));
        // The repo_url base is the same as the server's: listed once.
        assert_eq!(
            auth.instead_ofs
                .iter()
                .filter(|(_, o)| o == "http://gitlab.internal:8080")
                .count(),
            1
        );
    }

    fn settings(strategy: GitStrategy, submodules: SubmoduleStrategy) -> SourcesSettings {
        let j = job("tok", "http://gitlab-ci-token:tok@h:1/g/a.git");
        SourcesSettings {
            strategy,
            submodules: Some(submodules),
            checkout: true,
            clean_flags: vec!["-ffdx".into(), "-e".into(), "*.log".into()],
            fetch_flags: vec!["--prune".into(), "$(touch x)".into()],
            depth: 0,
            submodule_depth: 3,
            submodule_paths: vec!["lib".into(), "-odd path".into()],
            submodule_update_flags: vec!["--remote".into()],
            lfs_skip_smudge: false,
            without_lfs_objects: false,
            object_format: "sha256".into(),
            auth: GitAuth::new(&GitAuthInput {
                job: &j,
                clone_url: None,
                credentials_url: "http://h:1/",
                project_path: "g/a",
                force_https: true,
                server: SshServer::default(),
            }),
            clean_git_config: true,
            safe_directory: true,
            bundle_uris: true,
            proactive_auth: true,
            user_agent: "http.userAgent=runwright 0 linux/amd64".into(),
            project_dir: "/b/g/a".into(),
            tmp_dir: "/b/g/a.tmp".into(),
            job_tmp_dir: "/builds/g/a.tmp".into(),
        }
    }

    #[test]
    fn scripts_parse_in_bash_and_sh_and_quote_every_argument() {
        let mut j = job("tok", "http://gitlab-ci-token:tok@h:1/g/a.git");
        j.git_info.sha = "0123456789abcdef0123456789abcdef01234567".into();
        for (strategy, sub) in [
            (GitStrategy::Clone, SubmoduleStrategy::Recursive),
            (GitStrategy::Fetch, SubmoduleStrategy::Normal),
            (GitStrategy::Empty, SubmoduleStrategy::None),
        ] {
            let s = settings(strategy, sub);
            let mut w = ScriptWriter::new();
            write_git_env(&mut w);
            write_sources(&mut w, &j, &s).expect("script");
            write_clear_credentials(&mut w, &s);
            for shell in ["bash", "sh"] {
                let script = w.finish(shell, false);
                let out = std::process::Command::new(shell)
                    .args(["-n", "-c", &script])
                    .output()
                    .expect("shell");
                assert!(
                    out.status.success(),
                    "{shell}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let body = format!("{w:?}");
            assert!(!body.contains("$(touch x) "), "unquoted flag: {body}");
        }
        let mut s = settings(GitStrategy::Fetch, SubmoduleStrategy::Normal);
        s.submodule_paths = vec![":(exclude)".into(), "x".into()];
        let mut w = ScriptWriter::new();
        assert_eq!(
            write_sources(&mut w, &j, &s)
                .expect_err("refused")
                .to_string(),
            "GIT_SUBMODULE_PATHS: invalid submodule pathspec [\":(exclude)\" \"x\"]"
        );
        s.submodules = None;
        assert_eq!(
            write_sources(&mut ScriptWriter::new(), &j, &s)
                .expect_err("refused")
                .to_string(),
            "unknown GIT_SUBMODULE_STRATEGY"
        );
    }

    #[test]
    fn config_values_keep_special_characters() {
        let dir = tempfile_dir();
        let file = dir.join("cfg");
        let cfg = format!(
            "[url \"{}\"]\n\tinsteadOf = {}\n",
            config_subsection("http://a\"b\\c/"),
            config_value("http://h/#x;y \"q\" \\z ")
        );
        std::fs::write(&file, cfg).expect("write");
        let out = std::process::Command::new("git")
            .args(["config", "-f"])
            .arg(&file)
            .args(["--get-regexp", "^url\\."])
            .output()
            .expect("git");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "url.http://a\"b\\c/.insteadof http://h/#x;y \"q\" \\z \n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rw-sources-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn cleanup_script_removes_locks_configs_and_hooks() {
        let dir = tempfile_dir().join("p");
        let tmpl = tempfile_dir().join("t.tmp").join("git-template");
        for f in [
            ".git/index.lock",
            ".git/config",
            ".git/hooks/pre-commit",
            ".git/refs/heads/main.lock",
            ".git/refs/heads/main",
            ".git/modules/lib/config",
            ".git/modules/lib/index.lock",
            ".git/modules/lib/hooks/post-merge",
            ".git/modules/lib/HEAD",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(p, "x").expect("file");
        }
        std::fs::create_dir_all(tmpl.join("hooks")).expect("tmpl");
        std::fs::write(tmpl.join("config"), "x").expect("tmpl cfg");
        // The cleanup stage's script, run by bash as the executor would run it.
        let cleanup = |clean_git_config: bool| {
            let mut s = settings(GitStrategy::Fetch, SubmoduleStrategy::Recursive);
            s.project_dir = dir.to_string_lossy().to_string();
            s.tmp_dir = tmpl.parent().expect("parent").to_string_lossy().to_string();
            s.clean_git_config = clean_git_config;
            let mut w = ScriptWriter::new();
            write_cleanup(&mut w, &s, true);
            let script = w.finish("bash", false);
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("bash");
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        cleanup(false);
        assert!(!dir.join(".git/index.lock").exists());
        assert!(!dir.join(".git/refs/heads/main.lock").exists());
        assert!(!dir.join(".git/modules/lib/index.lock").exists());
        assert!(dir.join(".git/refs/heads/main").exists());
        assert!(dir.join(".git/config").exists(), "configs stay by default");
        cleanup(true);
        for gone in [
            ".git/config",
            ".git/hooks",
            ".git/modules/lib/config",
            ".git/modules/lib/hooks",
        ] {
            assert!(!dir.join(gone).exists(), "{gone}");
        }
        assert!(dir.join(".git/modules/lib/HEAD").exists());
        assert!(!tmpl.join("config").exists() && !tmpl.join("hooks").exists());
        let _ = std::fs::remove_dir_all(tempfile_dir());
    }
}
