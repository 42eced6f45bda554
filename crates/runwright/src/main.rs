//! `runwright`: a GitLab-compatible CI runner. The binary is glue: argument parsing, logging, and the operating
//! verbs; the service is `runwright-service`, `exec` and `lint` are `runwright-exec`.
// The workspace denies printing. Standard output is the verbs' answers: the modules that give them allow it;
// warnings and errors go to standard error from anywhere in the binary.
#![allow(clippy::print_stderr)]

mod args;
mod cache_cmd;
mod cli;
mod history_cmd;
mod list;
mod logging;
mod logs_cmd;
mod ops;
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
