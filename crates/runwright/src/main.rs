//! `runwright`: a GitLab-compatible CI runner. The binary is glue: argument parsing, logging, and the operating
//! verbs; the service is `runwright-service`, `exec` and `lint` are `runwright-exec`.
// The workspace denies printing. Standard output is the verbs' answers: the modules that give them allow it;
// warnings and errors go to standard error from anywhere in the binary.
#![allow(clippy::print_stderr)]

mod args;
mod cache_cmd;
mod cli;
mod diagnostics;
mod helper_image_cmd;
mod history_cmd;
mod list;
mod logging;
mod logs_cmd;
mod ops;
mod volumes_cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    if cli::invoked_as_helper() || cli::helper_verb_invoked() {
        return cli::run_helper();
    }
    let cli = cli::parse_as_invoked();
    let gitlab_runner_codes = diagnostics::keeps_gitlab_runner_codes(&cli.command);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => diagnostics::report(&err, gitlab_runner_codes),
    }
}
