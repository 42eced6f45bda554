//! The operating verbs of GitLab's runner (reference `protocol.md` §1, §9): registration and tokens
//! (`register`, `unregister`, `verify`, `reset-token`), `status`, the systemd unit (`install`, `uninstall`,
//! `start`, `stop`, `restart`) and `config check`. Each verb reads `config.toml` through `runwright-config`
//! and writes it only through `runwright_config::edit` (comments and order kept, atomic, mode 0600). A failure is one
//! line saying what failed and what to do; the config stays untouched.

pub mod config_check;
pub mod register;
pub mod service_unit;
pub mod status;
pub mod tokens;

use anyhow::anyhow;
use runwright_config::RunnerConfig;
pub use runwright_service::gitlab::{
    client, failed, fmt_time, hint, info, info_for, now, parse_expiry,
};

/// A current-thread runtime for the verbs' few HTTP calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}

/// Which entries a verb acts on: `--all-runners` (or nothing given, when `default_all`), `--name`, or
/// `--url` plus `--token`/`--id`.
pub struct Selection<'a> {
    pub name: Option<&'a str>,
    pub url: Option<&'a str>,
    pub token: Option<&'a str>,
    pub id: Option<i64>,
    pub all: bool,
}

impl Selection<'_> {
    pub fn pick(&self, runners: &[RunnerConfig], default_all: bool) -> Vec<usize> {
        let nothing =
            self.name.is_none() && self.url.is_none() && self.token.is_none() && self.id.is_none();
        if self.all || (nothing && default_all) {
            return (0..runners.len()).collect();
        }
        if nothing {
            return Vec::new();
        }
        let same_url = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        runners
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                self.name.is_none_or(|n| r.name == n)
                    && self.url.is_none_or(|u| same_url(&r.url, u))
                    && self.token.is_none_or(|t| r.token == t)
                    && self.id.is_none_or(|i| r.id == i)
            })
            .map(|(i, _)| i)
            .collect()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.name {
            parts.push(format!("name {n:?}"));
        }
        if let Some(u) = self.url {
            parts.push(format!("url {u}"));
        }
        if let Some(t) = self.token {
            parts.push(format!("token {}", runwright_config::short_token(t)));
        }
        if let Some(i) = self.id {
            parts.push(format!("id {i}"));
        }
        parts.join(", ")
    }
}

/// Loads the config for a verb that needs it to exist, as one line on failure; its warnings go to stderr. The
/// caller shows the invalid `[[runners]]` entries.
pub fn load_config_full(path: &std::path::Path) -> anyhow::Result<runwright_config::LoadedConfig> {
    // The typed error reaches the renderer: its hint, and the exit class of a configuration error.
    let loaded = runwright_config::load(path)?;
    for w in &loaded.warnings {
        eprintln!(
            "WARNING: {}",
            runwright_trace::ansi::escape_controls(&w.to_string())
        );
    }
    Ok(loaded)
}

/// [`load_config_full`] for a verb that acts on valid entries only: each invalid entry is said on stderr (the
/// verb cannot select it).
pub fn load_config(path: &std::path::Path) -> anyhow::Result<runwright_config::Config> {
    let loaded = load_config_full(path)?;
    for r in &loaded.invalid_runners {
        eprintln!(
            "ERROR: {}",
            runwright_trace::ansi::escape_controls(&r.to_string())
        );
    }
    Ok(loaded.config)
}

/// The file positions of the `valid` loaded entries, given the positions of the invalid ones (both in file
/// order, together `0..valid + invalid.len()`).
pub fn valid_positions(valid: usize, invalid: &[runwright_config::InvalidRunner]) -> Vec<usize> {
    let skipped: std::collections::BTreeSet<usize> = invalid.iter().map(|r| r.index).collect();
    (0..valid + invalid.len())
        .filter(|i| !skipped.contains(i))
        .collect()
}

/// Writes `text` and a newline to stdout (the one place the verbs print there: `--json`). A closed pipe ends
/// the verb, quietly (`diagnostics::report`). The C1 controls JSON leaves raw are escaped: a terminal does not
/// obey them (issue 17 item 8).
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let text = format!("{}\n", runwright_trace::ansi::escape_json_controls(text));
    crate::history_cmd::write_stdout(text.as_bytes())
}
