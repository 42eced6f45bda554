//! `unregister`, `verify` and `reset-token` (reference `protocol.md` §1.4–§1.6; runner commands/unregister.go,
//! verify.go, reset_token.go). The reset itself is `runwright_service::rotation`, which the service's automatic
//! rotation uses too.

use super::register::system_id_for;
use super::{client, failed, info_for, load_config, runtime, Selection};
use crate::args::ConfigArg;
use anyhow::{anyhow, bail};
use clap::Args;
use runwright_config::edit::{check_writable, ConfigDoc};
use runwright_config::{short_token, RunnerConfig};
use runwright_service::rotation::rotate;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct UnregisterArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The runner entry's name.
    #[arg(short = 'n', long, env = runwright_static::env_vars::RUNNER_NAME)]
    pub name: Option<String>,
    /// GitLab URL (with --token).
    #[arg(short = 'u', long, env = runwright_static::env_vars::CI_SERVER_URL)]
    pub url: Option<String>,
    /// The runner's token (with --url).
    #[arg(short = 't', long, env = runwright_static::env_vars::CI_SERVER_TOKEN)]
    pub token: Option<String>,
    /// Unregister every runner of the config.
    #[arg(long)]
    pub all_runners: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only the entry with this name.
    #[arg(short = 'n', long, env = runwright_static::env_vars::RUNNER_NAME)]
    pub name: Option<String>,
    /// Only entries of this GitLab URL.
    #[arg(short = 'u', long, env = runwright_static::env_vars::CI_SERVER_URL)]
    pub url: Option<String>,
    /// Only the entry with this token.
    #[arg(short = 't', long, env = runwright_static::env_vars::CI_SERVER_TOKEN)]
    pub token: Option<String>,
    /// Remove entries whose token GitLab no longer accepts (403) from config.toml.
    #[arg(long)]
    pub delete: bool,
}

#[derive(Args, Debug)]
pub struct ResetTokenArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The runner entry's name.
    #[arg(short = 'n', long, env = runwright_static::env_vars::RUNNER_NAME)]
    pub name: Option<String>,
    /// GitLab URL (with --id).
    #[arg(short = 'u', long, env = runwright_static::env_vars::CI_SERVER_URL)]
    pub url: Option<String>,
    /// The runner's id (with --url).
    #[arg(short = 'i', long, env = runwright_static::env_vars::RUNNER_ID)]
    pub id: Option<i64>,
    /// Reset the tokens of every runner of the config.
    #[arg(long)]
    pub all_runners: bool,
    /// Reset with an access token (PRIVATE-TOKEN, scope manage_runner or api) instead of the current runner
    /// token: works when the current token has already expired.
    #[arg(long, env = runwright_static::env_vars::GITLAB_TOKEN, hide_env_values = true)]
    pub pat: Option<String>,
}

