//! `runwright volumes list|prune`: the runner-managed Docker volumes (caches, builds dirs, left-over temporary
//! ones) with the runner, project and slot they belong to, their size and when a job last used them — and
//! deleting them by runner, project or age, which build hosts otherwise do with `docker volume ls` scripts.

use crate::args::ConfigArg;
use crate::cache_cmd::{age, human_size, parse_age, print_columns};
use anyhow::Context;
use clap::{Args, Subcommand};
use runwright_docker::admin::{self, Filter, VolumeInfo};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Subcommand, Debug)]
pub enum VolumesCommand {
    /// List runner-managed volumes: volume, runner, project, slot, size, mountpoint, last used.
    List(ListArgs),
    /// Delete runner-managed volumes selected by runner, project or age (never a volume a container uses).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct Select {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this runner's volumes (its `name` in config.toml); repeatable.
    #[arg(long = "runner", value_name = "NAME")]
    pub runners: Vec<String>,
    /// Only this project's volumes (GitLab project id).
    #[arg(long)]
    pub project: Option<i64>,
    /// Only volumes no job used for longer than this (Go duration: 72h, 30m; or 7d).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// The Docker daemon (default: DOCKER_HOST, else the local socket).
    #[arg(long, short = 'H')]
    pub host: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: Select,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub select: Select,
    /// Needed to delete every runner-managed volume when no other filter is given.
    #[arg(long)]
    pub all: bool,
    /// Say what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(cmd: VolumesCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            VolumesCommand::List(a) => list(a).await,
            VolumesCommand::Prune(a) => prune(a).await,
        }
    })
}

/// The filters, with runner names turned into short tokens through config.toml.
fn filters(s: &Select) -> anyhow::Result<Vec<Filter>> {
    let older_than = s.older_than.as_deref().map(parse_age).transpose()?;
    let base = Filter {
        runner: None,
        project: s.project,
        older_than,
    };
    if s.runners.is_empty() {
        return Ok(vec![base]);
    }
    let path = s.config.path();
    let loaded = runwright_config::load(&path)?;
    s.runners
        .iter()
        .map(|name| {
            let r = loaded
                .config
                .runners
                .iter()
                .find(|r| &r.name == name)
                .with_context(|| format!("no runner named {name:?} in {}", path.display()))?;
            Ok(Filter {
                runner: Some(r.short_token()),
                ..base.clone()
            })
        })
        .collect()
}

async fn select(
    s: &Select,
) -> anyhow::Result<(runwright_docker::bollard::Docker, Vec<VolumeInfo>)> {
    // The typed error reaches the renderer, which prints its hint (`is dockerd running?`) on a line of its own.
    let docker = runwright_docker::connect(s.host.as_deref(), None, false).await?;
    let mut out: Vec<VolumeInfo> = Vec::new();
    for f in filters(s)? {
        for v in admin::list(&docker, &f).await? {
            if !out.iter().any(|o| o.name == v.name) {
                out.push(v);
            }
        }
    }
    Ok((docker, out))
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let (_, volumes) = select(&a.select).await?;
    if a.select.json {
        crate::history_cmd::write_stdout(
            format!("{}\n", serde_json::to_string_pretty(&volumes)?).as_bytes(),
        )?;
    } else {
        print_table(&volumes)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let s = &a.select;
    if s.runners.is_empty() && s.project.is_none() && s.older_than.is_none() && !a.all {
        return Err(crate::diagnostics::UsageError(
            "volumes prune needs a filter (--runner, --project, --older-than) or --all".into(),
        )
        .into());
    }
    let (docker, volumes) = select(s).await?;
    let mut done = Vec::new();
    let mut failed = 0;
    for v in volumes {
        let r = if a.dry_run {
            Ok(())
        } else {
            admin::remove(&docker, &v.name).await
        };
        if let Err(e) = &r {
            failed += 1;
            eprintln!("ERROR: volume {}: {}", v.name, e.with_hint());
        }
        done.push((v, r.is_ok()));
    }
    let removed: Vec<&VolumeInfo> = done.iter().filter(|(_, ok)| *ok).map(|(v, _)| v).collect();
    if s.json {
        crate::history_cmd::write_stdout(
            format!("{}\n", serde_json::to_string_pretty(&removed)?).as_bytes(),
        )?;
    } else {
        let owned: Vec<VolumeInfo> = removed.iter().map(|v| (*v).clone()).collect();
        print_table(&owned)?;
        let bytes: u64 = owned.iter().filter_map(|v| v.size_bytes).sum();
        crate::history_cmd::write_stdout(
            format!(
                "{} {} volume(s), {}\n",
                if a.dry_run { "would delete" } else { "deleted" },
                owned.len(),
                human_size(bytes)
            )
            .as_bytes(),
        )?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(volumes: &[VolumeInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.runner.clone(),
                v.project
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                v.slot.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                v.destination.clone(),
                v.size_bytes.map(human_size).unwrap_or_else(|| "?".into()),
                v.last_used
                    .map(|t| age(SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64)))
                    .unwrap_or_else(|| "?".into()),
                v.mountpoint.clone(),
            ]
        })
        .collect();
    print_columns(
        &[
            "VOLUME",
            "RUNNER",
            "PROJECT",
            "SLOT",
            "FOR",
            "SIZE",
            "LAST USED",
            "MOUNTPOINT",
        ],
        &rows,
        &[5],
    )
}
