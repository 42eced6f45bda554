//! `runwright logs JOB_ID`: a job's full trace from the journal (issue 6) — past `output_limit`, as the job
//! printed it, masked. The per-line timestamps of `FF_TIMESTAMPS` are read away as GitLab's log viewer does
//! (continued lines joined); on a terminal the colours stay and the section markers go, elsewhere both go
//! (`--color` decides otherwise); `--follow` keeps reading a running job's trace until the job ends.
//!
//! A trace is what a job printed, so it is untrusted (issue 17 item 8): unless `--color always` asks for the
//! raw bytes, each line is rendered ([`runwright_trace::ansi::terminal_line`] / `strip_line`) so that nothing
//! but colours reaches the terminal — no title, clipboard, screen clearing or cursor movement.

use crate::history_cmd::{runner_matches, shown_status, write_stdout, JournalArgs};
use anyhow::Context;
use clap::Args;
use runwright_journal::JobEntry;
use std::io::{IsTerminal, Read, Seek};
use std::process::ExitCode;
use std::time::Duration;

/// How often `--follow` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The job id (GitLab's, or the one `runwright exec` printed).
    pub job_id: i64,
    #[command(flatten)]
    pub journal: JournalArgs,
    /// The job of this runner (name or short token), when several GitLab instances used the same id.
    #[arg(long, value_name = "NAME")]
    pub runner: Option<String>,
    /// Keep printing a running job's output until it ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Colours: auto (kept on a terminal, escape sequences other than colours removed), always (the trace's raw
    /// bytes, section markers and any escape sequence the job printed included), never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
}

/// Turns trace bytes into lines safe for a terminal, plain or with their colours; an unfinished line waits for
/// the rest.
#[derive(Default)]
struct Plain {
    partial: Vec<u8>,
    /// Keep colours (SGR), and nothing else a terminal acts on.
    colours: bool,
    /// The unfinished line is on the terminal already ([`Plain::show_partial`]): its whole form overwrites it.
    shown: bool,
}

impl Plain {
    fn render(&self, line: &[u8]) -> String {
        let line = String::from_utf8_lossy(line);
        if self.colours {
            runwright_trace::ansi::terminal_line(&line)
        } else {
            runwright_trace::ansi::strip_line(&line)
        }
    }

    /// While following on a terminal: shows the unfinished line (a progress bar) as it is now, to be
    /// overwritten by its next form.
    fn show_partial(&mut self, out: &mut Vec<u8>) {
        if !self.colours || self.partial.is_empty() {
            return;
        }
        out.extend_from_slice(b"\r");
        out.extend_from_slice(self.render(&self.partial).as_bytes());
        // Our own erase-to-end-of-line, and colours reset until the line goes on.
        out.extend_from_slice(b"\x1b[0m\x1b[K");
        self.shown = true;
    }

    /// Before the next output: back to the start of a line shown by [`Plain::show_partial`].
    fn overwrite_shown(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.shown) {
            out.extend_from_slice(b"\r\x1b[K");
        }
    }

    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.partial.extend_from_slice(data);
        let Some(last_nl) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        self.overwrite_shown(out);
        for line in complete[..complete.len() - 1].split(|b| *b == b'\n') {
            out.extend_from_slice(self.render(line).as_bytes());
            out.push(b'\n');
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.overwrite_shown(out);
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            out.extend_from_slice(self.render(&line).as_bytes());
        }
        if self.colours {
            // A job that left a colour on does not colour the prompt.
            out.extend_from_slice(b"\x1b[0m");
        }
    }
}

