//! The journal's jobs as they are shown: a job's state (`lost` for a dead service's running job), times and
//! durations, the filters of `runwright history` and the JSON of `history --json`, shared with the dashboard's
//! API (`/api/v1/jobs`).

use anyhow::Context;
use runwright_journal::{JobEntry, JobStatus};

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
fn parse_since(s: &str, now_ms: i64) -> Result<i64, crate::ServiceError> {
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
    Err(crate::ServiceError::Filter(format!(
        "--since {s:?}: expected a duration (30m, 2h, 7d) or a date (2026-11-28 or 2026-11-28T12:00:00Z)"
    )))
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
    pub fn apply(&self, entries: Vec<JobEntry>) -> Result<Vec<JobEntry>, crate::ServiceError> {
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
