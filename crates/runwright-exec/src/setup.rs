//! A run's set-up, before its first job starts: the jobs selected, the view chosen, the pipeline directory and
//! `plan.json`, the sources served from a bare repository, the embedded coordinator, and the runners that take
//! its jobs (typed, `runner.rs`): in this process through the service's own code, or written out for an outside
//! `runwright run` (`--serve`).

use crate::checkout::{git, git_opt, Checkout};
use crate::schedule::{self, Scheduler};
use crate::{
    checkout_key, default_cache_dir, docker_decision, files, jobspec, runner, state, Docker,
    ExecOptions, Sources, Tokens, LONG_POLL,
};
use anyhow::{bail, Context};
use runwright_coordinator::{Coordinator, CoordinatorOptions, ProjectSpec, RunnerOptions};
use runwright_pipeline::When;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the run shows its jobs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    /// Colours on stdout (a terminal, and `NO_COLOR` unset); the traces keep their ANSI sequences then.
    pub colour: bool,
    /// `[job] ` before trace lines: more than one job may run at once.
    pub prefixed: bool,
    /// The live view (a row per job) instead of lines.
    pub live: bool,
}

impl View {
    fn choose(args: &ExecOptions, concurrency: usize, jobs: usize) -> View {
        let terminal = std::io::stdout().is_terminal();
        View {
            colour: terminal && std::env::var_os(runwright_static::env_vars::NO_COLOR).is_none(),
            prefixed: concurrency > 1 && jobs > 1,
            live: match args.view.as_str() {
                "live" => true,
                "lines" => false,
                _ => {
                    terminal
                        && std::env::var(runwright_static::env_vars::TERM)
                            .map_or(true, |t| t != "dumb")
                }
            },
        }
    }
}

/// What the schedule loop runs with.
pub(crate) struct SetUp {
    pub view: View,
    pub run_dir: state::RunDir,
    /// Each job's file name stem in the pipeline directory (its log, its artifacts).
    pub stems: Vec<String>,
    pub project: ProjectSpec,
    pub coordinator: Coordinator,
    pub tokens: Tokens,
    pub docker: Docker,
    /// The in-process runners (none when the jobs are served to an outside runner).
    pub shared: Option<std::sync::Arc<runwright_service::Shared>>,
    /// The jobs' builds, the served repository, the runner's work dir: removed when the run is over.
    pub _tmp: tempfile::TempDir,
}

/// Everything up to the first job: plans the run, serves its sources and starts its runners.
pub(crate) async fn set_up<'a>(
    args: &ExecOptions,
    co: &Checkout,
    planned: &'a crate::children::Planned,
    sources: &Sources,
    concurrency: usize,
    job_ref: &jobspec::JobRef,
) -> anyhow::Result<(SetUp, Scheduler<'a>)> {
    let plan = &planned.plan;
    let (selected, runs) = crate::children::flatten(
        schedule::select(plan, &args.jobs, args.needs, &args.manual)?,
        &planned.children,
    );
    if args.needs && args.jobs.is_empty() {
        say!("note: --needs adds what named jobs need; without JOB names the whole pipeline runs anyway");
    }
    for name in &args.manual {
        if plan.job(name).is_some_and(|j| j.when != When::Manual) {
            say!("note: --manual {name}: not a manual job; it runs by its own `when`");
        }
    }
    let view = View::choose(args, concurrency, selected.len());

    let run_dir = state::create_run(&state::pipelines_dir(&checkout_key(co)))?;
    let stems = state::file_stems(selected.iter().map(|s| s.display.as_str()));
    let head = files::Head {
        project: &co.project_path,
        git_ref: &co.branch,
        sha: &co.sha,
    };
    let sources_name = match sources {
        Sources::Committed { .. } => "committed",
        Sources::WorkingTree { .. } => "working tree",
    };
    let plan_file = files::PlanFile::new(head, sources_name, &plan.stages, &selected, &runs);
    state::write_json(&run_dir.path, "plan.json", &plan_file)?;

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
    let lfs_objects = serve_sources(co, &git_root.join(project.repo_dir()), job_ref)?;
    print_header(co, &run_dir, sources, selected.len(), concurrency);

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
    let reach = match (&docker, args.serve) {
        (Docker::On, None) => Some(docker_gateway().await?),
        _ => None,
    };
    let (coordinator, tokens) = start_coordinator(args, &git_root, reach).await?;
    let cache_dir = cache_dir(args, co)?;
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let mut runners = shell_runner(
        args,
        concurrency,
        &coordinator,
        &tokens,
        &tmp,
        &cache_dir,
        &git_root,
    );
    add_docker(
        args,
        &docker,
        concurrency,
        &coordinator,
        &tokens,
        &cache_dir,
        &mut runners,
    )?;
    let shared = start_runners(
        args,
        concurrency,
        &coordinator,
        &runners,
        &run_dir.path,
        work,
        lfs_objects,
    )?;
    let sched = Scheduler::with_pipelines(selected, runs);
    Ok((
        SetUp {
            view,
            run_dir,
            stems,
            project,
            coordinator,
            tokens,
            docker,
            shared,
            _tmp: tmp,
        },
        sched,
    ))
}

