//! `runwright history`: the jobs in the job journal (issue 6), newest last, filtered by runner, project, status
//! and age; a table for people, `--json` for scripts. Also where both `history` and `logs` find the journal.

use anyhow::Context;
use clap::Args;
use runwright_journal::{JobEntry, Journal};
pub use runwright_service::history::{
    format_duration, format_ms, json_of, runner_matches, shown_status, JobFilter,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which journal to read: the service's (from `config.toml`), `runwright exec`'s (`--local`) or a directory.
#[derive(Args, Debug, Clone)]
pub struct JournalArgs {
    /// Config file whose journal to read (default: /etc/gitlab-runner/config.toml as root, else
    /// ~/.gitlab-runner/config.toml); its `[journal] dir`, else `journal/` beside it.
    #[arg(short = 'c', long, env = runwright_static::env_vars::CONFIG_FILE)]
    pub config: Option<PathBuf>,
    /// Read this journal directory instead.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "local"])]
    pub journal: Option<PathBuf>,
    /// Read the journal of `runwright exec` runs ($XDG_STATE_HOME/runwright/journal).
    #[arg(long)]
    pub local: bool,
}

impl JournalArgs {
    pub fn open(&self) -> anyhow::Result<Journal> {
        let dir = if let Some(dir) = &self.journal {
            dir.clone()
        } else if self.local {
            runwright_service::journal::local_dir()
        } else {
            let path = self
                .config
                .clone()
                .unwrap_or_else(runwright_config::default_config_path);
            let loaded = runwright_config::load(&path).with_context(|| {
                format!(
                    "reading {} to find the job journal (use --journal DIR, or --local for runwright exec runs)",
                    path.display()
                )
            })?;
            match runwright_service::journal::service_settings(&loaded.config, &path) {
                Some((dir, _)) => dir,
                None => anyhow::bail!(
                    "the job journal is disabled in {} ([journal] enabled = false)",
                    path.display()
                ),
            }
        };
        Journal::open_existing(&dir).with_context(|| {
            format!(
                "no job journal at {} (no job has run with it yet, or it lives elsewhere: see [journal] dir; \
                 --local reads runwright exec runs)",
                dir.display()
            )
        })
    }
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// Only jobs of this runner (its name or short token).
    #[arg(long, value_name = "NAME")]
    pub runner: Option<String>,
    /// Only jobs of this project (its path, e.g. grp/app, or its id).
    #[arg(long, value_name = "PATH|ID")]
    pub project: Option<String>,
    /// Only jobs in this state: running, success, failed, canceled, or lost (marked running, but the process
    /// that ran it is gone and no service has finalised it yet).
    #[arg(long, value_parser = ["running", "success", "failed", "canceled", "lost"])]
    pub status: Option<String>,
    /// Only jobs received since then: a duration back from now (30m, 2h, 7d) or a date (2026-11-28,
    /// 2026-11-28T12:00:00Z).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many jobs (the newest).
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON array on stdout: every field of the journal's metadata, plus `status`, `duration_ms`,
    /// `queue_ms`, `received_at` (RFC 3339) and `trace_path`.
    #[arg(long)]
    pub json: bool,
}

fn table(entries: &[JobEntry]) -> String {
    let header = [
        "JOB", "STATUS", "RUNNER", "PROJECT", "REF", "NAME", "RECEIVED", "QUEUE", "DURATION",
        "EXIT", "REASON",
    ];
    // Names, refs and paths come from GitLab: their control characters are shown, not obeyed (issue 17 item 8).
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let m = &e.meta;
            let row = vec![
                m.job_id.to_string(),
                shown_status(e).to_string(),
                if m.local {
                    format!("{} (local)", m.runner.name)
                } else {
                    m.runner.name.clone()
                },
                if m.project_path.is_empty() {
                    m.project_id.to_string()
                } else {
                    m.project_path.clone()
                },
                m.git_ref.clone(),
                m.job_name.clone(),
                format_ms(m.received_at_ms),
                format_duration(m.queue_ms()),
                format_duration(m.duration_ms()),
                m.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                m.failure_reason.clone().unwrap_or_default(),
            ];
            row.into_iter()
                .map(|c| runwright_trace::ansi::escape_controls(&c).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let journal = args.journal.open()?;
    let filter = JobFilter {
        runner: args.runner.clone(),
        project: args.project.clone(),
        status: args.status.clone(),
        since: args.since.clone(),
        limit: args.limit,
    };
    let entries = filter.apply(journal.list()?)?;
    let text = if args.json {
        let values = entries
            .iter()
            .map(json_of)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let json = serde_json::to_string_pretty(&values).context("serialising the history")?;
        runwright_trace::ansi::escape_json_controls(&json).into_owned() + "\n"
    } else if entries.is_empty() {
        String::new()
    } else {
        table(&entries)
    };
    write_stdout(text.as_bytes())?;
    if !args.json && entries.is_empty() {
        eprintln!("no jobs in {} match", journal.dir().display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout. A closed pipe (`| head`) is returned like any error, so the verb stops there; `main` ends
/// quietly with 0 on it (`diagnostics::report`).
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}
