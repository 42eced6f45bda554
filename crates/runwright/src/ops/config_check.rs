//! `runwright config check`: loads a config as the service would (errors with file, line and key; warnings
//! for unknown keys and for keys runwright does not honour; `[[runners]]` entries that fail validation, which
//! the service skips, make it exit 1) and prints the effective slot model — what `concurrent`, `limit` and
//! `request_concurrency` allow per runner entry (reference `protocol.md` §8.2; runwright's `service/slots.rs`:
//! a job request holds a slot of `concurrent` and of the entry's `limit` while it waits) — with a warning for
//! every setting that can never take effect.

use clap::{Args, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate config.toml and print the effective slot model.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: crate::args::ConfigArg,
    /// The model as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct RunnerSlots {
    pub name: String,
    pub executor: String,
    /// `limit` as written (0 = no limit of its own).
    pub limit: usize,
    pub request_concurrency: usize,
    /// Jobs this entry can run at once: `limit` capped by `concurrent`.
    pub max_jobs: usize,
    /// Job requests in flight at once: `request_concurrency` capped by the jobs it may run.
    pub max_requests: usize,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct SlotModel {
    pub concurrent: usize,
    pub check_interval_secs: u64,
    pub runners: Vec<RunnerSlots>,
    pub warnings: Vec<String>,
    /// `[[runners]]` entries that failed validation: the service skips them and runs the others (issue 16 item
    /// 8). `config check` exits 1 when there is one.
    pub invalid_runners: Vec<runwright_config::InvalidRunner>,
    /// How each shell entry's jobs are confined, as far as this process can tell (issue 17 item 6).
    pub job_cgroups: Vec<JobCgroups>,
}

/// Whether a shell entry's jobs get a cgroup each (`runwright-shell` cgroup.rs), checked by `config check`
/// itself: as its own user and in its own cgroup, where the service checks again when it starts.
#[derive(Serialize, Debug, PartialEq)]
pub struct JobCgroups {
    pub runner: String,
    pub confined: bool,
    /// What the service would log at start.
    pub detail: String,
    /// Something to fix even though cgroups work (jobs run through `su` leave theirs).
    pub warning: Option<String>,
}

/// Probes cgroup v2 for every shell entry, as the service does when an entry starts.
pub fn job_cgroups(config: &runwright_config::Config) -> Vec<JobCgroups> {
    use runwright_shell::cgroup::Confinement;
    config
        .runners
        .iter()
        .filter(|r| r.executor == "shell")
        .map(|r| {
            let settings = runwright_service::cgroup_settings(r, config.user.as_deref());
            let found = runwright_shell::cgroup::detect(&settings);
            JobCgroups {
                runner: r.name.clone(),
                confined: matches!(found, Confinement::Cgroups { .. }),
                detail: found.describe(),
                warning: match found {
                    Confinement::Cgroups { warning, .. } => warning,
                    Confinement::Unavailable { .. } => None,
                },
            }
        })
        .collect()
}

/// The cgroup lines of `config check` (on stderr, with the load's warnings: they are about this host, not the
/// file).
pub fn render_job_cgroups(found: &[JobCgroups]) -> String {
    let mut out = String::new();
    if !found.is_empty() {
        out.push_str(&format!(
            "job cgroups, as checked by this process (uid {}, cgroup {}); the service checks again when it starts:\n",
            nix::unistd::geteuid(),
            std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string))
                .unwrap_or_else(|| "-".into())
        ));
    }
    for j in found {
        let prefix = if j.confined { "" } else { "WARNING: " };
        out.push_str(&format!("{prefix}runner {:?}: {}\n", j.runner, j.detail));
        if let Some(w) = &j.warning {
            out.push_str(&format!("WARNING: runner {:?}: {w}\n", j.runner));
        }
    }
    out
}

