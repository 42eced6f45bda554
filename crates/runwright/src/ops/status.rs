//! `status`: the service state as GitLab's runner prints it (`<service>: Service is running`, exit 0, or
//! `… Service has stopped`, exit 1 — runner commands/service.go `RunServiceControl`), then what the build
//! host's team used to collect with scripts, per runner entry: whether GitLab accepts the token (verify) and
//! when it expires; paused and last contact as GitLab reports them when an access token is at hand
//! (`GITLAB_TOKEN`, `GET /api/v4/runners/:id`); and from the service's state file the last successful poll,
//! the running jobs and an unhealthy back-off. `--json` prints the same on stdout.

use super::{client, info_for, load_config_full, runtime};
use crate::args::ConfigArg;
use clap::Args;
use runwright_config::{short_token, RunnerConfig};
use runwright_service::state::{find_service, RunnerState};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Service name (as in the systemd unit).
    #[arg(short = 'n', long, default_value = "gitlab-runner")]
    pub service: String,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// An access token (scope read_api/manage_runner, or admin) for paused and last contact from GitLab's API.
    #[arg(long, env = runwright_static::env_vars::GITLAB_TOKEN, hide_env_values = true)]
    pub gitlab_token: Option<String>,
    /// Do not ask GitLab (no verify, no API): only the config and the service's state file.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Serialize, Debug)]
pub struct ServiceReport {
    pub name: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub ready: Option<bool>,
    pub config: String,
}

