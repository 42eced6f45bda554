//! The helper commands a job's predefined stages call, with gitlab-runner's names, flags, exit codes and
//! lines (runner commands/helpers/, apps/gitlab-runner-helper/main.go): `cache-extractor`, `cache-archiver`,
//! `artifacts-downloader`, `artifacts-uploader`, `cache-init`, `read-logs`, `health-check`.
//!
//! The runner writes each stage as a script calling these (runner shells/abstract.go); the script runs where
//! the job's files are, as the job's user: in the helper container, or in the shell executor's job shell. So
//! everything that touches the job's files happens here, never in the service; what needs the runner
//! (presigned URLs, which local file a key maps to, the job token) arrives as flags and environment. The
//! binary answers to `gitlab-runner-helper` with these at top level; `runwright <verb>` and `gitlab-runner
//! <verb>` reach the same.
//!
//! The work is the workspace's: archives are `runwright-archive` (selection that never follows a symlink,
//! extraction that never writes through one), the cache's transfers `runwright-cache` (presigned URLs), and
//! artifact transfers `runwright-client` (GitLab's API with the uploader's retries).
//!
//! Output goes to standard error in gitlab-runner's layout ([`log`]), never to a service log. A verb that
//! fails exits 1 after a `FATAL:` line, as `logrus.Fatalln` does; `cache-extractor` exits 1 after a `WARNING:`
//! when there is no cache, so that the script's `if` prints "Failed to extract cache".

pub mod artifacts;
pub mod cache;
pub mod flags;
mod limits;
pub mod log;
pub mod misc;

#[cfg(test)]
#[rustfmt::skip]
mod flag_tests;

use clap::Subcommand;
use std::process::ExitCode;

pub use log::{Log, Outcome, Stop};

/// The helper's verbs (gitlab-runner's `newCommands` in apps/gitlab-runner-helper/main.go, less
/// `proxy-exec` and `steps`).
// One value per process, parsed once: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug, Clone)]
pub enum HelperCommand {
    /// download and extract cache artifacts (internal)
    #[command(name = "cache-extractor")]
    CacheExtractor(cache::ExtractorArgs),
    /// create and upload cache artifacts (internal)
    #[command(name = "cache-archiver")]
    CacheArchiver(cache::ArchiverArgs),
    /// download and extract build artifacts (internal)
    #[command(name = "artifacts-downloader")]
    ArtifactsDownloader(artifacts::DownloaderArgs),
    /// create and upload build artifacts (internal)
    #[command(name = "artifacts-uploader")]
    ArtifactsUploader(artifacts::UploaderArgs),
    /// changed permissions for cache paths (internal)
    #[command(name = "cache-init")]
    CacheInit(misc::CacheInitArgs),
    /// reads job logs from a file, used by kubernetes executor (internal)
    #[command(name = "read-logs")]
    ReadLogs(misc::ReadLogsArgs),
    /// check health for a specific address
    #[command(name = "health-check")]
    HealthCheck(misc::HealthCheckArgs),
}

/// Runs one verb to its end and gives the process's exit code.
pub fn run(command: HelperCommand) -> ExitCode {
    let log = Log::stderr();
    let outcome = match command {
        HelperCommand::CacheInit(a) => misc::cache_init(&a, &log),
        HelperCommand::ReadLogs(a) => misc::read_logs(&a),
        command => match runtime() {
            Ok(rt) => rt.block_on(run_async(command, &log)),
            Err(e) => Err(log.fatal(&format!("starting the runtime: {e}"))),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop(code)) => ExitCode::from(code),
    }
}

async fn run_async(command: HelperCommand, log: &Log) -> Outcome {
    match command {
        HelperCommand::CacheExtractor(a) => cache::extractor(a, &working_dir(log)?, log).await,
        HelperCommand::CacheArchiver(a) => cache::archiver(a, &working_dir(log)?, log).await,
        HelperCommand::ArtifactsDownloader(a) => {
            artifacts::downloader(a, &working_dir(log)?, log).await
        }
        HelperCommand::ArtifactsUploader(a) => {
            artifacts::uploader(a, &working_dir(log)?, log).await
        }
        HelperCommand::HealthCheck(a) => misc::health_check(a, log).await,
        HelperCommand::CacheInit(a) => misc::cache_init(&a, log),
        HelperCommand::ReadLogs(a) => misc::read_logs(&a),
    }
}

/// One thread: the helper does one transfer at a time, and archive work runs on blocking threads.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The job's working directory, where archives are made and extracted (the script `cd`s into the project
/// directory first, as gitlab-runner's does). The verbs take it as a parameter and resolve relative paths
/// (`--file`) against it.
pub(crate) fn working_dir(log: &Log) -> Result<std::path::PathBuf, Stop> {
    std::env::current_dir().map_err(|_| log.fatal("Unable to get working directory"))
}

/// Expands `$VAR` / `${VAR}` from the helper's environment, as gitlab-runner's helpers expand `--path`,
/// `--exclude` and `--name` (`shell.Expand(s, nil)`, which reads the process environment).
pub(crate) fn expand_env(text: &str) -> String {
    runwright_engine::variables::expand(text, &|name| std::env::var(name).ok())
}

/// Runs blocking archive work off the async thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("internal error in an archive task: {e}"))
}

/// Prints a warning for a gitlab-runner flag this helper accepts but does not act on.
pub(crate) fn ignored(log: &Log, flag: &str, given: bool) {
    if given {
        log.warn(&format!(
            "{flag} is not implemented by runwright's helper: ignored"
        ));
    }
}