pub fn model(config: &runwright_config::Config) -> SlotModel {
    let c = config.concurrent.max(1);
    let mut warnings = Vec::new();
    let mut runners = Vec::new();
    if config.concurrent == 0 {
        warnings.push("concurrent = 0 is read as 1: only one job runs at a time".into());
    }
    if c < config.runners.len() {
        warnings.push(format!(
            "concurrent = {c} is less than the number of runners ({}): runners wait for each other's slots, and a long poll of one delays the others",
            config.runners.len()
        ));
    }
    for r in &config.runners {
        let rc = r.request_concurrency();
        let max_jobs = if r.limit == 0 { c } else { r.limit.min(c) };
        let max_requests = rc.min(max_jobs);
        if r.limit > c {
            warnings.push(format!(
                "runner {:?}: limit = {} can never be reached: concurrent = {c} caps the whole service",
                r.name, r.limit
            ));
        }
        if rc > max_jobs {
            warnings.push(format!(
                "runner {:?}: request_concurrency = {rc} can never be reached: a job request holds a job slot and at most {max_jobs} are available to it",
                r.name
            ));
        }
        if r.executor == "shell" && r.shell.as_deref().is_some_and(|s| s != "bash" && s != "sh") {
            warnings.push(format!(
                "runner {:?}: shell {:?} is not supported by runwright's shell executor (bash, sh): this entry will not request jobs",
                r.name,
                r.shell.as_deref().unwrap_or_default()
            ));
        }
        if r.executor != "shell" && r.executor != "docker" {
            warnings.push(format!(
                "runner {:?}: executor {:?} is not supported by runwright yet: this entry will not request jobs",
                r.name, r.executor
            ));
        }
        if crate::ops::status::token_from_config(r) == Some("expired") {
            warnings.push(format!(
                "runner {:?}: its token expired at {}: GitLab answers 403 until it is registered again",
                r.name,
                r.token_expires_at.map(crate::ops::fmt_time).unwrap_or_default()
            ));
        }
        runners.push(RunnerSlots {
            name: r.name.clone(),
            executor: r.executor.clone(),
            limit: r.limit,
            request_concurrency: rc,
            max_jobs,
            max_requests,
        });
    }
    warnings.extend(runwright_service::dashboard::auth::config_warning(config));
    if !config.runners.is_empty() && config.runners.iter().all(|r| r.limit > 0) {
        let sum: usize = config.runners.iter().map(|r| r.limit).sum();
        if sum < c {
            warnings.push(format!(
                "concurrent = {c} can never be filled: the runners' limits add up to {sum}"
            ));
        }
    }
    SlotModel {
        concurrent: c,
        check_interval_secs: config.check_interval().as_secs(),
        runners,
        warnings,
        invalid_runners: Vec::new(),
        job_cgroups: Vec::new(),
    }
}

pub fn render(path: &std::path::Path, m: &SlotModel) -> String {
    let validity = if m.invalid_runners.is_empty() {
        "valid".to_string()
    } else {
        format!(
            "{} invalid runner entr{} (skipped, the others run)",
            m.invalid_runners.len(),
            if m.invalid_runners.len() == 1 {
                "y"
            } else {
                "ies"
            }
        )
    };
    let mut out = format!(
        "{}: {validity}, {} runner(s)\nconcurrent = {} (jobs at once in the whole service), check_interval = {}s\n",
        path.display(),
        m.runners.len(),
        m.concurrent,
        m.check_interval_secs
    );
    let width = m
        .runners
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    out.push_str(&format!(
        "{:<width$}  {:<8}  {:>5}  {:>19}  {:>8}  {:>12}\n",
        "RUNNER", "EXECUTOR", "LIMIT", "REQUEST_CONCURRENCY", "MAX_JOBS", "MAX_REQUESTS"
    ));
    for r in &m.runners {
        let limit = if r.limit == 0 {
            "-".to_string()
        } else {
            r.limit.to_string()
        };
        out.push_str(&format!(
            "{:<width$}  {:<8}  {:>5}  {:>19}  {:>8}  {:>12}\n",
            r.name, r.executor, limit, r.request_concurrency, r.max_jobs, r.max_requests
        ));
    }
    for w in &m.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    for r in &m.invalid_runners {
        out.push_str(&format!("ERROR: {r}\n"));
    }
    out
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check(args) = cmd;
    let path = args.config.path();
    let loaded = runwright_config::load(&path)?;
    for w in &loaded.warnings {
        eprintln!("WARNING: {w}");
    }
    let mut m = model(&loaded.config);
    m.invalid_runners = loaded.invalid_runners;
    m.job_cgroups = job_cgroups(&loaded.config);
    eprint!("{}", render_job_cgroups(&m.job_cgroups));
    if args.json {
        crate::ops::print_stdout(&serde_json::to_string_pretty(&m)?)?;
    } else {
        crate::ops::print_stdout(render(&path, &m).trim_end())?;
    }
    // A runner that will not run is an error of the file, even though the service starts with the others.
    Ok(if m.invalid_runners.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_entry_with_a_shell_runwright_cannot_run_is_warned() {
        let text = "[[runners]]\n  name = \"win\"\n  url = \"https://g/\"\n  token = \"t\"\n  executor = \"shell\"\n  shell = \"pwsh\"\n";
        let config = runwright_config::parse(text, std::path::Path::new("c.toml"))
            .expect("parses")
            .config;
        let m = model(&config);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("shell \"pwsh\" is not supported")
                    && w.contains("will not request jobs")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn unreachable_settings_are_warned() {
        let text = "concurrent = 2\n[[runners]]\n  name = \"a\"\n  url = \"https://g/\"\n  token = \"t\"\n  executor = \"shell\"\n  limit = 5\n  request_concurrency = 4\n[[runners]]\n  name = \"b\"\n  url = \"https://g/\"\n  token = \"u\"\n  executor = \"shell\"\n  limit = 1\n";
        let config = runwright_config::parse(text, std::path::Path::new("c.toml"))
            .expect("parses")
            .config;
        let m = model(&config);
        assert_eq!(m.runners[0].max_jobs, 2);
        assert_eq!(m.runners[0].max_requests, 2);
        assert_eq!(m.runners[1].max_jobs, 1);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("limit = 5 can never be reached")),
            "{:?}",
            m.warnings
        );
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("request_concurrency = 4")),
            "{:?}",
            m.warnings
        );
        assert!(
            !m.warnings.iter().any(|w| w.contains("can never be filled")),
            "{:?}",
            m.warnings
        );
    }
}
