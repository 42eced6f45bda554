//! `runwright exec`: a `.gitlab-ci.yml` run on this machine (issue 3).
//!
//! The pipeline model (`runwright-pipeline`) plans the jobs for a push pipeline; the sources are the working
//! tree as it is, committed on top of HEAD without touching the user's index (`sources.rs`), or HEAD alone with
//! `--committed`. An embedded coordinator (`runwright-coordinator`) serves the jobs, and that commit as a bare
//! mirror, over GitLab's runner API on loopback; the service's own pollers and job handling (`runwright-service`)
//! run them with the shell executor — the same code path as `runwright run`. A run is set up (`setup.rs`, with
//! the typed runner config of `runner.rs`), then its loop (`pipeline.rs`) starts jobs as soon as their
//! `needs` (or earlier stages) allow, up to `-j` at once (`schedule.rs`); a `Reporter` (`report.rs`) shows them:
//! traces on stdout, `[job] ` prefixed when several may run (`output.rs`), or the live view (`live.rs`); every
//! run leaves a pipeline directory (`state.rs`, `files.rs`). Child
//! pipelines of `trigger:include` are planned with the pipeline and scheduled with it (`children.rs`);
//! `rules:changes` sees git's changes for the pipeline source (`changes.rs`). `runwright lint` (`lint.rs`)
//! prints the pipeline's merged configuration.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub use error::ExecError;

// First: its `say!` is used by the modules below.
#[macro_use]
mod stdout;
mod changes;
mod checkout;
mod children;
pub(crate) mod context;
mod error;
mod files;
mod jobspec;
pub mod lint;
mod list;
mod live;
mod output;
mod pipeline;
mod report;
mod runner;
mod schedule;
mod setup;
mod sources;
mod state;

use anyhow::{bail, Context};
use checkout::{git, git_opt, Checkout};
use output::TraceOut;
use runwright_coordinator::Coordinator;
use runwright_pipeline::{slug, PlannedJob, When};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PIPELINE_ID: i64 = 1;

/// The run's runner tokens: random for each run (GitLab's format), so no other local user can reach the
/// embedded coordinator's jobs — take one with its variables and sources, report a fake result, upload an
/// artifact a later job runs, or lock the run's own runner out. Job tokens are random per job already.
struct Tokens {
    /// The shell runner's (in process, or the `--serve`d config's).
    shell: String,
    /// The docker runner's.
    docker: String,
}

impl Tokens {
    fn new() -> Tokens {
        Tokens {
            shell: runwright_coordinator::new_runner_token(),
            docker: runwright_coordinator::new_runner_token(),
        }
    }
}

/// How long an interrupted run lets its aborted jobs end and report before it cancels what is left at the
/// coordinator and stops waiting: gitlab-runner's `DefaultShutdownTimeout` (common/consts.go), which bounds
/// its own forceful shutdown (commands/single.go `waitForInterrupts`). A second signal does it at once.
const INTERRUPT_GRACE: Duration = Duration::from_secs(30);
/// How long the killed jobs of a forced end get for their final updates to the (in-process) coordinator.
const FINAL_REPORTS: Duration = Duration::from_secs(5);

/// GitLab's predefined variables for a `source` pipeline of HEAD (`context.rs` has what differs from a push).
fn predefined(
    c: &Checkout,
    file: &Path,
    source: context::PipelineSource,
) -> anyhow::Result<BTreeMap<String, String>> {
    let message = c.head.message.clone();
    let title = message.lines().next().unwrap_or_default().to_string();
    let description = message
        .split_once('\n')
        .map(|(_, d)| d.trim_start_matches('\n').to_string())
        .unwrap_or_default();
    let author = format!("{} <{}>", c.head.author_name, c.head.author_email);
    let timestamp = c.head.committer_date.clone();
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
    // GitLab protects the default branch unless told otherwise (what the jobs' caches follow too, jobspec.rs);
    // `context.rs` unprotects tag and merge request refs.
    set(
        "CI_COMMIT_REF_PROTECTED",
        &(c.branch == c.default_branch).to_string(),
    );
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
    context::apply(source, c, &mut v)?;
    Ok(v)
}

