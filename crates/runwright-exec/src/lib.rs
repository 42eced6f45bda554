//! `runwright exec`: a `.gitlab-ci.yml` run on this machine (issue 3).
//!
//! The pipeline model (`runwright-pipeline`) plans the jobs for a push pipeline; the sources are the working
//! tree as it is, committed on top of HEAD without touching the user's index (`sources.rs`), or HEAD alone with
//! `--committed`. An embedded coordinator (`runwright-coordinator`) serves the jobs, and that commit as a bare
//! mirror, over GitLab's runner API on loopback; the service's own pollers and job handling (`runwright-service`)
//! run them with the shell executor — the same code path as `runwright run`. Jobs start as soon as their
//! `needs` (or earlier stages) allow, up to `-j` at once (`schedule.rs`); traces stream to stdout, `[job] `
//! prefixed when several may run (`output.rs`); every run leaves a pipeline directory (`state.rs`). Child
//! pipelines of `trigger:include` are planned with the pipeline and scheduled with it (`children.rs`);
//! `rules:changes` sees git's changes for the pipeline source (`changes.rs`). `runwright lint` (`lint.rs`)
//! prints the pipeline's merged configuration.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub use error::ExecError;

mod changes;
mod checkout;
mod children;
pub(crate) mod context;
mod error;
mod jobspec;
pub mod lint;
mod list;
mod live;
mod output;
mod schedule;
mod sources;
mod state;

