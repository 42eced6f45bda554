//! `runwright exec`: a `.gitlab-ci.yml` run on this machine (issue 3, first cut).
//!
//! The pipeline model (`runwright-pipeline`) plans the jobs for a push pipeline of HEAD; an embedded
//! coordinator (`runwright-coordinator`) serves them, and the committed HEAD as a bare mirror, over GitLab's
//! runner API on loopback; the service's own pollers and job handling (`crate::service`) run them with the
//! shell executor — the same code path as `runwright run`.
#![allow(clippy::print_stdout)]

mod jobspec;

use crate::cli::ExecArgs;
use crate::logging::LogArgs;
use anyhow::{bail, Context};
use runwright_coordinator::{Coordinator, CoordinatorOptions, ProjectSpec, RunnerOptions};
use runwright_pipeline::{Pipeline, PipelineContext, PipelinePlan, PlannedJob, When};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "glrt-t1_runwrightexec00000001";
const PIPELINE_ID: i64 = 1;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
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

fn git_opt(dir: &Path, args: &[&str]) -> Option<String> {
    git(dir, args).ok().filter(|s| !s.is_empty())
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lowercased, `[^a-z0-9]` → `-`, at most 63 bytes, no leading/trailing `-`.
pub fn slug(s: &str) -> String {
    let mapped: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cut: String = mapped.chars().take(63).collect();
    cut.trim_matches('-').to_string()
}

/// `grp/sub/app` from an `origin` URL (`git@host:grp/app.git`, `https://host/grp/app.git`).
fn path_from_remote(url: &str) -> Option<String> {
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

/// What `exec` knows about the checkout.
struct Checkout {
    root: PathBuf,
    sha: String,
    branch: String,
    project_path: String,
    default_branch: String,
    dirty: bool,
}

fn checkout(dir: &Path) -> anyhow::Result<Checkout> {
    let root = PathBuf::from(
        git(dir, &["rev-parse", "--show-toplevel"])
            .context("runwright exec runs in a git checkout")?,
    );
    let sha = git(&root, &["rev-parse", "--verify", "HEAD"])
        .context("the checkout has no commit yet: runwright exec runs the committed HEAD")?;
    let branch = git_opt(&root, &["symbolic-ref", "--short", "-q", "HEAD"])
        .unwrap_or_else(|| "main".to_string());
    let project_path = git_opt(&root, &["remote", "get-url", "origin"])
        .and_then(|u| path_from_remote(&u))
        .unwrap_or_else(|| {
            let name = root
                .file_name()
                .map(|n| sanitize_segment(&n.to_string_lossy()))
                .unwrap_or_else(|| "project".into());
            format!("local/{name}")
        });
    let default_branch = git_opt(
        &root,
        &["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"],
    )
    .map(|s| s.strip_prefix("origin/").unwrap_or(&s).to_string())
    .unwrap_or_else(|| branch.clone());
    let dirty = git_opt(&root, &["status", "--porcelain"]).is_some();
    Ok(Checkout {
        root,
        sha,
        branch,
        project_path,
        default_branch,
        dirty,
    })
}

/// GitLab's predefined variables for a push pipeline of HEAD.
fn predefined(c: &Checkout, file: &Path) -> BTreeMap<String, String> {
    let message = git_opt(&c.root, &["log", "-1", "--format=%B"]).unwrap_or_default();
    let title = message.lines().next().unwrap_or_default().to_string();
    let description = message
        .split_once('\n')
        .map(|(_, d)| d.trim_start_matches('\n').to_string())
        .unwrap_or_default();
    let author = git_opt(&c.root, &["log", "-1", "--format=%an <%ae>"]).unwrap_or_default();
    let timestamp = git_opt(&c.root, &["log", "-1", "--format=%cI"]).unwrap_or_default();
    let (namespace, name) = c
        .project_path
        .rsplit_once('/')
        .unwrap_or(("", &c.project_path));
    let mut v = BTreeMap::new();
    let mut set = |k: &str, val: &str| {
        v.insert(k.to_string(), val.to_string());
    };
    set("CI", "true");
    set("GITLAB_CI", "true");
    set("CI_SERVER", "yes");
    set("CI_COMMIT_SHA", &c.sha);
    set("CI_COMMIT_SHORT_SHA", &c.sha[..c.sha.len().min(8)]);
    set(
        "CI_COMMIT_BEFORE_SHA",
        "0000000000000000000000000000000000000000",
    );
    set("CI_COMMIT_BRANCH", &c.branch);
    set("CI_COMMIT_REF_NAME", &c.branch);
    set("CI_COMMIT_REF_SLUG", &slug(&c.branch));
    set("CI_COMMIT_REF_PROTECTED", "false");
    set("CI_COMMIT_MESSAGE", &message);
    set("CI_COMMIT_TITLE", &title);
    set("CI_COMMIT_DESCRIPTION", &description);
    set("CI_COMMIT_AUTHOR", &author);
    set("CI_COMMIT_TIMESTAMP", &timestamp);
    set("CI_PIPELINE_SOURCE", "push");
    set("CI_PIPELINE_ID", &PIPELINE_ID.to_string());
    set("CI_PIPELINE_IID", &PIPELINE_ID.to_string());
    set("CI_DEFAULT_BRANCH", &c.default_branch);
    set("CI_PROJECT_NAME", name);
    set("CI_PROJECT_PATH", &c.project_path);
    set("CI_PROJECT_PATH_SLUG", &slug(&c.project_path));
    set("CI_PROJECT_NAMESPACE", namespace);
    set(
        "CI_PROJECT_ROOT_NAMESPACE",
        namespace.split('/').next().unwrap_or_default(),
    );
    set("CI_CONFIG_PATH", &file.to_string_lossy());
    v
}

fn parse_variables(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--variable {item:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--variable {item:?}: the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub fn run(args: ExecArgs, log: LogArgs) -> anyhow::Result<ExitCode> {
    // Job outcomes are on stdout; the service's per-job warnings (e.g. GitLab's `Job-Status: failed` answer to
    // a failed job's final update) would only repeat them.
    let level = log.level.clone().or_else(|| Some("error".into()));
    crate::logging::init(
        &LogArgs {
            debug: log.debug,
            level,
            format: log.format,
        },
        None,
        None,
    );
    let dir = match &args.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    let co = checkout(&dir)?;
    let file = args.file.clone();
    let mut ctx = PipelineContext::new(predefined(&co, &file));
    ctx.pipeline_variables = parse_variables(&args.variable)?;

    let plan = match Pipeline::load(&co.root, &file).and_then(|c| c.evaluate(&ctx)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: invalid CI configuration: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if !plan.workflow.created {
        println!(
            "workflow:rules: no pipeline is created for this push{}",
            plan.workflow
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.jobs {
        if plan.job(name).is_none() {
            bail!("no job named {name:?} in this pipeline");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_pipeline(&args, &co, plan))
}

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Pending,
    Success,
    Failed { allowed: bool },
    Skipped,
    Manual,
    Canceled,
}

impl Status {
    fn label(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Success => "success",
            Status::Failed { allowed: false } => "failed",
            Status::Failed { allowed: true } => "failed (allowed)",
            Status::Skipped => "skipped",
            Status::Manual => "manual",
            Status::Canceled => "canceled",
        }
    }
    /// A failure that fails the pipeline (and skips `on_success` jobs after it).
    fn blocking_failure(&self) -> bool {
        matches!(self, Status::Failed { allowed: false } | Status::Canceled)
    }
}

/// Writes trace bytes to stdout line by line, stripping ANSI sequences and GitLab section markers when stdout
/// is not a terminal.
struct TraceOut {
    keep_ansi: bool,
    partial: Vec<u8>,
}

impl TraceOut {
    fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        if let Some(pos) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(pos + 1);
            let lines = std::mem::replace(&mut self.partial, rest);
            self.write(&lines);
        }
    }
    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let mut lines = std::mem::take(&mut self.partial);
            lines.push(b'\n');
            self.write(&lines);
        }
    }
    fn write(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = if self.keep_ansi {
            text.into_owned()
        } else {
            strip_ansi(&text)
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Removes ANSI escape sequences and GitLab's `section_start:…\r`/`section_end:…\r` markers.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&n) = chars.peek() {
                    chars.next();
                    if ('\x40'..='\x7e').contains(&n) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    // Section markers end with `\r` before the header text on the same line.
    out.split('\n')
        .map(|line| {
            let mut l = line;
            while let Some(rest) = l
                .strip_prefix("section_start:")
                .or_else(|| l.strip_prefix("section_end:"))
            {
                l = rest.split_once('\r').map_or("", |(_, after)| after);
            }
            l.trim_end_matches('\r')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn notes(job: &PlannedJob) -> Vec<String> {
    let mut n = job.notes.clone();
    if job.image.is_some() || !job.services.is_empty() {
        n.push("image:/services: the docker executor is not available yet; the job runs on the shell executor".into());
    }
    if job.when == When::Delayed {
        n.push("when: delayed runs at once".into());
    }
    n
}

/// Caches outlive a run: `$XDG_CACHE_HOME/runwright/exec/<project>-<hash of the checkout path>`, so two
/// checkouts of one project do not share (or clobber) each other's caches.
fn default_cache_dir(co: &Checkout) -> PathBuf {
    use sha1::{Digest, Sha1};
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let digest = hex::encode(Sha1::digest(co.root.as_os_str().as_encoded_bytes()));
    base.join("runwright").join("exec").join(format!(
        "{}-{}",
        slug(&co.project_path),
        &digest[..12]
    ))
}

async fn run_pipeline(
    args: &ExecArgs,
    co: &Checkout,
    plan: PipelinePlan,
) -> anyhow::Result<ExitCode> {
    let keep_ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let tmp = tempfile::Builder::new()
        .prefix("runwright-exec-")
        .tempdir()
        .context("creating a temporary directory")?;
    let git_root = tmp.path().join("git");
    let project = ProjectSpec {
        default_branch: co.default_branch.clone(),
        ..ProjectSpec::new(1, &co.project_path)
    };
    let bare = git_root.join(project.repo_dir());
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "-q", "--bare"])?;
    git(
        &co.root,
        &[
            "push",
            "-q",
            "--no-verify",
            &bare.to_string_lossy(),
            &format!("{}:refs/heads/{}", co.sha, co.branch),
        ],
    )
    .context("mirroring HEAD for the jobs")?;
    println!(
        "runwright exec: pipeline for {} ({}) of {}",
        &co.sha[..co.sha.len().min(8)],
        co.branch,
        co.project_path
    );
    if co.dirty {
        println!(
            "note: jobs run the committed HEAD; uncommitted changes (and untracked files) are NOT included"
        );
    } else {
        println!("note: jobs run the committed HEAD (uncommitted changes are not included)");
    }

    let coordinator = Coordinator::start(CoordinatorOptions {
        trace_update_interval: 1,
        git_root: Some(git_root),
        ..Default::default()
    })
    .await?;
    coordinator.add_runner(
        TOKEN,
        RunnerOptions {
            description: "runwright exec".into(),
            ..Default::default()
        },
    );
    let cache_dir = match &args.cache_dir {
        Some(d) => std::path::absolute(d)?,
        None => default_cache_dir(co),
    };
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating the cache directory {}", cache_dir.display()))?;
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let toml = format!(
        "concurrent = 1\ncheck_interval = 1\n[[runners]]\n  name = \"exec\"\n  url = \"{}\"\n  token = \"{TOKEN}\"\n  executor = \"shell\"\n  builds_dir = \"{}\"\n  cache_dir = \"{}\"\n",
        coordinator.url(),
        tmp.path().join("builds").display(),
        cache_dir.display(),
    );
    let loaded = runwright_config::parse(&toml, &tmp.path().join("config.toml"))?;
    let shared = crate::service::Shared::new(
        crate::identity::identity("s_000000e8ec00"),
        work,
        None,
        1,
        Duration::from_millis(100),
    );
    for r in &loaded.config.runners {
        crate::service::start_entry(&shared, r).map_err(anyhow::Error::msg)?;
    }

    let selected: Vec<&PlannedJob> = plan
        .jobs
        .iter()
        .filter(|j| args.jobs.is_empty() || args.jobs.contains(&j.name))
        .collect();
    let index: HashMap<&str, usize> = selected
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut status = vec![Status::Pending; selected.len()];
    let mut durations: Vec<Option<Duration>> = vec![None; selected.len()];
    let mut ids: HashMap<&str, i64> = HashMap::new();
    let started = Instant::now();

    // Ctrl-C / SIGTERM: abort the running job (its processes are in their own process group, out of the
    // terminal's reach) the way the service does, and start no more.
    let interrupted = tokio_util::sync::CancellationToken::new();
    {
        let interrupted = interrupted.clone();
        let abort = shared.abort_jobs.clone();
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
            eprintln!("runwright exec: interrupted, aborting the running job");
            interrupted.cancel();
            abort.cancel();
        });
    }

    loop {
        if interrupted.is_cancelled() {
            for s in status.iter_mut().filter(|s| **s == Status::Pending) {
                *s = Status::Canceled;
            }
            break;
        }
        // The first pending job (plan order) whose predecessors are all done.
        let preds = |i: usize| -> Vec<usize> {
            let j = selected[i];
            match &j.needs {
                Some(needs) => needs
                    .iter()
                    .filter_map(|n| index.get(n.job.as_str()).copied())
                    .collect(),
                None => (0..selected.len())
                    .filter(|&k| selected[k].stage_index < j.stage_index)
                    .collect(),
            }
        };
        let next = (0..selected.len()).find(|&i| {
            status[i] == Status::Pending && preds(i).iter().all(|&p| status[p] != Status::Pending)
        });
        let Some(i) = next else {
            for s in status.iter_mut().filter(|s| **s == Status::Pending) {
                *s = Status::Skipped;
            }
            break;
        };
        let job = selected[i];
        let failed_before = preds(i).iter().any(|&p| status[p].blocking_failure());
        let named = args.jobs.contains(&job.name);
        let run = match job.when {
            When::OnSuccess | When::Delayed => !failed_before,
            When::OnFailure => failed_before,
            When::Always => true,
            When::Manual => named,
            When::Never => false,
        };
        if !run {
            status[i] = if job.when == When::Manual {
                Status::Manual
            } else {
                Status::Skipped
            };
            let why = match job.when {
                When::Manual => "manual job (name it on the command line to run it)",
                When::OnFailure => "when: on_failure, nothing failed",
                When::Never => "when: never",
                _ => "an earlier job failed",
            };
            println!(
                "--- {} ({}): {} — {why}",
                job.name,
                job.stage,
                status[i].label()
            );
            continue;
        }
        if job.trigger.is_some() {
            println!(
                "--- {} ({}): skipped — trigger: jobs are not supported by runwright exec yet",
                job.name, job.stage
            );
            status[i] = Status::Skipped;
            continue;
        }
        println!("=== {} ({})", job.name, job.stage);
        for n in notes(job) {
            println!("note: {}: {n}", job.name);
        }
        let t0 = Instant::now();
        // Artifacts come from the jobs named by `dependencies` (or derived from needs / earlier stages)
        // that ran in this pipeline.
        let deps: Vec<i64> = match &job.dependencies {
            Some(names) => names
                .iter()
                .filter_map(|n| ids.get(n.as_str()).copied())
                .collect(),
            None => (0..selected.len())
                .filter(|&k| selected[k].stage_index < job.stage_index)
                .filter_map(|k| ids.get(selected[k].name.as_str()).copied())
                .collect(),
        };
        let id = coordinator.enqueue(jobspec::spec_for(job, co, &project, PIPELINE_ID, deps));
        ids.insert(job.name.as_str(), id);
        let deadline = Instant::now()
            + Duration::from_secs(job.timeout.unwrap_or(3600))
            + Duration::from_secs(120);
        let mut out = TraceOut {
            keep_ansi,
            partial: Vec::new(),
        };
        let mut printed = 0usize;
        let record = loop {
            let res = coordinator
                .wait_for(id, Duration::from_millis(500), |r| {
                    r.is_final() || r.trace.len() > printed
                })
                .await;
            let Some(rec) = coordinator.job(id) else {
                bail!("job {} vanished from the coordinator", job.name);
            };
            if rec.trace.len() > printed {
                out.push(&rec.trace[printed..]);
                printed = rec.trace.len();
            }
            if rec.is_final() {
                break rec;
            }
            if res.is_err() && Instant::now() > deadline {
                bail!(
                    "job {} did not finish in time (state {})",
                    job.name,
                    rec.state
                );
            }
        };
        out.finish();
        durations[i] = Some(t0.elapsed());
        status[i] = match record.state.as_str() {
            "success" => Status::Success,
            "canceled" => Status::Canceled,
            _ => {
                let by_code = record
                    .exit_code
                    .is_some_and(|c| job.allow_failure_exit_codes.contains(&i64::from(c)));
                Status::Failed {
                    allowed: job.allow_failure || by_code,
                }
            }
        };
        println!(
            "=== {} ({}): {} in {:.1}s",
            job.name,
            job.stage,
            status[i].label(),
            t0.elapsed().as_secs_f64()
        );
    }

    crate::service::drain(&shared).await;
    let interrupted = interrupted.is_cancelled();
    coordinator.shutdown().await;

    let passed = !status.iter().any(Status::blocking_failure);
    let w_job = selected
        .iter()
        .map(|j| j.name.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let w_stage = selected
        .iter()
        .map(|j| j.stage.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!();
    println!(
        "{:<w_job$}  {:<w_stage$}  {:<16}  duration",
        "job", "stage", "status"
    );
    for (i, j) in selected.iter().enumerate() {
        let d = durations[i].map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        println!(
            "{:<w_job$}  {:<w_stage$}  {:<16}  {d}",
            j.name,
            j.stage,
            status[i].label()
        );
    }
    println!(
        "pipeline {} in {:.1}s",
        if passed { "passed" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    Ok(if interrupted {
        ExitCode::from(130)
    } else if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_remote_paths() {
        assert_eq!(slug("Feature/Foo_bar"), "feature-foo-bar");
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

    #[test]
    fn strips_ansi_and_sections() {
        let s = "section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m\nhi\nsection_end:1:step\r\x1b[0K\n";
        assert_eq!(strip_ansi(s), "$ echo hi\nhi\n\n");
    }
}