fn parse_variables(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list {
        let Some((k, v)) = item.split_once('=') else {
            return Err(
                ExecError::Usage(format!("--variable {item:?}: expected KEY=VALUE")).into(),
            );
        };
        if k.is_empty() {
            return Err(ExecError::Usage(format!("--variable {item:?}: the key is empty")).into());
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// What the jobs check out.
enum Sources {
    /// `--committed`: HEAD as it is.
    Committed { dirty: bool },
    /// The working tree, committed on top of `head` (or HEAD itself when nothing changed).
    WorkingTree { head: String, changed: bool },
}

/// What `runwright exec` is asked to do (its command line, without the parser).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The CI file, relative to the top of the checkout.
    pub file: PathBuf,
    /// Pipeline variables (highest precedence), `KEY=VALUE`.
    pub variable: Vec<String>,
    /// The checkout to run (default: the current directory).
    pub directory: Option<PathBuf>,
    /// Run only these jobs (manual jobs named here run too).
    pub jobs: Vec<String>,
    /// Where caches persist between runs (default: `$XDG_CACHE_HOME/runwright/exec/<project>`).
    pub cache_dir: Option<PathBuf>,
    /// Run the committed HEAD instead of the working tree as it is.
    pub committed: bool,
    /// How many jobs run at once (default: the number of cores).
    pub concurrency: Option<usize>,
    /// With `jobs`: also run the jobs they need (transitively).
    pub needs: bool,
    /// Manual jobs to start too.
    pub manual: Vec<String>,
    /// Print the plan and run nothing.
    pub list: bool,
    /// With `list`: the plan as JSON on stdout.
    pub json: bool,
    /// The simulated pipeline source: push, merge_request_event, schedule, web, tag, api, trigger.
    pub pipeline_source: String,
    /// Where jobs run: `auto`, `shell` or `docker`.
    pub executor: String,
    /// The image of docker jobs that name none.
    pub docker_image: Option<String>,
    /// The docker executor's pull policy: always, if-not-present, never.
    pub docker_pull_policy: String,
    /// Serve the jobs to a runner outside this process, on this address.
    pub serve: Option<std::net::SocketAddr>,
    /// What a person sees: `live`, `lines` or `auto`.
    pub view: String,
}

/// Runs the pipeline (or lists it). Logging is set up by the caller.
pub fn run(args: ExecOptions) -> anyhow::Result<ExitCode> {
    let dir = match &args.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    let concurrency = match args.concurrency {
        Some(0) => {
            return Err(ExecError::Usage(
                "--concurrency 0 would run nothing: give -j 1 or more".into(),
            )
            .into())
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Jobs check out a commit, and the working tree's is made on top of HEAD: an unborn branch has none.
    let mut co = checkout::checkout(&dir)?;
    let sources = if args.committed {
        Sources::Committed { dirty: co.dirty() }
    } else {
        let head = co.sha.clone();
        let snap = sources::working_tree(&co)?;
        // Everything downstream (CI_COMMIT_SHA, the jobs' checkout, `key:files`) uses the commit the jobs run.
        co.sha = snap.sha;
        Sources::WorkingTree {
            head,
            changed: snap.changed,
        }
    };
    let file = args.file.clone();
    let ctx = context::pipeline_context(&args, &co)?;
    // Child pipelines keep the project's variables; the pipeline's own reach them only when forwarded.
    let project_variables = context::project_variables(&co.root)?;
    // The whole run is planned first, child pipelines included: an invalid one runs nothing.
    let planned =
        children::plan(&co.root, &file, &ctx, &project_variables).map_err(ExecError::InvalidCi)?;
    if args.list {
        let chosen = list::Chosen {
            jobs: args.jobs.clone(),
            needs: args.needs,
            manual: args.manual.clone(),
        };
        return list::run(
            &file,
            &planned,
            &args.pipeline_source,
            args.json,
            &chosen,
            &co.branch,
            &ctx,
        );
    }
    let plan = &planned.plan;
    if !plan.workflow.created {
        say!(
            "{}",
            list::no_pipeline(&args.pipeline_source, &plan.workflow)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A tag pipeline's jobs get the tag as their ref (CI_COMMIT_TAG, ref_type tag), a merge request
    // pipeline's the merge request's ref, as GitLab hands them out.
    let job_ref = jobspec::JobRef::of(&ctx.variables);
    rt.block_on(run_pipeline(
        &args,
        &co,
        &planned,
        &sources,
        concurrency,
        &job_ref,
    ))
}

/// Whether the run uses the docker executor, and if not, why (for the notes of jobs with `image:`).
enum Docker {
    On,
    Off(String),
}

/// How long the embedded coordinator holds a runner's job request while nothing is queued (GitLab's Workhorse
/// default `apiCiLongPollingDuration` is 50 s; shorter here so an idle run's runner notices a stop quickly).
const LONG_POLL: Duration = Duration::from_secs(5);

fn wants_docker(job: &PlannedJob) -> bool {
    job.image.is_some() || !job.services.is_empty()
}

/// The docker executor is used when asked for, or (auto) when a job wants it and a daemon answers.
async fn docker_decision(args: &ExecOptions, jobs: &[&PlannedJob]) -> anyhow::Result<Docker> {
    if args.executor == "shell" {
        return Ok(Docker::Off("--executor shell".into()));
    }
    if args.executor == "auto" && !jobs.iter().any(|j| wants_docker(j)) {
        return Ok(Docker::Off("no job needs it".into()));
    }
    let ping = async {
        let docker = runwright_docker::connect(None, None, false)
            .await
            .map_err(|e| e.with_hint())?;
        docker.ping().await.map_err(|e| format!("{e}")).map(|_| ())
    };
    let answer = match tokio::time::timeout(Duration::from_secs(5), ping).await {
        Ok(r) => r,
        Err(_) => Err("no answer within 5 s".to_string()),
    };
    match (answer, args.executor.as_str()) {
        (Ok(()), _) => Ok(Docker::On),
        (Err(e), "docker") => bail!(
            "--executor docker: the Docker daemon does not answer ({e}); start it, set DOCKER_HOST, or use --executor shell"
        ),
        (Err(e), _) => Ok(Docker::Off(format!("no Docker daemon answers ({e})"))),
    }
}

fn notes(job: &PlannedJob, docker: &Docker) -> Vec<String> {
    let mut n = job.notes.clone();
    if let Docker::Off(why) = docker {
        if wants_docker(job) {
            n.push(format!(
                "image:/services: the job runs on the shell executor: {why}"
            ));
        }
    }
    if job.when == When::Delayed {
        n.push("when: delayed runs at once".into());
    }
    n
}

/// `<project>-<hash of the checkout path>`: two checkouts of one project keep apart what outlives a run.
fn checkout_key(co: &Checkout) -> String {
    use sha1::{Digest, Sha1};
    let digest = hex::encode(Sha1::digest(co.root.as_os_str().as_encoded_bytes()));
    format!("{}-{}", slug(&co.project_path), &digest[..12])
}

/// Caches outlive a run: `$XDG_CACHE_HOME/runwright/exec/<project>-<hash of the checkout path>`, so two
/// checkouts of one project do not share (or clobber) each other's caches.
fn default_cache_dir(co: &Checkout) -> PathBuf {
    let base = std::env::var_os(runwright_static::env_vars::XDG_CACHE_HOME)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os(runwright_static::env_vars::HOME)
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("runwright").join("exec").join(checkout_key(co))
}

/// Streams a job's trace (stdout and its log file) until it is final. Each poll reads the trace from where the
/// last one ended; the whole record is read once, at the end.
async fn follow(
    coordinator: Coordinator,
    id: i64,
    name: String,
    mut out: TraceOut,
    deadline: Instant,
) -> anyhow::Result<runwright_coordinator::JobRecord> {
    let mut printed = 0usize;
    loop {
        let Ok(chunk) = coordinator
            .wait_for_trace(id, printed, Duration::from_millis(500))
            .await
        else {
            bail!("job {name} vanished from the coordinator");
        };
        let waited_out = chunk.bytes.is_empty() && !chunk.is_final();
        if !chunk.bytes.is_empty() {
            out.push(&chunk.bytes);
            printed += chunk.bytes.len();
        } else if waited_out {
            out.idle();
        }
        if chunk.is_final() {
            break;
        }
        if waited_out && Instant::now() > deadline {
            // The runner enforces the job's timeout itself; this is the safety net if it never reports back.
            coordinator.force_cancel(id);
            out.finish();
            bail!(
                "job {name} did not finish in time (state {}); canceled",
                chunk.state
            );
        }
    }
    out.finish();
    // The outcome (state, exit code, artifacts): a final job's record no longer changes.
    coordinator
        .job(id)
        .with_context(|| format!("job {name} vanished from the coordinator"))
}

/// Runs the planned pipeline: set-up, then the schedule loop until every job has ended, then the summary.
async fn run_pipeline(
    args: &ExecOptions,
    co: &Checkout,
    planned: &children::Planned,
    sources: &Sources,
    concurrency: usize,
    job_ref: &jobspec::JobRef,
) -> anyhow::Result<ExitCode> {
    let (run, sched) = setup::set_up(args, co, planned, sources, concurrency, job_ref).await?;
    let reporter = pipeline::reporter(&run, &sched);
    let started = Instant::now();
    let interrupt = pipeline::watch_signals(run.shared.as_ref().map(|s| s.abort_jobs.clone()))?;
    let mut schedule = pipeline::Schedule::new(
        args,
        co,
        job_ref,
        concurrency,
        &run,
        reporter.as_ref(),
        sched,
    );
    schedule.run(&interrupt).await?;
    schedule.finish(&interrupt, started).await
}

/// An interrupted run: the signal, and the two phases it starts.
#[derive(Clone, Default)]
struct Interrupt {
    /// The first SIGINT or SIGTERM.
    signal: std::sync::Arc<std::sync::OnceLock<nix::sys::signal::Signal>>,
    /// Cancelled at the first signal: nothing more starts, pending jobs are canceled, running ones aborted.
    first: tokio_util::sync::CancellationToken,
    /// Cancelled at a second signal or when [`INTERRUPT_GRACE`] is over: whatever is left is canceled at the
    /// coordinator and not waited for.
    forced: tokio_util::sync::CancellationToken,
}

/// Cancels an interrupted run's jobs at the coordinator, as GitLab cancels a pipeline's
/// (app/models/commit_status.rb `cancel`): a job no runner has taken is canceled at once, a served job
/// (`served`: its runner is another process) is canceled as GitLab's UI does — its runner sees it on its next
/// trace patch. The in-process runner's jobs are left to `abort_jobs`, which also sends their final update.
/// `force`: every job that is not final is canceled now, whoever has it.
fn cancel_at_coordinator(coordinator: &Coordinator, served: bool, force: bool) {
    for job in coordinator.jobs() {
        if job.is_final() {
            continue;
        }
        if force {
            coordinator.force_cancel(job.id);
        } else if served || job.runner_token.is_none() {
            coordinator.cancel(job.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runwright_coordinator::{CoordinatorOptions, RunnerOptions};

    #[tokio::test]
    async fn an_interrupt_cancels_queued_jobs_and_a_forced_end_every_job() {
        let coordinator = Coordinator::start(CoordinatorOptions::default())
            .await
            .expect("coordinator");
        let token = runwright_coordinator::new_runner_token();
        assert!(
            token.starts_with("glrt-t1_") && token.len() == 28,
            "{token}"
        );
        assert_ne!(token, runwright_coordinator::new_runner_token());
        coordinator.add_runner(&token, RunnerOptions::default());
        let queued = coordinator.enqueue(runwright_coordinator::JobSpec::shell("a", &["true"]));
        cancel_at_coordinator(&coordinator, false, false);
        assert_eq!(coordinator.job(queued).expect("job").state, "canceled");
        let other = coordinator.enqueue(runwright_coordinator::JobSpec::shell("b", &["true"]));
        cancel_at_coordinator(&coordinator, false, true);
        assert_eq!(coordinator.job(other).expect("job").state, "canceled");
        coordinator.shutdown().await;
    }
}
