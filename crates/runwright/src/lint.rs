//! `runwright lint`: validates a `.gitlab-ci.yml` and prints the fully resolved configuration.

use crate::cli::LintArgs;
use std::process::ExitCode;

pub fn run(_args: &LintArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("runwright lint is not implemented yet")
}
