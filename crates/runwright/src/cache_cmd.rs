//! `runwright cache list` and `runwright cache clear`: the caches every configured runner holds, locally
//! and on S3, and deleting them for real — GitLab's "Clear runner caches" only bumps a key suffix and leaves
//! the old archives where they are.

use crate::args::ConfigArg;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use runwright_cache::admin::{self, CacheEntry, Filter, Location, RunnerCaches};
use runwright_cache::local::LocalCache;
use runwright_cache::s3::S3Cache;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List cached archives: runner, where, project, key, size, last used.
    List(ListArgs),
    /// Delete cached archives (locally and on S3) selected by project, key, key prefix or age.
    Clear(ClearArgs),
}

#[derive(Args, Debug)]
pub struct Source {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these runners (by `name`); repeatable.
    #[arg(long = "runner", value_name = "NAME")]
    pub runners: Vec<String>,
    /// The service's working directory: relative `cache_dir`s and the shell executor's default
    /// (`<working dir>/cache`) are resolved against it (default: the current directory).
    #[arg(short = 'd', long)]
    pub working_directory: Option<PathBuf>,
    /// Look only at this cache directory (e.g. `runwright exec`'s), without reading config.toml.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["runners"])]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: Source,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ClearArgs {
    #[command(flatten)]
    pub source: Source,
    /// Only this project: its path (`group/project`) locally, its id on S3.
    #[arg(long)]
    pub project: Option<String>,
    /// Only this exact key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only keys starting with this.
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Only archives last written longer ago than this (Go duration: 72h, 30m; or 7d).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Needed to delete every cache when no other filter is given.
    #[arg(long)]
    pub all: bool,
    /// Say what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            CacheCommand::List(a) => list(a).await,
            CacheCommand::Clear(a) => clear(a).await,
        }
    })
}

/// The runners' caches as configured (or the one directory asked for).
fn sources(src: &Source) -> anyhow::Result<Vec<RunnerCaches>> {
    if let Some(dir) = &src.cache_dir {
        return Ok(vec![RunnerCaches {
            name: "-".into(),
            local: Some(LocalCache::new(std::path::absolute(dir)?)),
            s3: None,
        }]);
    }
    let path = src.config.path();
    let loaded = runwright_config::load(&path)?;
    for w in &loaded.warnings {
        eprintln!("WARNING: {w}");
    }
    for r in &loaded.invalid_runners {
        eprintln!("WARNING: {r}; its caches are not included");
    }
    let wd = match &src.working_directory {
        Some(d) => std::path::absolute(d)?,
        None => std::env::current_dir().context("reading the working directory")?,
    };
    for name in &src.runners {
        if !loaded.config.runners.iter().any(|r| &r.name == name) {
            bail!("no runner named {name:?} in {}", path.display());
        }
    }
    let mut out = Vec::new();
    for r in &loaded.config.runners {
        if !src.runners.is_empty() && !src.runners.contains(&r.name) {
            continue;
        }
        // Docker runners keep their local caches in volumes (`/cache` inside containers), not on a host path.
        let local = (r.executor != "docker").then(|| {
            let dir = r
                .cache_dir
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| wd.join(d))
                .unwrap_or_else(|| wd.join("cache"));
            LocalCache::new(dir)
        });
        let s3 = match &r.cache {
            Some(cfg) => S3Cache::new(cfg, &r.short_token())
                .with_context(|| format!("[runners.cache] of runner {:?}", r.name))?,
            None => None,
        };
        out.push(RunnerCaches {
            name: r.name.clone(),
            local,
            s3,
        });
    }
    Ok(out)
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let runners = sources(&a.source)?;
    let entries = admin::list(&runners).await?;
    if a.json {
        crate::history_cmd::write_stdout(
            format!("{}\n", serde_json::to_string_pretty(&entries)?).as_bytes(),
        )?;
    } else {
        print_table(&entries)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn clear(a: ClearArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        project: a.project.clone(),
        key: a.key.clone(),
        key_prefix: a.key_prefix.clone(),
        older_than: a.older_than.as_deref().map(parse_age).transpose()?,
    };
    if filter == Filter::default() && !a.all {
        bail!("cache clear needs a filter (--project, --key, --key-prefix, --older-than) or --all");
    }
    let runners = sources(&a.source)?;
    let entries = admin::list(&runners).await?;
    let done = admin::clear(&entries, &filter, a.dry_run).await?;
    if a.json {
        crate::history_cmd::write_stdout(
            format!("{}\n", serde_json::to_string_pretty(&done)?).as_bytes(),
        )?;
    } else {
        print_table(&done)?;
        let bytes: u64 = done.iter().map(|e| e.size).sum();
        crate::history_cmd::write_stdout(
            format!(
                "{} {} cache archive(s), {}\n",
                if a.dry_run { "would delete" } else { "deleted" },
                done.len(),
                human_size(bytes)
            )
            .as_bytes(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Go durations (`72h`, `90m`) plus whole days (`7d`), which cache ages are usually thought in.
pub(crate) fn parse_age(s: &str) -> anyhow::Result<Duration> {
    if let Some(days) = s.strip_suffix('d') {
        if let Ok(n) = days.trim().parse::<u64>() {
            return Ok(Duration::from_secs(n * 86_400));
        }
    }
    runwright_config::parse_go_duration(s)
        .map_err(|_| anyhow::anyhow!("--older-than {s:?}: use a duration like 72h, 90m or 7d"))
}

pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn age(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn print_table(entries: &[CacheEntry]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.runner.clone(),
                match &e.location {
                    Location::Local { .. } => "local".to_string(),
                    Location::S3 { bucket, .. } => format!("s3://{bucket}"),
                },
                e.project.clone(),
                e.key.clone(),
                human_size(e.size),
                age(e.last_used),
            ]
        })
        .collect();
    print_columns(
        &["RUNNER", "WHERE", "PROJECT", "KEY", "SIZE", "LAST USED"],
        &rows,
        &[4],
    )
}

/// A table on stdout: columns padded to their widest cell, the `right` ones right-aligned.
pub(crate) fn print_columns(
    header: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut table = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            let w = *w;
            if right.contains(&i) {
                s.push_str(&format!("{c:>w$}  "));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        table.push_str(s.trim_end());
        table.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    crate::history_cmd::write_stdout(table.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes() {
        assert_eq!(parse_age("7d").ok(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90m").ok(), Some(Duration::from_secs(5400)));
        assert!(parse_age("soon").is_err());
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
