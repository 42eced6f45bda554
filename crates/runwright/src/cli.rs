//! The command line, with GitLab runner's verbs and flags (reference `protocol.md` §9.1), so existing units and
//! scripts keep working.

use crate::args::ConfigArg;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "runwright", version, about = "A GitLab-compatible CI runner", long_about = None)]
pub struct Cli {
    /// Debug logging (same as --log-level debug).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Log level: debug, info, warn, error, fatal, panic.
    #[arg(short = 'l', long, global = true, env = runwright_static::env_vars::LOG_LEVEL)]
    pub log_level: Option<String>,
    /// Log format: runner, text, json.
    #[arg(long, global = true, env = runwright_static::env_vars::LOG_FORMAT)]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: poll GitLab for jobs of every configured runner and execute them.
    Run(RunArgs),
    /// List the configured runners.
    List(crate::list::ListArgs),
    /// Run the .gitlab-ci.yml pipeline of the current git checkout on this machine (the working tree as it is,
    /// or its committed HEAD with --committed).
    Exec(ExecArgs),
    /// Validate a .gitlab-ci.yml and print the fully resolved configuration (like GitLab's merged YAML).
    Lint(LintArgs),
    /// The jobs this host ran, from the job journal (filters: runner, project, status, since; --json).
    History(crate::history_cmd::HistoryArgs),
    /// A job's full trace from the job journal (--follow for a running job).
    Logs(crate::logs_cmd::LogsArgs),
    /// List or clear the runners' caches (local and S3).
    #[command(subcommand)]
    Cache(crate::cache_cmd::CacheCommand),
    /// List or prune the Docker volumes the docker executor manages (caches, builds dirs).
    #[command(subcommand)]
    Volumes(crate::volumes_cmd::VolumesCommand),
    /// Build runwright's helper image, the docker executor's default helper_image (from this host's packages).
    #[command(subcommand)]
    HelperImage(crate::helper_image_cmd::HelperImageCommand),
    /// Register a runner with GitLab and add it to config.toml.
    Register(crate::ops::register::RegisterArgs),
    /// Unregister runners from GitLab and remove them from config.toml.
    Unregister(crate::ops::tokens::UnregisterArgs),
    /// Check that GitLab still accepts the runners' tokens (--delete removes those it does not).
    Verify(crate::ops::tokens::VerifyArgs),
    /// Reset runner tokens and save the new ones into config.toml.
    ResetToken(crate::ops::tokens::ResetTokenArgs),
    /// The service's state, and per runner: token validity and expiry, GitLab's view, last poll, jobs.
    Status(crate::ops::status::StatusArgs),
    /// Check config.toml and show what concurrent, limit and request_concurrency allow.
    #[command(subcommand)]
    Config(crate::ops::config_check::ConfigCommand),
    /// Install the systemd unit of the service.
    Install(crate::ops::service_unit::InstallArgs),
    /// Remove the systemd unit of the service.
    Uninstall(crate::ops::service_unit::ServiceArgs),
    /// Start the service (systemctl start).
    Start(crate::ops::service_unit::ServiceArgs),
    /// Stop the service (systemctl stop: running jobs finish first).
    Stop(crate::ops::service_unit::ServiceArgs),
    /// Restart the service (systemctl restart).
    Restart(crate::ops::service_unit::ServiceArgs),
    /// The helper verbs a job's predefined stages call (gitlab-runner's main binary has them too).
    #[command(flatten)]
    Helper(runwright_helper::HelperCommand),
}

/// The binary as `gitlab-runner-helper`: the helper verbs at top level (runner apps/gitlab-runner-helper/
/// main.go), and the logging flags gitlab-runner's helper accepts (`log.ConfigureLogging`).
#[derive(Parser, Debug)]
#[command(name = HELPER_NAME, version, about = "a GitLab Runner Helper (runwright)", long_about = None)]
pub struct HelperCli {
    /// Debug logging (accepted; the helper's lines go to the job's output).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Log level (accepted).
    #[arg(short = 'l', long, global = true)]
    pub log_level: Option<String>,
    /// Log format (accepted).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: runwright_helper::HelperCommand,
}

/// The name under which the binary is the helper.
pub const HELPER_NAME: &str = "gitlab-runner-helper";

/// Whether the binary was invoked as `gitlab-runner-helper` (a link or copy under that name, as in a helper
/// image).
pub fn invoked_as_helper() -> bool {
    std::env::args_os().next().is_some_and(|a| {
        std::path::Path::new(&a)
            .file_name()
            .is_some_and(|f| f == HELPER_NAME)
    })
}

