//! `runwright list`: GitLab's lines (name padded to 50 columns, then `Executor=… Token=… URL=…`) on stderr.
//! Tokens are shortened: a listing is often pasted into tickets.

use crate::cli::ConfigArg;
use std::process::ExitCode;

pub fn run(args: &ConfigArg) -> anyhow::Result<ExitCode> {
    let path = args.path();
    let loaded = runwright_config::load(&path)?;
    for w in &loaded.warnings {
        eprintln!("WARNING: {w}");
    }
    eprintln!(
        "{:<50} ConfigFile={}",
        "Listing configured runners",
        path.display()
    );
    for r in &loaded.config.runners {
        eprintln!(
            "{:<50}  Executor={} Token={} URL={}",
            r.name,
            r.executor,
            runwright_config::short_token(&r.token),
            r.url
        );
    }
    Ok(ExitCode::SUCCESS)
}