pub fn unregister(args: UnregisterArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let sel = Selection {
        name: args.name.as_deref(),
        url: args.url.as_deref(),
        token: args.token.as_deref(),
        id: None,
        all: args.all_runners,
    };
    if !args.all_runners && args.name.is_none() && (args.url.is_none() || args.token.is_none()) {
        bail!("unregister: say which runner: --name NAME, --url URL with --token TOKEN, or --all-runners");
    }
    let config = if path.exists() || args.name.is_some() || args.all_runners {
        Some(load_config(&path)?)
    } else {
        None
    };
    let runners = config
        .as_ref()
        .map(|c| c.runners.clone())
        .unwrap_or_default();
    let mut picked = sel.pick(&runners, false);
    // `--url --token` of a runner that is not in the config: GitLab's runner unregisters it all the same.
    let outside = picked.is_empty() && args.url.is_some() && args.token.is_some();
    if picked.is_empty() && !outside {
        if args.all_runners {
            eprintln!("No runners in {}: nothing to unregister", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "unregister: no runner with {} in {}; `runwright list` shows the configured runners",
            sel.describe(),
            path.display()
        );
    }
    if !outside {
        check_writable(&path)?;
    }
    let rt = runtime()?;
    let system_id = system_id_for(&path);
    let mut targets: Vec<(Option<usize>, RunnerConfig)> = picked
        .drain(..)
        .map(|i| (Some(i), runners[i].clone()))
        .collect();
    if outside {
        targets.push((
            None,
            RunnerConfig {
                url: args.url.clone().unwrap_or_default(),
                token: args.token.clone().unwrap_or_default(),
                ..Default::default()
            },
        ));
    }
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for (index, r) in &targets {
        let client = client(&r.url, Some(r))?;
        let call = if r.is_created_runner_token() {
            rt.block_on(client.unregister_runner_manager(&r.token, &system_id))
        } else {
            rt.block_on(client.unregister_runner(&r.token))
        };
        match call {
            Ok(()) => {
                eprintln!(
                    "{:<50} runner={}",
                    "Unregistering runner from GitLab succeeded",
                    short_token(&r.token)
                );
                if let Some(i) = index {
                    removed.push(*i);
                }
            }
            Err(e) => {
                let what = format!(
                    "unregistering runner {:?} ({})",
                    r.name,
                    short_token(&r.token)
                );
                let mut msg = failed(&what, &e, &r.url).to_string();
                if e.status == Some(403) {
                    msg.push_str("; to drop the entry anyway: runwright verify --delete");
                }
                errors.push(msg);
            }
        }
    }
    if !removed.is_empty() {
        let mut doc = ConfigDoc::open(&path, false)?;
        remove_entries(&mut doc, removed.iter().map(|&i| runners[i].token.as_str()));
        doc.save()?;
        eprintln!("Updated {}", path.display());
    }
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow!("{}", errors.join("\nerror: ")))
    }
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let config = load_config(&path)?;
    let sel = Selection {
        name: args.name.as_deref(),
        url: args.url.as_deref(),
        token: args.token.as_deref(),
        id: None,
        all: false,
    };
    let picked = sel.pick(&config.runners, true);
    if picked.is_empty() {
        bail!(
            "verify: no runner with {} in {}; `runwright list` shows the configured runners",
            sel.describe(),
            path.display()
        );
    }
    if args.delete {
        check_writable(&path)?;
    }
    let rt = runtime()?;
    let system_id = system_id_for(&path);
    let mut invalid = Vec::new();
    let mut failed_any = false;
    for &i in &picked {
        let r = &config.runners[i];
        let client = client(&r.url, Some(r))?;
        match rt.block_on(client.verify_runner(&r.token, &system_id, &info_for(r))) {
            Ok(_) => eprintln!(
                "{:<50} runner={}",
                "Verifying runner... is valid",
                short_token(&r.token)
            ),
            Err(e) if e.status == Some(403) => {
                eprintln!(
                    "{:<50} runner={}",
                    "Verifying runner... is removed",
                    short_token(&r.token)
                );
                invalid.push(i);
            }
            Err(e) => {
                failed_any = true;
                eprintln!(
                    "ERROR: {}",
                    failed(
                        &format!("verifying runner {:?} ({})", r.name, short_token(&r.token)),
                        &e,
                        &r.url
                    )
                );
            }
        }
    }
    if args.delete && !invalid.is_empty() {
        let mut doc = ConfigDoc::open(&path, false)?;
        remove_entries(
            &mut doc,
            invalid.iter().map(|&i| config.runners[i].token.as_str()),
        );
        doc.save()?;
        eprintln!("Updated {}", path.display());
        invalid.clear();
    }
    if !invalid.is_empty() {
        let names: Vec<String> = invalid
            .iter()
            .map(|&i| format!("{:?}", config.runners[i].name))
            .collect();
        bail!(
            "verify: GitLab no longer accepts the token of {}: register again, or remove the entries with --delete",
            names.join(", ")
        );
    }
    Ok(if failed_any {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn reset_token(args: ResetTokenArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let config = load_config(&path)?;
    let sel = Selection {
        name: args.name.as_deref(),
        url: args.url.as_deref(),
        token: None,
        id: args.id,
        all: args.all_runners,
    };
    if !args.all_runners && args.name.is_none() && args.id.is_none() {
        bail!(
            "reset-token: say which runner: --name NAME, --url URL with --id ID, or --all-runners"
        );
    }
    let picked = sel.pick(&config.runners, false);
    if picked.is_empty() {
        bail!(
            "reset-token: no runner with {} in {}; `runwright list` shows the configured runners",
            sel.describe(),
            path.display()
        );
    }
    check_writable(&path)?;
    let rt = runtime()?;
    let mut errors = Vec::new();
    for &i in &picked {
        let r = &config.runners[i];
        match rt.block_on(rotate(&path, r, args.pat.as_deref())) {
            Ok(expires) => eprintln!(
                "{:<50} runner={} token_expires_at={}",
                "Resetting runner token... succeeded",
                short_token(&r.token),
                expires
                    .map(super::fmt_time)
                    .unwrap_or_else(|| "never".into())
            ),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow!("{}", errors.join("\nerror: ")))
    }
}

/// Removes the entries holding `tokens` from the file. By token, not by position: the positions of the loaded
/// runners leave out invalid entries, which stay in the file.
fn remove_entries<'a>(doc: &mut ConfigDoc, tokens: impl Iterator<Item = &'a str>) {
    for token in tokens {
        if let Some(i) = doc.runner_index_by_token(token) {
            doc.remove_runner(i);
        }
    }
}
