//! `runwright`: a GitLab-compatible CI runner. The binary is glue: argument parsing, logging, and the verbs.
// The workspace denies printing. Standard output is the verbs' answers: the modules that give them allow it;
// warnings and errors go to standard error from anywhere in the binary.
#![allow(clippy::print_stderr)]

mod cache_cmd;
mod cli;
mod config_edit;
mod dashboard;
mod exec;
mod history_cmd;
mod identity;
mod journal;
mod lint;
mod list;
mod logging;
mod logs_cmd;
mod metrics;
mod ops;
mod service;
mod volumes_cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // One place renders every error: the chain, most specific cause last. Errors carry texts from GitLab
            // and config files: their control characters are shown, not obeyed (issue 17 item 8).
            let mut msg = format!("error: {err}");
            for cause in err.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!(
                "{}",
                runwright_trace::ansi::escape_controls_keep_lines(&msg)
            );
            ExitCode::from(1)
        }
    }
}
