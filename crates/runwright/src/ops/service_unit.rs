//! `install`, `uninstall`, `start`, `stop`, `restart`: the systemd unit of the service, with GitLab's flags
//! (reference `protocol.md` §9.1, §9.2; runner commands/service.go). The unit differs from GitLab's where
//! that makes the service better to operate, and says so:
//!
//! * `Type=notify`: systemd considers the service started once every runner entry has polled GitLab once
//!   (`READY=1`, see `ops/sd.rs`), with `WatchdogSec=` pings;
//! * `KillSignal=SIGQUIT` with `KillMode=mixed`: `systemctl stop` drains — no new jobs, running ones finish
//!   and send their final update — where GitLab's unit kills them (SIGTERM); only the main process gets the
//!   signal, so job processes are not hit by it; `TimeoutStopSec=` is sized for that drain (GitLab's default
//!   job timeout, one hour, plus `shutdown_timeout` and a margin; `--stop-timeout` to change it);
//! * `ExecReload=` sends SIGHUP (reload config.toml);
//! * `Delegate=yes`: the unit's cgroup is the service's to manage, so each shell job gets a cgroup of its own
//!   below it and is killed as a whole when it ends (runwright-shell cgroup.rs) — also for a service that runs
//!   as `--init-user`, which may then write there. systemd's stop still kills everything below the unit.
//!
//! `RUNWRIGHT_SYSTEMD_UNIT_DIR` makes `install`/`uninstall` only write or remove the unit file in that
//! directory, without calling systemctl (packaging, tests).

use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the unit goes instead of systemd's directory; no systemctl call then.
pub const RUNWRIGHT_SYSTEMD_UNIT_DIR: &str = runwright_static::env_vars::RUNWRIGHT_SYSTEMD_UNIT_DIR;

/// GitLab's default job timeout (one hour): what a drain must at least allow.
const DEFAULT_JOB_TIMEOUT_SECS: u64 = 3600;
/// Time for final updates, artifact uploads and cache archives after the last job's script.
const DRAIN_MARGIN_SECS: u64 = 300;

#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Service (unit) name.
    #[arg(short = 'n', long, default_value = "gitlab-runner")]
    pub service: String,
    /// A user service (systemctl --user) instead of a system one.
    #[arg(long)]
    pub user_service: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Working directory of the service (default: the current directory).
    #[arg(short = 'd', long)]
    pub working_directory: Option<PathBuf>,
    /// Config file (default: /etc/gitlab-runner/config.toml as root, else ~/.gitlab-runner/config.toml).
    #[arg(short = 'c', long, env = runwright_static::env_vars::CONFIG_FILE)]
    pub config: Option<PathBuf>,
    /// Accepted for compatibility (logs go to the journal).
    #[arg(long)]
    pub syslog: bool,
    /// Run jobs as this user (`run --user`); the service itself runs as root.
    #[arg(short = 'u', long, conflicts_with = "init_user")]
    pub user: Option<String>,
    /// Run the whole service as this user (`User=` in the unit).
    #[arg(short = 'i', long)]
    pub init_user: Option<String>,
    /// TimeoutStopSec: how long `systemctl stop` lets running jobs finish (default: 1 h job timeout +
    /// shutdown_timeout + 5 min).
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
}

/// systemd is PID 1 on this host (sd_booted(3)).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn pid1() -> String {
    std::fs::read_to_string("/proc/1/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn no_systemd(verb: &str) -> anyhow::Error {
    anyhow!(
        "{verb}: systemd is not running on this host (PID 1 is {}); run `runwright run` under your init system or a container entrypoint instead (set {RUNWRIGHT_SYSTEMD_UNIT_DIR} to only write the unit file)",
        pid1()
    )
}