use anyhow::{bail, Context};
use checkout::{git, git_opt, Checkout};
use output::TraceOut;
use runwright_coordinator::{Coordinator, CoordinatorOptions, ProjectSpec, RunnerOptions};
use runwright_pipeline::{slug, PlannedJob, When};
use schedule::Status;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
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
        println!(
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

/// How a job ended, for the summary table and `summary.json`.
#[derive(Default, Clone)]
struct Outcome {
    duration: Option<Duration>,
    exit_code: Option<i32>,
    log: Option<String>,
    artifacts: Vec<String>,
}

/// Streams a job's trace (stdout and its log file) until it is final.
async fn follow(
    coordinator: Coordinator,
    id: i64,
    name: String,
    mut out: TraceOut,
    deadline: Instant,
) -> anyhow::Result<runwright_coordinator::JobRecord> {
    let mut printed = 0usize;
    let record = loop {
        let res = coordinator
            .wait_for(id, Duration::from_millis(500), |r| {
                r.is_final() || r.trace.len() > printed
            })
            .await;
        let Some(rec) = coordinator.job(id) else {
            bail!("job {name} vanished from the coordinator");
        };
        if rec.trace.len() > printed {
            out.push(&rec.trace[printed..]);
            printed = rec.trace.len();
        } else if res.is_err() {
            out.idle();
        }
        if rec.is_final() {
            break rec;
        }
        if res.is_err() && Instant::now() > deadline {
            // The runner enforces the job's timeout itself; this is the safety net if it never reports back.
            coordinator.force_cancel(id);
            out.finish();
            bail!(
                "job {name} did not finish in time (state {}); canceled",
                rec.state
            );
        }
    };
    out.finish();
    Ok(record)
}

async fn run_pipeline(
    args: &ExecOptions,
    co: &Checkout,
    planned: &children::Planned,
    sources: &Sources,
    concurrency: usize,
    job_ref: &jobspec::JobRef,
) -> anyhow::Result<ExitCode> {
    let plan = &planned.plan;
    let (selected, runs) = children::flatten(
        schedule::select(plan, &args.jobs, args.needs, &args.manual)?,
        &planned.children,
    );
    if args.needs && args.jobs.is_empty() {
        println!("note: --needs adds what named jobs need; without JOB names the whole pipeline runs anyway");
    }
    for name in &args.manual {
        if plan.job(name).is_some_and(|j| j.when != When::Manual) {
            println!("note: --manual {name}: not a manual job; it runs by its own `when`");
        }
    }
    let terminal = std::io::stdout().is_terminal();
    let colour = terminal && std::env::var_os(runwright_static::env_vars::NO_COLOR).is_none();
    let keep_ansi = colour;
    let prefixed = concurrency > 1 && selected.len() > 1;
    let live_view = match args.view.as_str() {
        "live" => true,
        "lines" => false,
        _ => {
            terminal
                && std::env::var(runwright_static::env_vars::TERM).map_or(true, |t| t != "dumb")
        }
    };

    let run_dir = state::create_run(&state::pipelines_dir(&checkout_key(co)))?;
    let stems = state::file_stems(selected.iter().map(|s| s.display.as_str()));
    let plan_json = serde_json::json!({
        "project": co.project_path,
        "ref": co.branch,
        "sha": co.sha,
        "sources": match sources { Sources::Committed { .. } => "committed", Sources::WorkingTree { .. } => "working tree" },
        "stages": plan.stages,
        "jobs": selected.iter().filter(|s| s.pipeline == 0).map(|s| s.job).collect::<Vec<_>>(),
        "child_pipelines": runs.iter().skip(1).map(|r| serde_json::json!({
            "id": r.id,
            "trigger_job": r.trigger.map(|t| &selected[t].display),
            "include": r.include,
            "depend": r.depend,
            "jobs": selected.iter().filter(|s| runs.get(s.pipeline).is_some_and(|x| x.id == r.id)).map(|s| s.job).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    state::write_json(&run_dir.path, "plan.json", &plan_json)?;

    // The jobs' builds, the served repository and the runner's work dir: this user's only (issue 17).
    let tmp = tempfile::Builder::new()
        .prefix("runwright-exec-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
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
    // The jobs' repository borrows the checkout's objects (`objects/info/alternates`) and gets only refs: a
    // push would copy the objects through five processes. A path git cannot list there is pushed to.
    let objects = co.objects.to_string_lossy();
    let borrowed = co.objects.is_absolute()
        && !objects.contains('\n')
        && std::fs::write(bare.join("objects/info/alternates"), format!("{objects}\n")).is_ok();
    // Git LFS objects too: git-lfs and the coordinator read them from the served repository's
    // `lfs/objects`, which is the checkout's own store.
    let mut lfs_objects = false;
    if let Some(store) = co.objects.parent().map(|g| g.join("lfs/objects")) {
        if store.is_dir() && std::fs::create_dir_all(bare.join("lfs")).is_ok() {
            lfs_objects = std::os::unix::fs::symlink(&store, bare.join("lfs/objects")).is_ok();
        }
    }
    // Points `dest` at `commit` in the repository the jobs fetch from.
    let mirror = |commit: &str, dest: &str| {
        if borrowed {
            git(&bare, &["update-ref", dest, commit])
        } else {
            let bare = bare.to_string_lossy();
            let refspec = format!("{commit}:{dest}");
            git(&co.root, &["push", "-q", "--no-verify", &bare, &refspec])
        }
    };
    mirror(&co.sha, &format!("refs/heads/{}", co.branch))
        .context("mirroring the sources for the jobs")?;
    if let jobspec::JobRef::Tag(tag) = job_ref {
        mirror(&co.sha, &format!("refs/tags/{tag}"))
            .with_context(|| format!("mirroring the tag {tag} for the jobs"))?;
    }
    if let jobspec::JobRef::MergeRequest(_) = job_ref {
        // The target branch, as GitLab's repository has it: jobs may fetch it (or
        // CI_MERGE_REQUEST_DIFF_BASE_SHA) to diff against. The merge request's own ref is made by the
        // coordinator with the pipeline.
        let target = &co.default_branch;
        if let Some(commit) = [
            format!("refs/heads/{target}"),
            format!("refs/remotes/origin/{target}"),
        ]
        .iter()
        .find_map(|r| git_opt(&co.root, &["rev-parse", "--verify", "-q", r]))
        {
            mirror(&commit, &format!("refs/heads/{target}"))
                .with_context(|| format!("mirroring the target branch {target} for the jobs"))?;
        }
    }
    let short = |s: &str| s[..s.len().min(8)].to_string();
    println!(
        "runwright exec: pipeline {} for {} ({}) of {}",
        run_dir.number,
        short(&co.sha),
        co.branch,
        co.project_path
    );
    match sources {
        Sources::Committed { dirty: true } => println!(
            "note: --committed: jobs run the committed HEAD; uncommitted changes (and untracked files) are NOT included"
        ),
        Sources::Committed { dirty: false } => {
            println!("note: --committed: jobs run the committed HEAD")
        }
        Sources::WorkingTree {
            head,
            changed: true,
        } => println!(
            "note: jobs run the working tree as it is (uncommitted changes and untracked files included), committed on top of HEAD {} as {}: CI_COMMIT_SHA and `git rev-parse HEAD` in the jobs are that commit; your index and HEAD are untouched (--committed runs HEAD alone)",
            short(head),
            short(&co.sha)
        ),
        Sources::WorkingTree { changed: false, .. } => {
            println!("note: jobs run the working tree, which matches HEAD")
        }
    }
    if selected.len() > 1 {
        println!("note: up to {concurrency} jobs at once (-j N to change)");
    }

    let coordinator = Coordinator::start(CoordinatorOptions {
        bind: args.serve.unwrap_or(CoordinatorOptions::default().bind),
        trace_update_interval: 1,
        git_root: Some(git_root.clone()),
        ..Default::default()
    })
    .await
    .context("starting the embedded coordinator")?;
    let tokens = Tokens::new();
    coordinator.add_runner(
        &tokens.shell,
        RunnerOptions {
            description: "runwright exec".into(),
            // Workhorse's long polling: a job is handed out the moment the scheduler enqueues it, instead of at
            // the runner's next poll.
            long_poll: Some(LONG_POLL),
            ..Default::default()
        },
    );
    let cache_dir = match &args.cache_dir {
        Some(d) => std::path::absolute(d)?,
        None => default_cache_dir(co),
    };
    // A new cache directory is this user's only; an existing one is left as it is.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&cache_dir)
        .with_context(|| format!("creating the cache directory {}", cache_dir.display()))?;
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    // `concurrent` and the entry's `limit` both allow the run's concurrency. The shell executor's builds dir is
    // shared, so each running job gets `<builds>/<token>/<CI_CONCURRENT_PROJECT_ID>/<project>`: parallel jobs
    // never share a project directory.
    let mut toml = format!(
        "concurrent = {concurrency}\ncheck_interval = 1\n[[runners]]\n  name = \"exec\"\n  url = \"{}\"\n  token = \"{}\"\n  executor = \"shell\"\n  limit = {concurrency}\n  builds_dir = {}\n  cache_dir = {}\n",
        coordinator.url(),
        tokens.shell,
        toml_string(&tmp.path().join("builds").display().to_string()),
        toml_string(&cache_dir.display().to_string()),
    );
    // Jobs run in this process on this machine: they fetch the coordinator's repository over git's local
    // transport (GitLab's `clone_url`), each into its own project directory as before, without an HTTP round
    // trip and a `git http-backend` per request. CI_REPOSITORY_URL stays the coordinator's HTTP URL. A runner
    // elsewhere (--serve) or a container (docker entry) fetches over HTTP.
    if args.serve.is_none() {
        if let Ok(url) = url::Url::from_directory_path(&git_root) {
            toml.push_str(&format!("  clone_url = {}\n", toml_string(url.as_str())));
        }
    }
    let docker = if args.serve.is_some() {
        Docker::Off(
            "the jobs are served to an outside runner (--serve), whose executor decides".into(),
        )
    } else {
        docker_decision(args, &selected.iter().map(|s| s.job).collect::<Vec<_>>()).await?
    };
    if args.executor == "docker" && args.docker_image.is_none() {
        if let Some(s) = selected.iter().find(|s| s.job.image.is_none()) {
            bail!(
                "--executor docker: job {:?} has no image: name one with --docker-image IMAGE (or image: in the file)",
                s.job.name
            );
        }
    }
    if matches!(docker, Docker::On) {
        coordinator.add_runner(
            &tokens.docker,
            RunnerOptions {
                description: "runwright exec (docker)".into(),
                long_poll: Some(LONG_POLL),
                ..Default::default()
            },
        );
        // The cache dir is bound into the containers at GitLab's /cache, so both executors keep one cache;
        // `disable_cache` makes the builds volumes per job, so a run leaves nothing on the daemon.
        let default_image = args.docker_image.clone().unwrap_or_default();
        toml.push_str(&format!(
            "[[runners]]\n  name = \"exec-docker\"\n  url = \"{}\"\n  token = \"{}\"\n  executor = \"docker\"\n  limit = {concurrency}\n  cache_dir = \"/cache\"\n  [runners.docker]\n    image = {}\n    pull_policy = [\"{}\"]\n    disable_cache = true\n    volumes = [{}]\n",
            coordinator.url(),
            tokens.docker,
            toml_string(&default_image),
            args.docker_pull_policy,
            toml_string(&format!("{}:/cache", cache_dir.display())),
        ));
        println!(
            "note: jobs with image: or services: run on the docker executor{}",
            if args.executor == "docker" {
                " (and, with --executor docker, all the others too)"
            } else {
                ""
            }
        );
    }
    // Served: the same config, for a runner in another process (the equivalence test runs `runwright run` with
    // it); otherwise the entries run in this process, through the service's own code.
    let shared = if args.serve.is_some() {
        // It holds the run's runner token: 0600, in the run's 0700 directory, and the token is not printed.
        let path = run_dir.path.join("runner.toml");
        state::write_private(&path, toml.as_bytes()).context("writing the runner config")?;
        println!(
            "runwright exec: serving the jobs at {}; run them with: runwright run -c {}",
            coordinator.url(),
            path.display()
        );
        None
    } else {
        let mut loaded = runwright_config::parse(&toml, &tmp.path().join("config.toml"))?;
        // A checkout without a Git LFS store has nothing for `git lfs pull` to fetch: the jobs skip it.
        for r in &mut loaded.config.runners {
            r.without_lfs_objects = !lfs_objects;
        }
        let shared = runwright_service::Shared::new(
            runwright_service::identity::identity("s_000000e8ec00"),
            work,
            None,
            concurrency,
            // The pause after an answer without a job (GitLab's runner waits check_interval then too). The
            // embedded coordinator long-polls: a held request that sees the queue change is answered without a
            // job (Workhorse's SeenChange), and the job follows on the next request — after this pause, on the
            // critical path of every job that waited for another. Errors do not spin: the entry's health
            // checks back off after `unhealthy_requests_limit` failures.
            Duration::from_millis(1),
        );
        for r in &loaded.config.runners {
            runwright_service::start_entry(&shared, r)?;
        }
        Some(shared)
    };

    let mut sched = schedule::Scheduler::with_pipelines(selected, runs);
    let mut outcomes = vec![Outcome::default(); sched.jobs.len()];
    let live = live_view.then(|| {
        let rows: Vec<(&str, &str)> = sched
            .jobs
            .iter()
            .map(|s| (s.display.as_str(), s.job.stage.as_str()))
            .collect();
        live::Live::new(&rows, colour, false)
    });
    let mut tails: Vec<Option<std::sync::Arc<std::sync::Mutex<live::Tail>>>> =
        vec![None; sched.jobs.len()];
    // A line of the run's own: above the live view's rows, or on stdout.
    let say = |text: &str| match &live {
        Some(l) => l.println(text),
        None => println!("{text}"),
    };
    // Job ids by pipeline and name: artifacts come from the job's own pipeline.
    let mut ids: HashMap<(usize, String), i64> = HashMap::new();
    let started = Instant::now();

    // Ctrl-C / SIGTERM end the run, whatever its jobs do: nothing more starts, jobs no runner took are
    // canceled, the in-process runner's jobs are aborted as the service aborts them on its own SIGTERM (their
    // processes are in their own process groups, out of the terminal's reach), served ones canceled as GitLab
    // cancels a job. What has not ended after INTERRUPT_GRACE — or at a second signal — is canceled at the
    // coordinator and no longer waited for (gitlab-runner commands/single.go `waitForInterrupts`: abort, then
    // exit at a second signal or the shutdown timeout).
    let interrupt = Interrupt::default();
    {
        let interrupt = interrupt.clone();
        let abort = shared.as_ref().map(|s| s.abort_jobs.clone());
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            let signal = tokio::select! {
                _ = sigterm.recv() => nix::sys::signal::Signal::SIGTERM,
                _ = sigint.recv() => nix::sys::signal::Signal::SIGINT,
            };
            let _ = interrupt.signal.set(signal);
            eprintln!(
                "runwright exec: {signal}: canceling the pending jobs and aborting the running ones (at most {} s; {signal} again to stop waiting for them)",
                INTERRUPT_GRACE.as_secs()
            );
            interrupt.first.cancel();
            if let Some(abort) = abort {
                abort.cancel();
            }
            tokio::select! {
                _ = sigterm.recv() => eprintln!("runwright exec: second signal: canceling what is left"),
                _ = sigint.recv() => eprintln!("runwright exec: second signal: canceling what is left"),
                _ = tokio::time::sleep(INTERRUPT_GRACE) => eprintln!(
                    "runwright exec: jobs still not ended {} s after {signal}: canceling what is left",
                    INTERRUPT_GRACE.as_secs()
                ),
            }
            interrupt.forced.cancel();
        });
    }
    let interrupted = interrupt.first.clone();
    // What the coordinator was told so far: pending jobs canceled (after the first signal), everything (after
    // the grace).
    let (mut swept, mut force_swept) = (false, false);

    // When each trigger job created its child pipeline (a `strategy: depend` one lasts until the child ends).
    let mut triggered: HashMap<usize, Instant> = HashMap::new();
    let mut running: tokio::task::JoinSet<(
        usize,
        Instant,
        anyhow::Result<runwright_coordinator::JobRecord>,
    )> = tokio::task::JoinSet::new();
    loop {
        if interrupted.is_cancelled() {
            sched.settle_pending(Status::Canceled);
            let force = interrupt.forced.is_cancelled();
            if !swept || (force && !force_swept) {
                cancel_at_coordinator(&coordinator, shared.is_none(), force);
                (swept, force_swept) = (true, force);
            }
        }
        // Start (or skip) everything that may go now.
        while let Some(step) = sched.next(sched.running() < concurrency) {
            match step {
                schedule::Step::Skip(i, status, why) => {
                    let job = sched.jobs[i].job;
                    match &live {
                        Some(l) => l.finished(
                            i,
                            &format!("{} — {why}", status.label()),
                            None,
                            live::Outcome::Neutral,
                        ),
                        None => println!(
                            "--- {} ({}): {} — {why}",
                            sched.jobs[i].display,
                            job.stage,
                            status.label()
                        ),
                    }
                }
                schedule::Step::Trigger(i, p) => {
                    let job = sched.jobs[i].job;
                    let child = &sched.pipelines[p];
                    let created = format!(
                        "created child pipeline {} ({}){}",
                        child.id,
                        child.include.join(", "),
                        if child.depend {
                            "; strategy: depend, the trigger job takes its status"
                        } else {
                            ""
                        }
                    );
                    match &live {
                        Some(l) if child.depend => l.started(i),
                        Some(l) => l.finished(i, &created, Some(0.0), live::Outcome::Ok),
                        None => {
                            println!("=== {} ({}): {created}", sched.jobs[i].display, job.stage)
                        }
                    }
                    triggered.insert(i, Instant::now());
                    if !child.depend {
                        outcomes[i].duration = Some(Duration::ZERO);
                    }
                }
                schedule::Step::Finished(i, status) => {
                    let elapsed = triggered.get(&i).map(Instant::elapsed).unwrap_or_default();
                    outcomes[i].duration = Some(elapsed);
                    print_trigger_end(&sched, i, &status, elapsed, live.as_deref());
                }
                schedule::Step::Start(i) => {
                    let job = sched.jobs[i].job;
                    let pipeline = sched.jobs[i].pipeline;
                    let display = sched.jobs[i].display.clone();
                    match &live {
                        Some(l) => l.started(i),
                        None => println!("=== {display} ({})", job.stage),
                    }
                    for n in notes(job, &docker) {
                        say(&format!("note: {display}: {n}"));
                    }
                    // Artifacts come from the jobs named by `dependencies` (or derived from needs / earlier
                    // stages) that ran in this job's pipeline.
                    let deps: Vec<i64> = match &job.dependencies {
                        Some(names) => names
                            .iter()
                            .filter_map(|n| ids.get(&(pipeline, n.clone())).copied())
                            .collect(),
                        None => sched
                            .jobs
                            .iter()
                            .filter(|s| {
                                s.pipeline == pipeline && s.job.stage_index < job.stage_index
                            })
                            .filter_map(|s| ids.get(&(pipeline, s.job.name.clone())).copied())
                            .collect(),
                    };
                    // `needs:pipeline:job`: artifacts of a job of another pipeline of the run (the parent's).
                    let mut deps = deps;
                    for n in job.pipeline_needs.iter().filter(|n| n.artifacts) {
                        let found = sched
                            .pipelines
                            .iter()
                            .position(|r| r.id.to_string() == n.pipeline)
                            .and_then(|p| ids.get(&(p, n.job.clone())));
                        match found {
                            Some(id) => deps.push(*id),
                            None => println!(
                                "note: {display}: needs:pipeline:job: no job {:?} ran in pipeline {}; its artifacts are not downloaded",
                                n.job, n.pipeline
                            ),
                        }
                    }
                    let pipeline_id = sched.pipelines[pipeline].id;
                    let mut spec = jobspec::spec_for(job, co, &project, pipeline_id, deps, job_ref);
                    if matches!(docker, Docker::On)
                        && (args.executor == "docker" || wants_docker(job))
                    {
                        spec.runner_token = Some(tokens.docker.clone());
                    } else {
                        spec.runner_token = Some(tokens.shell.clone());
                    }
                    let id = coordinator.enqueue(spec);
                    ids.insert((pipeline, job.name.clone()), id);
                    let log_name = format!("{}.log", stems[i]);
                    let log = match state::private_file(&run_dir.path.join(&log_name)) {
                        Ok(f) => {
                            outcomes[i].log = Some(log_name);
                            Some(f)
                        }
                        Err(err) => {
                            eprintln!(
                                "runwright exec: cannot create the log of {display} in {} ({err}); its output is on stdout only",
                                run_dir.path.display()
                            );
                            None
                        }
                    };
                    let style = output::Style {
                        keep_ansi,
                        prefix: prefixed.then(|| output::prefix(&display, i, colour)),
                    };
                    let deadline = Instant::now()
                        + Duration::from_secs(job.timeout.unwrap_or(3600))
                        + Duration::from_secs(120);
                    let view = live.as_ref().map(|l| {
                        let tail =
                            std::sync::Arc::new(std::sync::Mutex::new(live::Tail::default()));
                        tails[i] = Some(tail.clone());
                        live::JobView {
                            live: l.clone(),
                            index: i,
                            tail,
                        }
                    });
                    let follow = follow(
                        coordinator.clone(),
                        id,
                        display,
                        output::TraceOut::new(style, log, view),
                        deadline,
                    );
                    let t0 = Instant::now();
                    running.spawn(async move { (i, t0, follow.await) });
                }
            }
        }
        if running.is_empty() {
            // Nothing runs and nothing can start: what is left waits on nothing that will ever finish.
            sched.settle_pending(Status::Skipped);
            break;
        }
        let joined = tokio::select! {
            j = running.join_next() => j,
            // Wake up to cancel the pending jobs (the running ones end through `abort_jobs`), then once more
            // when the grace is over.
            _ = interrupted.cancelled(), if !swept => continue,
            _ = interrupt.forced.cancelled(), if !force_swept => continue,
        };
        let Some(joined) = joined else { continue };
        let (i, t0, result) = joined.context("a job's output task failed")?;
        let job = sched.jobs[i].job;
        outcomes[i].duration = Some(t0.elapsed());
        let status = match result {
            Ok(record) => {
                // GitLab's runner reports an exit code for failures only; a job succeeds when every script
                // line exited 0.
                outcomes[i].exit_code = record
                    .exit_code
                    .or_else(|| (record.state == "success").then_some(0));
                match state::copy_artifacts(&run_dir.path, &stems[i], &record.artifacts) {
                    Ok(files) => outcomes[i].artifacts = files,
                    Err(err) => eprintln!(
                        "runwright exec: {} artifacts: {err:#}",
                        sched.jobs[i].display
                    ),
                }
                match record.state.as_str() {
                    "success" => Status::Success,
                    "canceled" => Status::Canceled,
                    _ if interrupted.is_cancelled() => Status::Canceled,
                    _ => {
                        let by_code = record
                            .exit_code
                            .is_some_and(|c| job.allow_failure_exit_codes.contains(&i64::from(c)));
                        Status::Failed {
                            allowed: job.allow_failure || by_code,
                        }
                    }
                }
            }
            Err(err) => {
                say(&format!("runwright exec: {err:#}"));
                Status::Failed {
                    allowed: job.allow_failure,
                }
            }
        };
        let code = outcomes[i]
            .exit_code
            .filter(|c| *c != 0)
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        match &live {
            Some(l) => {
                if matches!(status, Status::Failed { .. }) {
                    if let Some(Ok(tail)) = tails[i].as_ref().map(|t| t.lock()) {
                        let log = outcomes[i]
                            .log
                            .as_ref()
                            .map(|f| run_dir.path.join(f).display().to_string());
                        l.tail(&sched.jobs[i].display, log.as_deref(), tail.lines());
                    }
                }
                l.finished(
                    i,
                    &format!("{}{code}", status.label()),
                    Some(t0.elapsed().as_secs_f64()),
                    mark(&status),
                );
            }
            None => println!(
                "=== {} ({}): {} in {:.1}s{code}",
                sched.jobs[i].display,
                job.stage,
                status.label(),
                t0.elapsed().as_secs_f64(),
            ),
        }
        sched.status[i] = status;
    }
    // Trigger jobs whose child pipelines were settled above (interrupted, stuck).
    for (i, status) in sched.finish_triggers() {
        let elapsed = triggered.get(&i).map(Instant::elapsed).unwrap_or_default();
        outcomes[i].duration = Some(elapsed);
        print_trigger_end(&sched, i, &status, elapsed, live.as_deref());
    }

    if let Some(shared) = &shared {
        // The aborted jobs' final updates. Once the grace is over (or at a second signal) what is left of their
        // processes is killed, and their reports get a moment more.
        let drained = runwright_service::drain(shared);
        tokio::pin!(drained);
        tokio::select! {
            _ = &mut drained => {}
            _ = interrupt.forced.cancelled(), if interrupted.is_cancelled() => {
                shared.kill_running_jobs().await;
                if tokio::time::timeout(FINAL_REPORTS, drained).await.is_err() {
                    eprintln!("runwright exec: not waiting any longer for the aborted jobs to report");
                }
            }
        }
    }
    if let Some(l) = &live {
        l.close();
    }
    let signal = interrupt.signal.get().copied();
    let interrupted = interrupted.is_cancelled();
    coordinator.shutdown().await;

    let passed = !sched.failed();
    let verdict = if interrupted {
        "canceled"
    } else if passed {
        "passed"
    } else {
        "failed"
    };
    let elapsed = started.elapsed();
    print_summary(&sched, &outcomes);
    let jobs_json: Vec<serde_json::Value> = sched
        .jobs
        .iter()
        .zip(&sched.status)
        .zip(&outcomes)
        .map(|((s, status), o)| {
            serde_json::json!({
                "name": s.display,
                "pipeline_id": sched.pipelines[s.pipeline].id,
                "stage": s.job.stage,
                "status": match status { Status::Failed { .. } => "failed", other => other.label() },
                "allowed_failure": matches!(status, Status::Failed { allowed: true }),
                "duration_seconds": o.duration.map(|d| d.as_secs_f64()),
                "exit_code": o.exit_code,
                "log": o.log,
                "artifacts": o.artifacts,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "pipeline": run_dir.number,
        "status": verdict,
        // The signal that ended the run early, if one did.
        "interrupted_by": signal.map(|s| s.as_str()),
        "duration_seconds": elapsed.as_secs_f64(),
        "sha": co.sha,
        "ref": co.branch,
        "jobs": jobs_json,
    });
    if let Err(err) = state::write_json(&run_dir.path, "summary.json", &summary) {
        eprintln!("runwright exec: {err:#}");
    }
    match signal {
        Some(s) => println!("pipeline {verdict} by {s} in {:.1}s", elapsed.as_secs_f64()),
        None => println!("pipeline {verdict} in {:.1}s", elapsed.as_secs_f64()),
    }
    println!("pipeline directory: {}", run_dir.path.display());
    Ok(if interrupted {
        // The shell's convention for a command ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM).
        ExitCode::from(128 + signal.map_or(2, |s| s as u8))
    } else if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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

/// The end of a `strategy: depend` trigger job: its child pipeline's status.
fn print_trigger_end(
    sched: &schedule::Scheduler<'_>,
    i: usize,
    status: &Status,
    elapsed: Duration,
    live: Option<&live::Live>,
) {
    let child = sched
        .pipelines
        .iter()
        .find(|p| p.trigger == Some(i))
        .map(|p| p.id)
        .unwrap_or_default();
    if let Some(l) = live {
        l.finished(
            i,
            &format!("{} (child pipeline {child})", status.label()),
            Some(elapsed.as_secs_f64()),
            mark(status),
        );
        return;
    }
    println!(
        "=== {} ({}): {} in {:.1}s (child pipeline {child})",
        sched.jobs[i].display,
        sched.jobs[i].job.stage,
        status.label(),
        elapsed.as_secs_f64()
    );
}

/// A finished row's mark in the live view.
fn mark(status: &Status) -> live::Outcome {
    match status {
        Status::Success => live::Outcome::Ok,
        Status::Failed { allowed: true } => live::Outcome::Allowed,
        Status::Failed { allowed: false } => live::Outcome::Failed,
        _ => live::Outcome::Neutral,
    }
}

/// The table at the end: job, stage, status (with allowed failures), duration, exit code.
fn print_summary(sched: &schedule::Scheduler<'_>, outcomes: &[Outcome]) {
    let width = |f: &dyn Fn(&schedule::Selected<'_>) -> usize, min: usize| {
        sched.jobs.iter().map(f).max().unwrap_or(min).max(min)
    };
    let w_job = width(&|s| s.display.chars().count(), 3);
    let w_stage = width(&|s| s.job.stage.len(), 5);
    println!();
    println!(
        "{:<w_job$}  {:<w_stage$}  {:<16}  {:>8}  exit code",
        "job", "stage", "status", "duration"
    );
    for ((s, status), o) in sched.jobs.iter().zip(&sched.status).zip(outcomes) {
        let d = o
            .duration
            .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let code = o.exit_code.map_or("-".to_string(), |c| c.to_string());
        println!(
            "{:<w_job$}  {:<w_stage$}  {:<16}  {d:>8}  {code}",
            s.display,
            s.job.stage,
            status.label()
        );
    }
}

/// A TOML string (paths and image names may hold quotes or backslashes), quoted by toml_edit.
fn toml_string(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn toml_strings_round_trip() {
        for s in ["/tmp/a b", "C:\\dir\"quoted\"", "127.0.0.1:5999/x:1"] {
            let doc: toml_edit::DocumentMut =
                format!("k = {}", toml_string(s)).parse().expect("toml");
            assert_eq!(doc["k"].as_str(), Some(s));
        }
    }
}
