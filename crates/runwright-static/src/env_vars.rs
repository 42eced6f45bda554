//! Every environment variable runwright reads, declared in one place (as uv's `uv-static/src/env_vars.rs`).
//!
//! A variable that changes runwright's behaviour and is not listed here is a bug: add it here with a doc
//! comment saying who reads it, what values mean and what the default is, then read it through the constant.
//! (Variables that *jobs* see are a different matter: those come from GitLab's job payload and from
//! `config.toml`, never from runwright's own environment.)
//!
//! In order: runwright's own switches; the environment forms of command-line flags (gitlab-runner's names);
//! variables of the host's environment that runwright reads (home, XDG, terminal, Docker, systemd); switches
//! of the test suite and the benchmarks.

use std::time::Duration;

/// Test switch: when set to exactly `1`, every back-off or retry wait of the GitLab client is capped at
/// [`FAST_RETRY_CAP`] (50 ms): transport retries (408/429/5xx, connection errors), the wait after a `202` or
/// `412` answer to the final job update, the range-mismatch wait in the final flush, and the back-off between
/// final-update attempts. The cadence of live trace patches still follows the interval the server asks for
/// (`X-GitLab-Trace-Update-Interval`), because that is protocol, not retry.
///
/// Read once per runwright-client `Client` when it is built. Unset (or any other value): GitLab's real waits.
pub const RUNWRIGHT_FAST_RETRIES: &str = "RUNWRIGHT_FAST_RETRIES";

/// The cap applied to every retry wait when [`RUNWRIGHT_FAST_RETRIES`] is `1`.
pub const FAST_RETRY_CAP: Duration = Duration::from_millis(50);

/// Test switch: a whole number of seconds (at least 1) that replaces how long the GitLab client waits for an
/// answer that makes no progress: the read timeout of API calls (GitLab's `ResponseHeaderTimeout`, 10 min) and
/// the idle limit of artifact transfers (also 10 min). Lets a soak stall answers past the client's timeout
/// without waiting ten minutes per stall. Read once per runwright-client `Client` when it is built; unset or
/// unreadable: GitLab's 10 minutes.
pub const RUNWRIGHT_API_TIMEOUT_SECS: &str = "RUNWRIGHT_API_TIMEOUT_SECS";