/// A systemd `ExecStart=` word: double-quoted, `\` and `"` escaped, `%` and `$` doubled (systemd.service(5),
/// systemd.unit(5) specifiers).
fn quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit text for `exe run …`.
pub fn render_unit(
    exe: &Path,
    config: &Path,
    working_directory: &Path,
    args: &InstallArgs,
    shutdown_timeout_secs: u64,
) -> String {
    let mut cmd = vec![
        quote(&exe.to_string_lossy()),
        quote("run"),
        quote("--config"),
        quote(&config.to_string_lossy()),
        quote("--working-directory"),
        quote(&working_directory.to_string_lossy()),
        quote("--service"),
        quote(&args.service.service),
    ];
    if args.syslog {
        cmd.push(quote("--syslog"));
    }
    if let Some(u) = &args.user {
        cmd.push(quote("--user"));
        cmd.push(quote(u));
    }
    let stop = args
        .stop_timeout
        .unwrap_or(DEFAULT_JOB_TIMEOUT_SECS + shutdown_timeout_secs + DRAIN_MARGIN_SECS);
    let user = args
        .init_user
        .as_ref()
        .map(|u| format!("User={u}\n"))
        .unwrap_or_default();
    let wanted_by = if args.service.user_service {
        "default.target"
    } else {
        "multi-user.target"
    };
    format!(
        "# Written by `runwright install` ({version}).\n\
[Unit]\n\
Description=GitLab Runner (runwright)\n\
ConditionFileIsExecutable={exe}\n\
After=network-online.target\n\
Wants=network-online.target\n\
StartLimitIntervalSec=5\n\
StartLimitBurst=10\n\
\n\
[Service]\n\
# Ready once every runner entry has polled GitLab once; watchdog pings while the service loop runs.\n\
Type=notify\n\
NotifyAccess=main\n\
TimeoutStartSec=300\n\
WatchdogSec=120\n\
ExecStart={cmd}\n\
ExecReload=/bin/kill -HUP $MAINPID\n\
# stop drains: SIGQUIT to the service only, running jobs finish and report (GitLab's unit kills them).\n\
KillSignal=SIGQUIT\n\
KillMode=mixed\n\
TimeoutStopSec={stop}\n\
# Each shell job runs in a cgroup of its own below the unit's; systemd leaves those to the service.\n\
Delegate=yes\n\
Restart=always\n\
RestartSec=120\n\
EnvironmentFile=-/etc/sysconfig/{name}\n\
{user}\
\n\
[Install]\n\
WantedBy={wanted_by}\n",
        version = runwright_service::identity::VERSION,
        exe = exe.display(),
        cmd = cmd.join(" "),
        name = args.service.service,
    )
}

fn unit_dir(service: &ServiceArgs, verb: &str) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(dir) = std::env::var_os(RUNWRIGHT_SYSTEMD_UNIT_DIR).filter(|d| !d.is_empty()) {
        return Ok((PathBuf::from(dir), false));
    }
    if !systemd_running() {
        return Err(no_systemd(verb));
    }
    if service.user_service {
        let home = std::env::var_os(runwright_static::env_vars::HOME)
            .ok_or_else(|| anyhow!("{verb}: HOME is not set"))?;
        return Ok((PathBuf::from(home).join(".config/systemd/user"), true));
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("{verb}: a system service needs root (sudo {verb} …), or use --user-service");
    }
    Ok((PathBuf::from("/etc/systemd/system"), true))
}

fn systemctl(service: &ServiceArgs, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new("systemctl");
    if service.user_service {
        cmd.arg("--user");
    }
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| anyhow!("cannot run systemctl: {e}; is systemd installed?"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            err.lines().next().unwrap_or("").trim()
        );
    }
    Ok(())
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let (dir, call_systemctl) = unit_dir(&args.service, "install")?;
    let exe = std::env::current_exe().context("finding this executable's path")?;
    let config = std::path::absolute(
        args.config
            .clone()
            .unwrap_or_else(runwright_config::default_config_path),
    )
    .context("resolving the config path")?;
    let wd = std::path::absolute(match &args.working_directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    })
    .context("resolving the working directory")?;
    let shutdown = runwright_config::load(&config)
        .map(|l| l.config.shutdown_timeout().as_secs())
        .unwrap_or(30);
    let unit = render_unit(&exe, &config, &wd, &args, shutdown);
    let path = dir.join(format!("{}.service", args.service.service));
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow!("install: cannot create {}: {e}", dir.display()))?;
    runwright_config::edit::write_atomic(&path, unit.as_bytes())
        .map_err(|e| anyhow!("install: {e:#}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    }
    eprintln!("Installed {}", path.display());
    if call_systemctl {
        systemctl(&args.service, &["daemon-reload"])?;
        systemctl(&args.service, &["enable", &args.service.service])?;
    } else {
        eprintln!("{RUNWRIGHT_SYSTEMD_UNIT_DIR} is set: systemctl was not called");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn control(verb: &str, args: ServiceArgs) -> anyhow::Result<ExitCode> {
    if verb == "uninstall" {
        let (dir, call_systemctl) = unit_dir(&args, verb)?;
        let path = dir.join(format!("{}.service", args.service));
        if call_systemctl {
            // A unit that is not running or enabled is fine to remove.
            let _ = systemctl(&args, &["disable", "--now", &args.service]);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("Removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "uninstall: {} is not installed ({} does not exist)",
                    args.service,
                    path.display()
                )
            }
            Err(e) => bail!("uninstall: cannot remove {}: {e}", path.display()),
        }
        if call_systemctl {
            systemctl(&args, &["daemon-reload"])?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !systemd_running() {
        return Err(no_systemd(verb));
    }
    systemctl(&args, &[verb, &args.service])?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("50%$x\"\\"), "\"50%%$$x\\\"\\\\\"");
    }
}