fn pick(args: &LogsArgs, found: Vec<JobEntry>, dir: &std::path::Path) -> anyhow::Result<JobEntry> {
    let mut found: Vec<JobEntry> = found
        .into_iter()
        .filter(|e| args.runner.as_deref().is_none_or(|r| runner_matches(e, r)))
        .collect();
    let n = found.len();
    let Some(newest) = found.pop() else {
        anyhow::bail!(
            "job {} is not in the journal at {} (`runwright history` lists the jobs it has{})",
            args.job_id,
            dir.display(),
            if args.journal.local {
                ""
            } else {
                "; --local reads runwright exec runs"
            }
        );
    };
    if n > 1 {
        eprintln!(
            "note: the journal has {n} jobs with id {}; showing the newest (runner {}, received {}); --runner picks another",
            args.job_id,
            runwright_trace::ansi::escape_controls(&newest.meta.runner.name),
            crate::history_cmd::format_ms(newest.meta.received_at_ms)
        );
    }
    Ok(newest)
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let journal = args.journal.open()?;
    let entry = pick(&args, journal.find(args.job_id)?, journal.dir())?;
    let raw = args.color == "always";
    let colours = match args.color.as_str() {
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    let path = entry.trace_path();
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut plain = Plain {
        colours,
        ..Plain::default()
    };
    let mut stamps = runwright_trace::timestamp::Stripper::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut emit = |data: &[u8], plain: &mut Plain| -> anyhow::Result<()> {
        out.clear();
        if raw {
            out.extend_from_slice(data);
        } else {
            plain.push(data, &mut out);
        }
        write_stdout(&out)
    };
    let mut stripped = Vec::new();
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("reading {}", path.display()))?;
        stripped.clear();
        if n > 0 {
            stamps.push(&chunk[..n], &mut stripped);
            emit(&stripped, &mut plain)?;
            continue;
        }
        // At the end of what is written so far: done, unless following a job that still runs.
        if !args.follow {
            break;
        }
        let now = entry.reload()?;
        if shown_status(&now) != "running" {
            // The job ended (or its service is gone): read what was written before that, then stop.
            let mut rest = Vec::new();
            file.read_to_end(&mut rest)
                .with_context(|| format!("reading {}", path.display()))?;
            // A trace past the journal's cap is rebuilt when the job ends (head, a note of what was dropped,
            // the end) and takes the old file's place: what is new is that file past the head.
            if replaced(&file, &path) {
                let mut rebuilt = std::fs::File::open(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                rebuilt
                    .seek(std::io::SeekFrom::Start(now.meta.output_limit as u64))
                    .and_then(|_| rebuilt.read_to_end(&mut rest))
                    .with_context(|| format!("reading {}", path.display()))?;
            }
            stamps.push(&rest, &mut stripped);
            emit(&stripped, &mut plain)?;
            break;
        }
        // Show the last line now rather than when the next one says whether it continues it.
        stamps.release(&mut stripped);
        emit(&stripped, &mut plain)?;
        if !raw {
            let mut partial = Vec::new();
            plain.show_partial(&mut partial);
            write_stdout(&partial)?;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    stripped.clear();
    stamps.finish(&mut stripped);
    emit(&stripped, &mut plain)?;
    if !raw {
        let mut tail = Vec::new();
        plain.finish(&mut tail);
        write_stdout(&tail)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is no longer the file `open` reads (the journal renamed a rebuilt trace over it).
fn replaced(open: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (open.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_across_chunk_boundaries() {
        let log = "section_start:1:step_script\r\x1b[0K\x1b[32;1m$ echo hé\x1b[0;m\nhé\nsection_end:2:step_script\r\x1b[0K\ntail";
        let b = log.as_bytes();
        for i in 0..=b.len() {
            let mut p = Plain::default();
            let mut out = Vec::new();
            p.push(&b[..i], &mut out);
            p.push(&b[i..], &mut out);
            p.finish(&mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                "$ echo hé\nhé\n\ntail",
                "split at {i}"
            );
        }
    }

    #[test]
    fn a_terminal_gets_colours_and_no_other_escape_sequence() {
        let log = "section_start:1:step_script\r\x1b[0K\x1b[32;1m$ echo\x1b[0;m\n\x1b]0;owned\x07\x1b[2Jname\n50%\r100%";
        let mut p = Plain {
            colours: true,
            ..Plain::default()
        };
        let mut out = Vec::new();
        p.push(log.as_bytes(), &mut out);
        p.show_partial(&mut out);
        p.finish(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "\x1b[32;1m$ echo\x1b[0;m\nname\n\r100%\x1b[0m\x1b[K\r\x1b[K100%\x1b[0m"
        );
    }
}