/// [`RUNWRIGHT_API_TIMEOUT_SECS`] in the current environment, when it holds a positive number of seconds.
pub fn api_timeout() -> Option<Duration> {
    std::env::var(RUNWRIGHT_API_TIMEOUT_SECS)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` (and their lower-case forms) are read by the HTTP
/// stack (reqwest's system proxy matcher) for every request to GitLab, as GitLab's runner does through Go's
/// `http.ProxyFromEnvironment` (runner network/client.go `createTransport`). Listed for completeness; runwright
/// code does not read them itself.
pub const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `SSL_CERT_FILE` and `SSL_CERT_DIR` name the system's trusted CA certificates, read by
/// `rustls-native-certs` when a runwright-client `Client` is built (its tls.rs), as Go's `x509.SystemCertPool`
/// reads them for GitLab's runner. Unset: the distribution's bundle. `tls-ca-file` adds to them. Listed for
/// completeness; runwright code does not read them itself.
pub const CA_STORE_VARIABLES: &[&str] = &["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Whether [`RUNWRIGHT_FAST_RETRIES`] is switched on in the current environment.
pub fn fast_retries() -> bool {
    std::env::var_os(RUNWRIGHT_FAST_RETRIES).is_some_and(|v| v == "1")
}

/// Seconds between SIGTERM and SIGKILL when a stage of a shell-executor job is stopped (cancel, timeout,
/// shutdown). Read by the service when it builds an executor. Default 10; tests use a short one. GitLab's
/// runner waits 10 minutes here (runner helpers/process/killer_unix.go); runwright's shorter default keeps a
/// canceled job's slot from being held for that long.
pub const RUNWRIGHT_KILL_GRACE_SECONDS: &str = "RUNWRIGHT_KILL_GRACE_SECONDS";

/// `tracing` filter directives for runwright's own log (e.g. `runwright_client=debug,info`), read by the
/// binary when it sets up logging; overrides `--log-level`/`--debug` and `log_level` of `config.toml`.
/// Unset: runwright's crates at the chosen level, dependencies at `warn`.
pub const RUNWRIGHT_LOG: &str = "RUNWRIGHT_LOG";

/// Set by the shell executor in the environment of every process of a job, so that the processes of a job
/// can be found again (and killed) even after they left its process group. Read back by runwright from
/// `/proc/<pid>/environ`; never meant to be set by a user.
pub const RUNWRIGHT_JOB_MARK: &str = "RUNWRIGHT_JOB_MARK";

/// The cgroup2 mount below which the shell executor makes each job's cgroup, instead of the `cgroup2` entry of
/// `/proc/self/mountinfo`; the service's own cgroup (`/proc/self/cgroup`) is looked up below it. Read when a
/// shell runner entry starts, by `config check` and by the recovery of crashed jobs. A path that is not a
/// writable cgroup2 filesystem turns job cgroups off (said at start), as on a host without cgroup v2; tests use
/// that. Unset: the mount the kernel reports.
pub const RUNWRIGHT_CGROUP_ROOT: &str = "RUNWRIGHT_CGROUP_ROOT";

/// Build time only: the git revision embedded by the binary's `build.rs` (reported as `info.revision`, as
/// GitLab's runner reports its own). Not read at run time.
pub const RUNWRIGHT_REVISION: &str = "RUNWRIGHT_REVISION";

/// Benchmarks only: MiB of log pushed through the trace path by `cargo bench -p runwright-trace`
/// (default 1024).
pub const RUNWRIGHT_BENCH_MIB: &str = "RUNWRIGHT_BENCH_MIB";

/// `runwright exec`: where caches persist between runs (the `--cache-dir` flag's environment form).
/// Default `$XDG_CACHE_HOME/runwright/exec/<project>-<hash of the checkout path>`.
pub const RUNWRIGHT_EXEC_CACHE_DIR: &str = "RUNWRIGHT_EXEC_CACHE_DIR";

/// `runwright exec`: the directory holding this project's pipeline runs (`<dir>/<n>/` with plan, logs,
/// artifacts, summary). Default `$XDG_STATE_HOME/runwright/pipelines/<project>-<hash>`; tests set it.
pub const RUNWRIGHT_EXEC_STATE_DIR: &str = "RUNWRIGHT_EXEC_STATE_DIR";

/// Tests only: the Python venv holding the `moto` S3 server (`scripts/install-test-deps` creates
/// `/opt/runwright-test-venv` unless this says otherwise). Read by `runwright-cache`'s `testing` feature.
pub const RUNWRIGHT_TEST_VENV: &str = "RUNWRIGHT_TEST_VENV";

/// Test switch: when set to exactly `panic-in-job`, the service panics inside the task of any job that has the
/// variable `RUNWRIGHT_TEST_PANIC` (both are needed, so no job payload alone can trigger it). Proves that a
/// panicking job is failed towards GitLab (`runner_system_failure`) while the service keeps running. Unset: off.
pub const RUNWRIGHT_TEST_FAULT: &str = "RUNWRIGHT_TEST_FAULT";

/// `runwright install` / `uninstall`: write (or remove) the systemd unit in this directory instead of
/// `/etc/systemd/system` (or `~/.config/systemd/user`), and call no `systemctl` (packaging, tests). Unset: the
/// unit goes to systemd's directory and systemd must be running.
pub const RUNWRIGHT_SYSTEMD_UNIT_DIR: &str = "RUNWRIGHT_SYSTEMD_UNIT_DIR";

/// `runwright status` and `reset-token --pat`: a GitLab access token (`PRIVATE-TOKEN`; scope `manage_runner`
/// or an administrator's) for GitLab's view of a runner (`paused`, `status`, `contacted_at`) and for resetting
/// a token by runner id. Never printed. Unset: status shows what the runner token and the service know.
pub const GITLAB_TOKEN: &str = "GITLAB_TOKEN";

/// Set by systemd for `Type=notify` services: where `runwright run` sends `READY=1` (once every runner
/// entry has polled), `WATCHDOG=1` (with `WATCHDOG_USEC`/`WATCHDOG_PID`), `STOPPING=1`. Unset: no
/// notifications.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

// The environment forms of command-line flags. gitlab-runner's names, so that scripts written for
// `gitlab-runner` work unchanged; the flag wins over the variable (clap's `env`).

/// `--log-level` (every verb): debug, info, warn, error, fatal, panic.
pub const LOG_LEVEL: &str = "LOG_LEVEL";

/// `--log-format` (every verb): runner, text, json.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// `--config`/`-c` of the verbs that read `config.toml` (`run`, `register`, `verify`, `install`, `history`,
/// …). Unset: `/etc/gitlab-runner/config.toml` as root, else `~/.gitlab-runner/config.toml`.
pub const CONFIG_FILE: &str = "CONFIG_FILE";

/// `register --non-interactive`: register without prompts.
pub const REGISTER_NON_INTERACTIVE: &str = "REGISTER_NON_INTERACTIVE";

/// `register --leave-runner`: keep the runner in GitLab when writing `config.toml` fails.
pub const REGISTER_LEAVE_RUNNER: &str = "REGISTER_LEAVE_RUNNER";

/// `register --registration-token`: a legacy registration token. A secret.
pub const REGISTRATION_TOKEN: &str = "REGISTRATION_TOKEN";

/// `register --token`, and `--token` of `unregister`/`verify`/`reset-token`: a runner authentication token
/// (`glrt-…`). A secret. (The same name is a job variable too; here it is what the command reads.)
pub const CI_SERVER_TOKEN: &str = "CI_SERVER_TOKEN";

/// `--url` of `register`, `unregister`, `verify`, `reset-token`: the GitLab instance. (The same name is a job
/// variable too; here it is what the command reads.)
pub const CI_SERVER_URL: &str = "CI_SERVER_URL";

/// `register --tls-ca-file`: the CA bundle for GitLab's certificate. (The same name is a job variable too;
/// here it is what the command reads.)
pub const CI_SERVER_TLS_CA_FILE: &str = "CI_SERVER_TLS_CA_FILE";

/// `--name` of `register` (the new entry's name), `unregister`, `verify`, `reset-token` (the entry to act on).
pub const RUNNER_NAME: &str = "RUNNER_NAME";

/// `reset-token --id`: the runner's id in GitLab (with `--url` and an access token).
pub const RUNNER_ID: &str = "RUNNER_ID";

/// `register --executor`: shell, docker, ….
pub const RUNNER_EXECUTOR: &str = "RUNNER_EXECUTOR";

/// `register --tag-list`: comma-separated tags (legacy registration only).
pub const RUNNER_TAG_LIST: &str = "RUNNER_TAG_LIST";

/// `register --run-untagged` (legacy registration only): a boolean.
pub const REGISTER_RUN_UNTAGGED: &str = "REGISTER_RUN_UNTAGGED";

/// `register --locked` (legacy registration only): a boolean.
pub const REGISTER_LOCKED: &str = "REGISTER_LOCKED";

/// `register --access-level` (legacy registration only): `not_protected` or `ref_protected`.
pub const REGISTER_ACCESS_LEVEL: &str = "REGISTER_ACCESS_LEVEL";

/// `register --maximum-timeout` (legacy registration only): seconds.
pub const REGISTER_MAXIMUM_TIMEOUT: &str = "REGISTER_MAXIMUM_TIMEOUT";

/// `register --paused` (legacy registration only): a boolean.
pub const REGISTER_PAUSED: &str = "REGISTER_PAUSED";

/// `register --maintenance-note` (legacy registration only).
pub const REGISTER_MAINTENANCE_NOTE: &str = "REGISTER_MAINTENANCE_NOTE";

/// `register --docker-image` (the new entry's default image) and `exec --docker-image` (the image of docker
/// jobs that name none).
pub const DOCKER_IMAGE: &str = "DOCKER_IMAGE";

/// `register --docker-privileged`: a boolean.
pub const DOCKER_PRIVILEGED: &str = "DOCKER_PRIVILEGED";

/// `register --docker-volumes`: comma-separated volumes (`/cache` is always added).
pub const DOCKER_VOLUMES: &str = "DOCKER_VOLUMES";

/// `register --shell`: the shell of the shell executor.
pub const RUNNER_SHELL: &str = "RUNNER_SHELL";

/// `register --limit`: the entry's `limit`.
pub const RUNNER_LIMIT: &str = "RUNNER_LIMIT";

/// `register --request-concurrency`: the entry's `request_concurrency`.
pub const RUNNER_REQUEST_CONCURRENCY: &str = "RUNNER_REQUEST_CONCURRENCY";

/// `register --builds-dir`: the entry's `builds_dir`.
pub const RUNNER_BUILDS_DIR: &str = "RUNNER_BUILDS_DIR";

/// `register --cache-dir`: the entry's `cache_dir`.
pub const RUNNER_CACHE_DIR: &str = "RUNNER_CACHE_DIR";

// The helper verbs (`gitlab-runner-helper <verb>`, crate runwright-helper): gitlab-runner's `env:` fallbacks of
// their flags (commands/helpers/*.go, common/network.go `JobCredentials`). They are read from the job's own
// environment, where the helper runs (helper container, or the job's shell as the job's user).

/// `--token` of `artifacts-downloader`/`artifacts-uploader`: the job token (a secret; the scripts runwright
/// writes pass it only this way, never on the command line).
pub const CI_JOB_TOKEN: &str = "CI_JOB_TOKEN";

/// `--id` of `artifacts-downloader`/`artifacts-uploader`: the job whose artifacts move.
pub const CI_JOB_ID: &str = "CI_JOB_ID";

/// `--tls-cert-file` of the artifact verbs: client certificate for GitLab (PEM file).
pub const CI_SERVER_TLS_CERT_FILE: &str = "CI_SERVER_TLS_CERT_FILE";

/// `--tls-key-file` of the artifact verbs: the client certificate's key (PEM file).
pub const CI_SERVER_TLS_KEY_FILE: &str = "CI_SERVER_TLS_KEY_FILE";

/// `artifacts-downloader --direct-download`: ask GitLab for a redirect to object storage (Go bool; unset: no).
pub const FF_USE_DIRECT_DOWNLOAD: &str = "FF_USE_DIRECT_DOWNLOAD";

/// `artifacts-downloader --archiver-staging-dir`: where the downloaded archive waits (unset: the temporary
/// directory).
pub const ARCHIVER_STAGING_DIR: &str = "ARCHIVER_STAGING_DIR";

/// `artifacts-uploader --compression-level`: fastest, fast, default, slow, slowest.
pub const ARTIFACT_COMPRESSION_LEVEL: &str = "ARTIFACT_COMPRESSION_LEVEL";

/// `artifacts-uploader --ci-debug-trace` (accepted; runwright's helper logs no response details).
pub const CI_DEBUG_TRACE: &str = "CI_DEBUG_TRACE";

/// `cache-archiver --metadata`: JSON object of the cache's metadata (`{"cachekey":"…"}`), written to
/// `metadata.json` beside the archive.
pub const CACHE_METADATA: &str = "CACHE_METADATA";

/// `cache-archiver --compression-level`: fastest, fast, default, slow, slowest.
pub const CACHE_COMPRESSION_LEVEL: &str = "CACHE_COMPRESSION_LEVEL";

/// `cache-archiver --compression-format`: zip (default), zipzstd, tarzstd.
pub const CACHE_COMPRESSION_FORMAT: &str = "CACHE_COMPRESSION_FORMAT";

/// `cache-archiver --max-uploaded-archive-size`: bytes; a bigger archive stays local (0: no limit).
pub const CACHE_MAX_UPLOADED_ARCHIVE_SIZE: &str = "CACHE_MAX_UPLOADED_ARCHIVE_SIZE";

/// `--transfer-buffer-size` of the cache verbs (accepted and ignored, with a warning).
pub const CACHE_TRANSFER_BUFFER_SIZE: &str = "CACHE_TRANSFER_BUFFER_SIZE";

/// `--chunk-size` of the cache verbs (accepted and ignored, with a warning).
pub const CACHE_CHUNK_SIZE: &str = "CACHE_CHUNK_SIZE";

/// `--concurrency` of the cache verbs (accepted and ignored, with a warning).
pub const CACHE_CONCURRENCY: &str = "CACHE_CONCURRENCY";

/// `--transfer-meter-frequency` of the transfer verbs (accepted and ignored, with a warning).
pub const TRANSFER_METER_FREQUENCY: &str = "TRANSFER_METER_FREQUENCY";

/// `--max-archive-files` of the transfer verbs (runwright's own): the most files, directories and symlinks
/// one archive may hold when created or extracted; the runner passes its `max_archive_files`. Unset or 0: no
/// bound, as gitlab-runner's helper.
pub const RUNWRIGHT_MAX_ARCHIVE_FILES: &str = "RUNWRIGHT_MAX_ARCHIVE_FILES";

// The host's environment.

/// The user's home. Read for: the default config directory of a non-root user (`~/.gitlab-runner`, also its
/// `certs/`; runwright-config), the fallback of the XDG directories below (`~/.local/state`, `~/.cache`), the
/// user's systemd unit directory (`install --user-service`: `~/.config/systemd/user`), Docker's client config
/// (`~/.docker/config.json`, without [`DOCKER_CONFIG`]), and passed on to `git http-backend` by the
/// coordinator. Unset: the current directory for the config, the temporary directory for state and caches.
pub const HOME: &str = "HOME";

/// Where programs are looked up: the shell executor's shells (execvp(3)'s search; unset: `/usr/bin:/bin`) and
/// its login-shell detection; passed on to `git http-backend` by the coordinator (which clears the rest).
pub const PATH: &str = "PATH";

/// The XDG state directory (absolute, else ignored): the service's state files
/// (`$XDG_STATE_HOME/runwright`; root without it: `/var/lib/runwright`), `runwright exec`'s pipeline runs
/// (`…/runwright/pipelines`) and journal (`…/runwright/journal`). Unset: `~/.local/state`.
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";

/// The XDG cache directory (absolute, else ignored): `runwright exec`'s caches
/// (`$XDG_CACHE_HOME/runwright/exec/<project>-<hash>`, unless [`RUNWRIGHT_EXEC_CACHE_DIR`]). Unset: `~/.cache`.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";

/// Set (to anything): `runwright exec` prints no colour, even on a terminal (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// `dumb`: `runwright exec` on a terminal prints lines instead of the live view (unless `--view` says).
pub const TERM: &str = "TERM";

/// The Docker daemon of the docker executor when `[runners.docker] host` is unset (`unix://`, `tcp://`,
/// `http(s)://`), as Docker's client reads it. Unset: `unix:///var/run/docker.sock`.
pub const DOCKER_HOST: &str = "DOCKER_HOST";

/// The directory of `key.pem`, `cert.pem`, `ca.pem` for a TCP [`DOCKER_HOST`] when `[runners.docker]
/// tls_cert_path` is unset, as Docker's client reads it. Unset: plain HTTP unless `tls_verify`.
pub const DOCKER_CERT_PATH: &str = "DOCKER_CERT_PATH";

/// The directory of Docker's client config, whose `config.json` holds registry credentials the docker
/// executor uses for pulls (as GitLab's runner reads it). Unset: `~/.docker`.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";

/// Set by systemd with `WatchdogSec=`: the watchdog interval in microseconds; `runwright run` pings at half
/// of it. Only honoured when [`WATCHDOG_PID`] is unset or names this process.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

/// Set by systemd beside [`WATCHDOG_USEC`]: the pid the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

// Tests and benchmarks.

/// Tests only: `1` makes the pipeline corpus test (`runwright-pipeline/tests/corpus.rs`) write the actual
/// outcome of each case to its expected files (to review a new case) instead of comparing. Unset: compare.
pub const UPDATE_CORPUS: &str = "UPDATE_CORPUS";

/// Benchmarks only (`cargo bench -p runwright-archive`): MiB of generated files (default 256).
pub const ARCHIVE_BENCH_MIB: &str = "ARCHIVE_BENCH_MIB";

/// Benchmarks only: how many generated files (default 10 000).
pub const ARCHIVE_BENCH_FILES: &str = "ARCHIVE_BENCH_FILES";

/// Benchmarks only: runs per measurement (default 3).
pub const ARCHIVE_BENCH_RUNS: &str = "ARCHIVE_BENCH_RUNS";

/// Benchmarks only: the largest worker count measured (default: the number of cores).
pub const ARCHIVE_BENCH_WORKERS: &str = "ARCHIVE_BENCH_WORKERS";

/// Benchmarks only: the directory the generated tree and archives go to (default: the temporary directory).
pub const ARCHIVE_BENCH_DIR: &str = "ARCHIVE_BENCH_DIR";

/// Benchmarks only: set by the archive benchmark for the child process it measures (`<op>:<workers>:<source>:
/// <output>`); the child does that one operation. Never set by hand.
pub const ARCHIVE_BENCH_WORKER: &str = "ARCHIVE_BENCH_WORKER";