/// The network whose gateway the embedded coordinator listens on when jobs run on the docker executor.
const REACH_NETWORK: &str = "runwright-exec";

/// Where the embedded coordinator listens when docker jobs run: the gateway of exec's own bridge network
/// (`runwright-exec`, made once and kept, like Docker's default bridge). Git and the helper's transfers run in the
/// job's helper container, to which 127.0.0.1 is the container itself; a network gateway is an address of this
/// host that containers on any of the daemon's networks reach, and so do this host's processes (the shell
/// runner). Chosen over listening on every address (0.0.0.0), which would serve the jobs' repository and token
/// to the whole network, and over the default bridge's gateway, a network exec did not make and the host may
/// have disabled (`"bridge": "none"`).
async fn docker_gateway() -> anyhow::Result<std::net::IpAddr> {
    let docker = runwright_docker::connect(None, None, false)
        .await
        .map_err(|e| anyhow::anyhow!(e.with_hint()))?;
    runwright_docker::reach::gateway(
        &docker,
        REACH_NETWORK,
        std::collections::HashMap::from([(
            "org.runwright.exec".to_string(),
            "coordinator".to_string(),
        )]),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.with_hint()))
    .context("giving the docker jobs an address of the embedded coordinator")
}

/// The embedded coordinator, serving the repositories under `git_root`, with the shell runner's token; on the
/// `reach` address when docker jobs must get to it, else loopback (or `--serve`'s address).
async fn start_coordinator(
    args: &ExecOptions,
    git_root: &Path,
    reach: Option<std::net::IpAddr>,
) -> anyhow::Result<(Coordinator, Tokens)> {
    let bind = match (args.serve, reach) {
        (Some(addr), _) => addr,
        (None, Some(ip)) => std::net::SocketAddr::new(ip, 0),
        (None, None) => CoordinatorOptions::default().bind,
    };
    let coordinator = Coordinator::start(CoordinatorOptions {
        bind,
        trace_update_interval: 1,
        git_root: Some(git_root.to_path_buf()),
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
    Ok((coordinator, tokens))
}

/// Where caches persist between runs, created if need be.
fn cache_dir(args: &ExecOptions, co: &Checkout) -> anyhow::Result<PathBuf> {
    let cache_dir = match &args.cache_dir {
        Some(d) => std::path::absolute(d)?,
        None => default_cache_dir(co),
    };
    // A new cache directory is this user's only; an existing one is left as it is.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&cache_dir)
        .with_context(|| format!("creating the cache directory {}", cache_dir.display()))?;
    Ok(cache_dir)
}

/// When jobs run on the docker executor, its runner is registered and its entry added to `runners`.
fn add_docker(
    args: &ExecOptions,
    docker: &Docker,
    concurrency: usize,
    coordinator: &Coordinator,
    tokens: &Tokens,
    cache_dir: &Path,
    runners: &mut runner::RunnerFile,
) -> anyhow::Result<()> {
    if matches!(docker, Docker::On) {
        coordinator.add_runner(
            &tokens.docker,
            RunnerOptions {
                description: "runwright exec (docker)".into(),
                long_poll: Some(LONG_POLL),
                ..Default::default()
            },
        );
        runners.runners.push(docker_runner(
            args,
            concurrency,
            coordinator,
            tokens,
            cache_dir,
        )?);
        say!(
            "note: jobs with image: or services: run on the docker executor{}",
            if args.executor == "docker" {
                " (and, with --executor docker, all the others too)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Makes the bare repository `bare` the jobs fetch from: the commit they run at the branch (and the tag, or a
/// merge request's target branch). Whether it has the checkout's Git LFS objects.
fn serve_sources(co: &Checkout, bare: &Path, job_ref: &jobspec::JobRef) -> anyhow::Result<bool> {
    std::fs::create_dir_all(bare)?;
    git(bare, &["init", "-q", "--bare"])?;
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
            git(bare, &["update-ref", dest, commit])
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
    Ok(lfs_objects)
}

/// The run's first lines: which pipeline, what the jobs run, how many at once.
fn print_header(
    co: &Checkout,
    run_dir: &state::RunDir,
    sources: &Sources,
    jobs: usize,
    concurrency: usize,
) {
    let short = |s: &str| s[..s.len().min(8)].to_string();
    say!(
        "runwright exec: pipeline {} for {} ({}) of {}",
        run_dir.number,
        short(&co.sha),
        co.branch,
        co.project_path
    );
    match sources {
        Sources::Committed { dirty: true } => say!(
            "note: --committed: jobs run the committed HEAD; uncommitted changes (and untracked files) are NOT included"
        ),
        Sources::Committed { dirty: false } => {
            say!("note: --committed: jobs run the committed HEAD")
        }
        Sources::WorkingTree {
            head,
            changed: true,
        } => say!(
            "note: jobs run the working tree as it is (uncommitted changes and untracked files included), committed on top of HEAD {} as {}: CI_COMMIT_SHA and `git rev-parse HEAD` in the jobs are that commit; your index and HEAD are untouched (--committed runs HEAD alone)",
            short(head),
            short(&co.sha)
        ),
        Sources::WorkingTree { changed: false, .. } => {
            say!("note: jobs run the working tree, which matches HEAD")
        }
    }
    if jobs > 1 {
        say!("note: up to {concurrency} jobs at once (-j N to change)");
    }
}

/// The run's runners, with the shell entry.
fn shell_runner(
    args: &ExecOptions,
    concurrency: usize,
    coordinator: &Coordinator,
    tokens: &Tokens,
    tmp: &tempfile::TempDir,
    cache_dir: &Path,
    git_root: &Path,
) -> runner::RunnerFile {
    // `concurrent` and the entry's `limit` both allow the run's concurrency. The shell executor's builds dir is
    // shared, so each running job gets `<builds>/<token>/<CI_CONCURRENT_PROJECT_ID>/<project>`: parallel jobs
    // never share a project directory.
    runner::RunnerFile {
        concurrent: concurrency,
        check_interval: 1,
        runners: vec![runner::Entry {
            name: "exec".into(),
            url: coordinator.url(),
            token: tokens.shell.clone(),
            executor: "shell".into(),
            limit: concurrency,
            builds_dir: Some(tmp.path().join("builds").display().to_string()),
            cache_dir: cache_dir.display().to_string(),
            // Jobs run in this process on this machine: they fetch the coordinator's repository over git's
            // local transport (GitLab's `clone_url`), each into its own project directory as before, without an
            // HTTP round trip and a `git http-backend` per request. CI_REPOSITORY_URL stays the coordinator's
            // HTTP URL. A runner elsewhere (--serve) or a container (docker entry) fetches over HTTP.
            clone_url: args
                .serve
                .is_none()
                .then(|| url::Url::from_directory_path(git_root).ok())
                .flatten()
                .map(String::from),
            docker: None,
        }],
    }
}

/// The docker entry, for jobs with `image:` or `services:` (all of them with `--executor docker`).
fn docker_runner(
    args: &ExecOptions,
    concurrency: usize,
    coordinator: &Coordinator,
    tokens: &Tokens,
    cache_dir: &Path,
) -> anyhow::Result<runner::Entry> {
    // The cache dir is bound into the containers at GitLab's /cache, so both executors keep one cache;
    // `disable_cache` makes the builds volumes per job, so a run leaves nothing on the daemon.
    Ok(runner::Entry {
        name: "exec-docker".into(),
        url: coordinator.url(),
        token: tokens.docker.clone(),
        executor: "docker".into(),
        limit: concurrency,
        builds_dir: None,
        cache_dir: "/cache".into(),
        clone_url: None,
        docker: Some(runner::DockerEntry {
            image: args.docker_image.clone().unwrap_or_default(),
            pull_policy: vec![runner::pull_policy(&args.docker_pull_policy)?],
            disable_cache: true,
            volumes: vec![format!("{}:/cache", cache_dir.display())],
        }),
    })
}

/// Served: the runners' config, for a runner in another process (the equivalence test runs `runwright run`
/// with it); otherwise the entries run in this process, through the service's own code.
fn start_runners(
    args: &ExecOptions,
    concurrency: usize,
    coordinator: &Coordinator,
    runners: &runner::RunnerFile,
    run_dir: &Path,
    work: PathBuf,
    lfs_objects: bool,
) -> anyhow::Result<Option<std::sync::Arc<runwright_service::Shared>>> {
    if args.serve.is_some() {
        // It holds the run's runner token: 0600, in the run's 0700 directory, and the token is not printed.
        let path = run_dir.join("runner.toml");
        state::write_private(&path, runners.to_toml()?.as_bytes())
            .context("writing the runner config")?;
        say!(
            "runwright exec: serving the jobs at {}; run them with: runwright run -c {}",
            coordinator.url(),
            path.display()
        );
        return Ok(None);
    }
    let mut entries = runners.runner_configs();
    // A checkout without a Git LFS store has nothing for `git lfs pull` to fetch: the jobs skip it.
    for r in &mut entries {
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
    for r in &entries {
        runwright_service::start_entry(&shared, r)?;
    }
    Ok(Some(shared))
}
