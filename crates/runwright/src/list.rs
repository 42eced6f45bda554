//! `runwright list`: GitLab's lines (name padded to 50 columns, then `Executor=… Token=… URL=…` as GitLab's log
//! formatter sorts them) on stderr, with `State=` added at the end (so scripts matching GitLab's line keep
//! working): what the config
//! and the running service know about the entry without asking GitLab (`status` asks). `--json` prints the
//! same on stdout. Tokens are shortened: a listing is often pasted into tickets.

use crate::args::ConfigArg;
use clap::Args;
use runwright_config::RunnerConfig;
use runwright_service::state::{find_service, ServiceState};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The runners as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct ListedRunner {
    pub name: String,
    pub url: String,
    pub id: i64,
    pub executor: String,
    pub token: String,
    pub token_expires_at: Option<String>,
    pub state: String,
    /// Why the entry is `invalid` (file, line, key and problem); absent for valid entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state column: `token-expired` / `token-expiring` from the config; else, with the service running, its
/// view: `polling`, `token-invalid` (403), `orphaned`, `unhealthy`, `failing`, `not-started`, `starting`; else
/// `service-stopped`. An entry that fails validation is `invalid` (see [`run`]).
pub fn state(r: &RunnerConfig, service: Option<&ServiceState>) -> String {
    if crate::ops::status::token_from_config(r) == Some("expired") {
        return "token-expired".into();
    }
    let Some(s) = service.and_then(|s| s.for_runner(&r.url, &r.token)) else {
        return if service.is_some() {
            "not-started".into()
        } else {
            "service-stopped".into()
        };
    };
    let base = if s.unhealthy_until.is_some() {
        "unhealthy"
    } else {
        match s.last_outcome.as_deref() {
            None => "starting",
            Some("forbidden") => "token-invalid",
            Some("orphaned") => "orphaned",
            Some(o) if o.starts_with("not_started") => "not-started",
            Some("job" | "no_job" | "conflict" | "malformed_job") => "polling",
            Some(_) => "failing",
        }
    };
    if base == "polling" && crate::ops::status::token_from_config(r) == Some("expiring") {
        return "polling,token-expiring".into();
    }
    base.into()
}

pub fn run(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let loaded = runwright_config::load(&path)?;
    for w in &loaded.warnings {
        eprintln!(
            "WARNING: {}",
            runwright_trace::ansi::escape_controls(&w.to_string())
        );
    }
    let found = find_service(&path);
    for w in &found.warnings {
        eprintln!("WARNING: {w}");
    }
    let service = found.pid.and(found.state);
    let listed: Vec<ListedRunner> = loaded
        .config
        .runners
        .iter()
        .map(|r| ListedRunner {
            name: r.name.clone(),
            url: r.url.clone(),
            id: r.id,
            executor: r.executor.clone(),
            token: runwright_config::short_token(&r.token),
            token_expires_at: r.token_expires_at.map(crate::ops::fmt_time),
            state: state(r, service.as_ref()),
            error: None,
        })
        .collect();
    // Entries that failed validation, in their place in the file: the service skips them (issue 16 item 8).
    let mut listed = listed;
    let mut order: Vec<usize> =
        crate::ops::valid_positions(loaded.config.runners.len(), &loaded.invalid_runners);
    for r in &loaded.invalid_runners {
        listed.push(ListedRunner {
            name: r.name.clone(),
            url: r.url.clone(),
            id: 0,
            executor: r.executor.clone(),
            token: r.short_token.clone(),
            token_expires_at: None,
            state: "invalid".into(),
            error: Some(r.error.clone()),
        });
        order.push(r.index);
    }
    let mut indexed: Vec<(usize, ListedRunner)> = order.into_iter().zip(listed).collect();
    indexed.sort_by_key(|(i, _)| *i);
    let listed: Vec<ListedRunner> = indexed.into_iter().map(|(_, r)| r).collect();
    if args.json {
        crate::ops::print_stdout(&serde_json::to_string_pretty(&listed)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The config's names and URLs are shown, not obeyed by the terminal (issue 17 item 8).
    let e = runwright_trace::ansi::escape_controls;
    eprintln!(
        "{:<50} ConfigFile={}",
        "Listing configured runners",
        e(&path.display().to_string())
    );
    for r in &listed {
        let error = r
            .error
            .as_deref()
            .map(|err| e(&format!(" Error={err:?}")).into_owned())
            .unwrap_or_default();
        eprintln!(
            "{:<50}  Executor={} Token={} URL={} State={}{error}",
            e(&r.name),
            e(&r.executor),
            e(&r.token),
            e(&r.url),
            e(&r.state)
        );
    }
    Ok(ExitCode::SUCCESS)
}
