//! `runwright history`: the jobs in the job journal (issue 6), newest last, filtered by runner, project, status
//! and age; a table for people, `--json` for scripts. Also where both `history` and `logs` find the journal.

use anyhow::Context;
use clap::Args;
use runwright_journal::{JobEntry, JobStatus, Journal};
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
            crate::journal::local_dir()
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
            match crate::journal::service_settings(&loaded.config, &path) {
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

/// A job's state as shown: `lost` when it is marked running but the process that ran it is gone.
pub fn shown_status(e: &JobEntry) -> &'static str {
    if e.meta.state == JobStatus::Running && !pid_alive(e.meta.service_pid) {
        "lost"
    } else {
        e.meta.state.as_str()
    }
}

fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Unix milliseconds for `--since`.
fn parse_since(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Some(ms) = parse_ago(s) {
        return Ok(now_ms.saturating_sub(ms));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    anyhow::bail!(
        "--since {s:?}: expected a duration (30m, 2h, 7d) or a date (2026-11-28 or 2026-11-28T12:00:00Z)"
    )
}

/// `90s`, `30m`, `2h`, `7d`, `2w` in milliseconds.
fn parse_ago(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].trim().parse().ok()?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    (n >= 0).then(|| n.saturating_mul(ms))
}

/// `2026-11-28 12:30:05Z` (UTC).
pub fn format_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "-".into())
}

fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// `1m05s`, `2.3s`, `-`.
pub fn format_duration(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|m| *m >= 0) else {
        return "-".into();
    };
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

pub fn runner_matches(e: &JobEntry, runner: &str) -> bool {
    e.meta.runner.name == runner || e.meta.runner.short_token == runner
}

/// Which jobs to show: `runwright history`'s filters, shared with the dashboard's `/api/v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub runner: Option<String>,
    pub project: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl JobFilter {
    /// The matching entries (oldest first), at most `limit` of the newest.
    pub fn apply(&self, entries: Vec<JobEntry>) -> anyhow::Result<Vec<JobEntry>> {
        let since = self
            .since
            .as_deref()
            .map(|s| parse_since(s, runwright_journal::now_ms()))
            .transpose()?;
        let mut out: Vec<JobEntry> = entries
            .into_iter()
            .filter(|e| self.runner.as_deref().is_none_or(|r| runner_matches(e, r)))
            .filter(|e| {
                self.project
                    .as_deref()
                    .is_none_or(|p| e.meta.project_path == p || e.meta.project_id.to_string() == p)
            })
            .filter(|e| self.status.as_deref().is_none_or(|s| shown_status(e) == s))
            .filter(|e| since.is_none_or(|t| e.meta.received_at_ms >= t))
            .collect();
        if let Some(n) = self.limit {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        Ok(out)
    }
}

/// A job as `--json` and the dashboard's API show it.
pub fn json_of(e: &JobEntry) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(&e.meta).context("serialising job metadata")?;
    if let Some(o) = v.as_object_mut() {
        o.insert("key".into(), e.name().into());
        o.insert("status".into(), shown_status(e).into());
        o.insert("duration_ms".into(), e.meta.duration_ms().into());
        o.insert("queue_ms".into(), e.meta.queue_ms().into());
        o.insert("received_at".into(), rfc3339(e.meta.received_at_ms).into());
        o.insert(
            "finished_at".into(),
            e.meta.finished_at_ms.and_then(rfc3339).into(),
        );
        o.insert(
            "trace_path".into(),
            e.trace_path().to_string_lossy().into_owned().into(),
        );
    }
    Ok(v)
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

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_dates() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("2h", now).ok(), Some(now - 7_200_000));
        assert_eq!(parse_since("7d", now).ok(), Some(now - 7 * 86_400_000));
        assert_eq!(parse_since("2026-11-28", now).ok(), Some(1_795_824_000_000));
        assert_eq!(
            parse_since("2026-11-28T12:00:00Z", now).ok(),
            Some(1_795_867_200_000)
        );
        let err = parse_since("yesterday", now).expect_err("rejected");
        assert!(err.to_string().contains("expected a duration"), "{err}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Some(2_345)), "2.3s");
        assert_eq!(format_duration(Some(65_000)), "1m05s");
        assert_eq!(format_duration(Some(3_725_000)), "1h02m");
        assert_eq!(format_duration(None), "-");
    }
}