#[derive(Serialize, Debug, Default)]
pub struct TokenReport {
    /// `valid`, `expiring`, `expired`, `invalid`, `orphaned`, `unknown`.
    pub state: String,
    pub expires_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct GitLabReport {
    pub paused: Option<bool>,
    pub status: Option<String>,
    pub contacted_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct RunnerReport {
    pub name: String,
    pub url: String,
    pub id: i64,
    pub executor: String,
    pub token: String,
    pub token_state: TokenReport,
    pub gitlab: Option<GitLabReport>,
    pub service: Option<RunnerState>,
    /// Why the entry is not used: it failed validation (file, line, key, problem). Such an entry is not asked
    /// about at GitLab.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct StatusReport {
    pub service: ServiceReport,
    pub runners: Vec<RunnerReport>,
}

/// A token expiring within this many days is reported as `expiring`.
const EXPIRING_DAYS: i64 = 7;

/// What the config alone says of a token: `expired`, `expiring` or nothing.
pub fn token_from_config(r: &RunnerConfig) -> Option<&'static str> {
    let at = r.token_expires_at?;
    let now = super::now();
    if at <= now {
        Some("expired")
    } else if at - now < time::Duration::days(EXPIRING_DAYS) {
        Some("expiring")
    } else {
        None
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let loaded = load_config_full(&path)?;
    let config = &loaded.config;
    let found = find_service(&path);
    for w in &found.warnings {
        eprintln!("WARNING: {w}");
    }
    let (pid, state) = (found.pid, found.state);
    let system_id = super::register::system_id_for(&path);
    let rt = runtime()?;
    let mut runners = Vec::new();
    for r in &config.runners {
        let mut token = TokenReport {
            expires_at: r.token_expires_at.map(super::fmt_time),
            ..Default::default()
        };
        let mut gitlab = None;
        if args.offline {
            token.state = token_from_config(r).unwrap_or("unknown").into();
        } else {
            match client(&r.url, Some(r)) {
                Ok(c) => {
                    match rt.block_on(c.verify_runner(&r.token, &system_id, &info_for(r))) {
                        Ok(v) => {
                            if let Some(e) = super::parse_expiry(v.token_expires_at.as_deref()) {
                                token.expires_at = Some(super::fmt_time(e));
                            }
                            token.state = match token_from_config(r) {
                                Some("expiring") => "expiring".into(),
                                _ => "valid".into(),
                            };
                        }
                        Err(e) => {
                            token.state = match e.status {
                                Some(403) if token_from_config(r) == Some("expired") => "expired",
                                Some(403) => "invalid",
                                Some(422) => "orphaned",
                                _ => "unknown",
                            }
                            .into();
                            token.error = Some(e.message.clone());
                        }
                    }
                    if let Some(pat) = args.gitlab_token.as_deref().filter(|p| !p.is_empty()) {
                        let mut g = GitLabReport::default();
                        if r.id == 0 {
                            g.error = Some("no id in config.toml".into());
                        } else {
                            match rt.block_on(c.get_runner_details(r.id, pat)) {
                                Ok(v) => {
                                    g.paused =
                                        v.get("paused").and_then(|p| p.as_bool()).or_else(|| {
                                            v.get("active").and_then(|a| a.as_bool()).map(|a| !a)
                                        });
                                    g.status = v
                                        .get("status")
                                        .and_then(|s| s.as_str())
                                        .map(str::to_string);
                                    g.contacted_at = v
                                        .get("contacted_at")
                                        .and_then(|s| s.as_str())
                                        .map(str::to_string);
                                }
                                Err(e) => {
                                    g.error = Some(format!("{e}; {}", super::hint(&e, &r.url)))
                                }
                            }
                        }
                        gitlab = Some(g);
                    }
                }
                Err(e) => {
                    token.state = "unknown".into();
                    token.error = Some(e.to_string());
                }
            }
        }
        runners.push(RunnerReport {
            name: r.name.clone(),
            url: r.url.clone(),
            id: r.id,
            executor: r.executor.clone(),
            token: short_token(&r.token),
            token_state: token,
            gitlab,
            service: state
                .as_ref()
                .and_then(|s| s.for_runner(&r.url, &r.token))
                .cloned(),
            invalid: None,
        });
    }
    // Entries that failed validation, in their place in the file: the service skips them (issue 16 item 8).
    let mut order = super::valid_positions(runners.len(), &loaded.invalid_runners);
    for r in &loaded.invalid_runners {
        runners.push(RunnerReport {
            name: r.name.clone(),
            url: r.url.clone(),
            id: 0,
            executor: r.executor.clone(),
            token: r.short_token.clone(),
            token_state: TokenReport {
                state: "unknown".into(),
                ..Default::default()
            },
            gitlab: None,
            service: None,
            invalid: Some(r.error.clone()),
        });
        order.push(r.index);
    }
    let mut indexed: Vec<(usize, RunnerReport)> = order.into_iter().zip(runners).collect();
    indexed.sort_by_key(|(i, _)| *i);
    let runners: Vec<RunnerReport> = indexed.into_iter().map(|(_, r)| r).collect();
    let report = StatusReport {
        service: ServiceReport {
            name: args.service.clone(),
            running: pid.is_some(),
            pid,
            ready: state.as_ref().map(|s| s.ready),
            config: path.display().to_string(),
        },
        runners,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)?;
        crate::ops::print_stdout(&text)?;
    } else {
        eprint!("{}", render(&report));
    }
    Ok(if report.service.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The human form, on stderr as GitLab's runner prints it.
///
/// Names, URLs and GitLab's answers are shown, not obeyed by the terminal (issue 17 item 8): every field goes
/// through [`escape_controls`](runwright_trace::ansi::escape_controls).
pub fn render(report: &StatusReport) -> String {
    let e = runwright_trace::ansi::escape_controls;
    let mut out = String::new();
    let s = &report.service;
    if s.running {
        out.push_str(&format!("{}: Service is running\n", e(&s.name)));
    } else {
        out.push_str(&format!("{}: Service has stopped\n", e(&s.name)));
    }
    out.push_str(&format!(
        "{:<50}  ConfigFile={}{}\n",
        "Runners",
        e(&s.config),
        match (s.pid, s.ready) {
            (Some(pid), Some(ready)) => format!(" PID={pid} Ready={ready}"),
            (Some(pid), None) => format!(" PID={pid}"),
            _ => String::new(),
        }
    ));
    for r in &report.runners {
        if let Some(invalid) = &r.invalid {
            out.push_str(&format!(
                "{:<50}  Token={} Invalid={} (this entry is skipped; the others run)\n",
                e(&r.name),
                e(&r.token),
                e(&format!("{invalid:?}"))
            ));
            continue;
        }
        let mut fields = vec![
            format!("Token={}", e(&r.token)),
            format!(
                "TokenState={}{}",
                e(&r.token_state.state),
                r.token_state
                    .expires_at
                    .as_ref()
                    .map(|at| format!("({})", e(at)))
                    .unwrap_or_default()
            ),
        ];
        if let Some(g) = &r.gitlab {
            match &g.error {
                Some(err) => fields.push(format!("GitLab=error({})", e(err))),
                None => {
                    fields.push(format!(
                        "Paused={}",
                        g.paused
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "?".into())
                    ));
                    fields.push(format!(
                        "GitLabStatus={}",
                        e(g.status.as_deref().unwrap_or("?"))
                    ));
                    fields.push(format!(
                        "LastContact={}",
                        e(g.contacted_at.as_deref().unwrap_or("never"))
                    ));
                }
            }
        }
        match &r.service {
            Some(st) => {
                fields.push(format!(
                    "LastPoll={}",
                    e(st.last_success_at.as_deref().unwrap_or("never"))
                ));
                fields.push(format!(
                    "Outcome={}",
                    e(st.last_outcome.as_deref().unwrap_or("none"))
                ));
                fields.push(format!("RunningJobs={}", st.running_jobs.len()));
                if let Some(u) = &st.unhealthy_until {
                    fields.push(format!("UnhealthyUntil={}", e(u)));
                }
                if let Some(n) = &st.next_token_rotation {
                    fields.push(format!("NextTokenRotation={}", e(n)));
                }
            }
            None => fields.push("LastPoll=unknown(service not running)".into()),
        }
        out.push_str(&format!("{:<50}  {}\n", e(&r.name), fields.join(" ")));
        if let Some(err) = &r.token_state.error {
            if r.token_state.state == "unknown" {
                out.push_str(&format!("{:<50}  Error={}\n", "", e(err)));
            }
        }
    }
    out
}