/// Whether the first argument is one of the helper verbs (`runwright cache-extractor …`, `gitlab-runner
/// artifacts-uploader …`): those are parsed as the helper parses them, so that their usage errors exit 1 too.
pub fn helper_verb_invoked() -> bool {
    use clap::CommandFactory;
    let Some(first) = std::env::args_os().nth(1) else {
        return false;
    };
    HelperCli::command()
        .get_subcommands()
        .any(|c| c.get_name() != "help" && first == c.get_name())
}

/// Parses and runs `gitlab-runner-helper <verb>` (or `runwright <verb>` for a helper verb). A usage error exits
/// 1, as gitlab-runner's helper does (`logrus.Fatal` of urfave/cli's error); `--help` and `--version` exit 0.
pub fn run_helper() -> ExitCode {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    let name = if invoked_as_helper() {
        HELPER_NAME
    } else {
        invoked_name()
    };
    let parsed = HelperCli::command()
        .name(name)
        .bin_name(name)
        .try_get_matches()
        .and_then(|m| HelperCli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => {
            crate::logging::init_helper();
            runwright_helper::run(cli.command)
        }
        Err(e) => {
            let _ = e.print();
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The CI file, relative to the top of the checkout.
    #[arg(long, default_value = ".gitlab-ci.yml")]
    pub file: PathBuf,
    /// A pipeline variable (highest precedence), KEY=VALUE; repeatable.
    #[arg(long = "variable", short = 'e', value_name = "KEY=VALUE")]
    pub variable: Vec<String>,
    /// Run in this directory (a git checkout) instead of the current one.
    #[arg(short = 'C', long)]
    pub directory: Option<PathBuf>,
    /// Run only these jobs (manual jobs named here run too).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Where caches persist between runs (default: $XDG_CACHE_HOME/runwright/exec/<project>).
    #[arg(long, value_name = "DIR", env = runwright_static::env_vars::RUNWRIGHT_EXEC_CACHE_DIR)]
    pub cache_dir: Option<PathBuf>,
    /// Run a clean checkout of the committed HEAD instead of the working tree as it is.
    #[arg(long)]
    pub committed: bool,
    /// How many jobs run at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub concurrency: Option<usize>,
    /// With JOB names: also run the jobs they need (transitively).
    #[arg(long)]
    pub needs: bool,
    /// Start this manual job too; repeatable.
    #[arg(long, value_name = "JOB")]
    pub manual: Vec<String>,
    /// Print the plan (stage, job, when, needs, rule outcome) and run nothing.
    #[arg(long)]
    pub list: bool,
    /// With --list: the plan as JSON on stdout.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Simulate this pipeline source: push (default), merge_request_event, schedule, web, tag, api, trigger.
    #[arg(long, value_name = "SOURCE", default_value = "push")]
    pub pipeline_source: String,
    /// Where jobs run: `auto` (jobs with image: or services: on the docker executor when a Docker daemon
    /// answers, the others on the shell executor), `shell` (every job on this machine) or `docker` (every job
    /// in a container).
    #[arg(long, value_name = "EXECUTOR", default_value = "auto", value_parser = ["auto", "shell", "docker"])]
    pub executor: String,
    /// The image of docker jobs that name none.
    #[arg(long, value_name = "IMAGE", env = runwright_static::env_vars::DOCKER_IMAGE)]
    pub docker_image: Option<String>,
    /// The docker executor's pull policy (GitLab's `pull_policy`): always, if-not-present, never.
    #[arg(long, value_name = "POLICY", default_value = "if-not-present", value_parser = ["always", "if-not-present", "never"])]
    pub docker_pull_policy: String,
    /// Serve the pipeline's jobs to a runner outside this process instead of running them here: the embedded
    /// coordinator listens on ADDR (default 127.0.0.1 with a free port) and a ready runner config is written to
    /// the pipeline directory; `runwright run -c <that file>` (or any GitLab runner given its URL and token)
    /// runs the jobs while exec plans, streams and summarises them as usual.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0", conflicts_with_all = ["executor", "docker_image"])]
    pub serve: Option<std::net::SocketAddr>,
    /// What a person sees while the pipeline runs: `live` (one line per job with its status, duration and
    /// latest output; a failed job's last lines), `lines` (every job's log, `[job] `-prefixed when jobs run in
    /// parallel), or `auto`: live on a terminal, lines otherwise.
    #[arg(long, value_name = "VIEW", default_value = "auto", value_parser = ["auto", "live", "lines"])]
    pub view: String,
}

impl ExecArgs {
    /// The options `runwright-exec` runs with.
    pub fn options(self) -> runwright_exec::ExecOptions {
        runwright_exec::ExecOptions {
            file: self.file,
            variable: self.variable,
            directory: self.directory,
            jobs: self.jobs,
            cache_dir: self.cache_dir,
            committed: self.committed,
            concurrency: self.concurrency,
            needs: self.needs,
            manual: self.manual,
            list: self.list,
            json: self.json,
            pipeline_source: self.pipeline_source,
            executor: self.executor,
            docker_image: self.docker_image,
            docker_pull_policy: self.docker_pull_policy,
            serve: self.serve,
            view: self.view,
        }
    }
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The CI file, relative to the top of the checkout.
    #[arg(long, default_value = ".gitlab-ci.yml")]
    pub file: PathBuf,
    /// Run in this directory (a git checkout) instead of the current one.
    #[arg(short = 'C', long)]
    pub directory: Option<PathBuf>,
    /// Print the fully resolved configuration as JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
}

impl LintArgs {
    pub fn options(self) -> runwright_exec::lint::LintOptions {
        runwright_exec::lint::LintOptions {
            file: self.file,
            directory: self.directory,
            json: self.json,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Change to this directory before starting (relative builds_dir are resolved against it).
    #[arg(short = 'd', long)]
    pub working_directory: Option<PathBuf>,
    /// Service name (used in messages).
    #[arg(short = 'n', long, default_value = "gitlab-runner")]
    pub service: String,
    /// Run shell-executor jobs as this user (the service must run as root).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Accepted for compatibility with GitLab's unit files; logs go to stderr (journald reads them).
    #[arg(long, hide = true)]
    pub syslog: bool,
}

impl RunArgs {
    /// The options the service runs with.
    pub fn options(&self) -> runwright_service::RunOptions {
        runwright_service::RunOptions {
            config: self.config.path(),
            working_directory: self.working_directory.clone(),
            user: self.user.clone(),
        }
    }
}

/// The name the binary answers to in help and errors: `gitlab-runner` when installed or linked under that
/// name (drop-in for existing units and scripts, issue 5), else `runwright`.
pub fn invoked_name() -> &'static str {
    let linked = std::env::args_os().next().is_some_and(|a| {
        std::path::Path::new(&a)
            .file_name()
            .is_some_and(|f| f == "gitlab-runner")
    });
    if linked {
        "gitlab-runner"
    } else {
        "runwright"
    }
}

pub fn parse_as_invoked() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let name = invoked_name();
    let matches = Cli::command().name(name).bin_name(name).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the verb; a failure is rendered and classified by `diagnostics`.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let log = crate::logging::LogArgs {
        debug: cli.debug,
        level: cli.log_level,
        format: cli.log_format,
    };
    match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(runwright_service::run(
                args.options(),
                |level: Option<&str>, format: Option<&str>| {
                    crate::logging::init(&log, level, format)
                },
            ))?)
        }
        Command::List(args) => crate::list::run(&args),
        Command::Lint(args) => runwright_exec::lint::run(&args.options()),
        Command::History(args) => crate::history_cmd::run(args),
        Command::Logs(args) => crate::logs_cmd::run(args),
        Command::Cache(cmd) => {
            crate::logging::init(&log, None, None);
            crate::cache_cmd::run(cmd)
        }
        Command::Volumes(cmd) => {
            crate::logging::init(&log, None, None);
            crate::volumes_cmd::run(cmd)
        }
        Command::HelperImage(cmd) => {
            crate::logging::init(&log, None, None);
            crate::helper_image_cmd::run(cmd)
        }
        Command::Register(args) => crate::ops::register::run(args),
        Command::Unregister(args) => crate::ops::tokens::unregister(args),
        Command::Verify(args) => crate::ops::tokens::verify(args),
        Command::ResetToken(args) => crate::ops::tokens::reset_token(args),
        Command::Status(args) => crate::ops::status::run(args),
        Command::Config(cmd) => crate::ops::config_check::run(cmd),
        Command::Install(args) => crate::ops::service_unit::install(args),
        Command::Uninstall(args) => crate::ops::service_unit::control("uninstall", args),
        Command::Start(args) => crate::ops::service_unit::control("start", args),
        Command::Stop(args) => crate::ops::service_unit::control("stop", args),
        Command::Restart(args) => crate::ops::service_unit::control("restart", args),
        Command::Helper(cmd) => {
            // The job's output, not the service's log: the helper prints its own lines.
            crate::logging::init_helper();
            Ok(runwright_helper::run(cmd))
        }
        Command::Exec(args) => {
            // Job outcomes are on stdout; the service's per-job warnings (e.g. GitLab's `Job-Status: failed`
            // answer to a failed job's final update) would only repeat them.
            let level = log.level.clone().or_else(|| Some("error".into()));
            crate::logging::init(
                &crate::logging::LogArgs {
                    debug: log.debug,
                    level,
                    format: log.format,
                },
                None,
                None,
            );
            runwright_exec::run(args.options())
        }
    }
}
