//! Flag groups several verbs share, named and typed as gitlab-runner's (commands/helpers/*.go; go-flags
//! `long:"…" env:"…"` tags become clap's `long` and `env`), and Go's duration syntax.

use clap::Args;
use runwright_static::env_vars as ev;
use std::path::PathBuf;
use std::time::Duration;

/// `common.JobCredentials` (runner common/network.go): who the artifact verbs talk to, as whom.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCredentials {
    /// The build ID to download and upload artifacts for.
    #[arg(long = "id", env = ev::CI_JOB_ID, default_value_t = 0)]
    pub id: i64,
    /// Build token (read it from CI_JOB_TOKEN: a command line is visible to every user of the host).
    #[arg(long = "token", env = ev::CI_JOB_TOKEN, hide_env_values = true, default_value = "")]
    pub token: String,
    /// GitLab CI URL.
    #[arg(long = "url", env = ev::CI_SERVER_URL, default_value = "")]
    pub url: String,
    /// File containing the certificates to verify the peer when using HTTPS.
    #[arg(long = "tls-ca-file", env = ev::CI_SERVER_TLS_CA_FILE)]
    pub tls_ca_file: Option<PathBuf>,
    /// File containing certificate for TLS client auth with runner when using HTTPS.
    #[arg(long = "tls-cert-file", env = ev::CI_SERVER_TLS_CERT_FILE)]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing private key for TLS client auth with runner when using HTTPS.
    #[arg(long = "tls-key-file", env = ev::CI_SERVER_TLS_KEY_FILE)]
    pub tls_key_file: Option<PathBuf>,
}

/// `retryHelper` (runner commands/helpers/retry_helper.go): tries after the first, and the wait between.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// How many times to retry upload.
    #[arg(long = "retry", default_value_t = 2)]
    pub retry: u32,
    /// How long to wait between retries (Go duration, e.g. 1s).
    #[arg(long = "retry-time", default_value = "1s", value_parser = go_duration)]
    pub retry_time: Duration,
}

impl Default for Retry {
    /// The helpers' defaults (`Retry: 2, RetryTime: time.Second`).
    fn default() -> Self {
        Retry {
            retry: 2,
            retry_time: Duration::from_secs(1),
        }
    }
}

/// `meter.TransferMeterCommand`: accepted; runwright's helper draws no transfer meter.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Meter {
    /// If set to more than 0s it enables an interactive transfer meter (accepted, not implemented).
    #[arg(long = "transfer-meter-frequency", env = ev::TRANSFER_METER_FREQUENCY, value_parser = go_duration)]
    pub transfer_meter_frequency: Option<Duration>,
}

/// `fileArchiver` (runner commands/helpers/file_archiver.go): what goes into an archive.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct FileArchiver {
    /// Add paths to archive.
    #[arg(long = "path", value_name = "PATH", allow_hyphen_values = true)]
    pub paths: Vec<String>,
    /// Exclude paths from the archive.
    #[arg(long = "exclude", value_name = "PATH", allow_hyphen_values = true)]
    pub exclude: Vec<String>,
    /// Add git untracked files.
    #[arg(long = "untracked")]
    pub untracked: bool,
    /// Detailed information.
    #[arg(long = "verbose")]
    pub verbose: bool,
}

/// runwright's own bound on one archive (the runner passes its `max_archive_files`).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most files, directories and symlinks one archive may hold, created or extracted (0: no bound).
    #[arg(long = "max-archive-files", env = ev::RUNWRIGHT_MAX_ARCHIVE_FILES, default_value_t = 0)]
    pub max_archive_files: usize,
}

impl Limits {
    pub fn max_files(&self) -> Option<usize> {
        (self.max_archive_files > 0).then_some(self.max_archive_files)
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), optionally signed; `0` alone needs no unit. Negative durations are refused (no verb takes one).
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (Go syntax: 1h0m0s, 10m, 1.5s, 500ms)");
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Go's `String()` of a duration, for messages (`1h0m0s`, `10m0s`, `1.5s`).
pub fn go_duration_string(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        format!("{s}")
    } else {
        format!("{}", s as f64 + f64::from(frac) / 1e9)
    };
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(go_duration("10m0s"), Ok(Duration::from_secs(600)));
        assert_eq!(go_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("10").is_err());
        assert!(go_duration("-1s").is_err());
        assert!(go_duration("1x").is_err());
        assert!(go_duration("").is_err());
        assert_eq!(go_duration_string(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration_string(Duration::from_secs(600)), "10m0s");
    }
}
