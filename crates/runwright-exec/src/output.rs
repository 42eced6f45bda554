//! Job traces on stdout while a local pipeline runs, and the full trace in the job's log file.

use super::live::JobView;
use std::fs::File;
use std::io::Write;

/// How trace lines are shown.
#[derive(Clone, Debug)]
pub(super) struct Style {
    /// Keep ANSI sequences (stdout is a terminal and `NO_COLOR` is unset).
    pub keep_ansi: bool,
    /// `[job] ` before every line, when more than one job may run at once (coloured when `keep_ansi`).
    pub prefix: Option<String>,
}

/// Colours for the `[job] ` prefixes, picked by the job's position so neighbours differ.
const PREFIX_COLOURS: [&str; 6] = ["36", "35", "33", "34", "32", "31"];

/// The `[job] ` prefix of the job at `index`.
pub(super) fn prefix(name: &str, index: usize, colour: bool) -> String {
    if colour {
        let c = PREFIX_COLOURS[index % PREFIX_COLOURS.len()];
        format!("\x1b[{c}m[{name}]\x1b[0m ")
    } else {
        format!("[{name}] ")
    }
}

/// Writes trace bytes to stdout line by line (whole lines under one lock, so parallel jobs never mix within a
/// line), and every byte as received to the job's log file.
pub(super) struct TraceOut {
    style: Style,
    /// The runner's per-line timestamps (`FF_TIMESTAMPS`) dropped and continued lines joined, as GitLab's
    /// viewer shows the log.
    stamps: runwright_trace::timestamp::Stripper,
    stripped: Vec<u8>,
    partial: Vec<u8>,
    log: Option<File>,
    /// On a terminal's live view the lines go to the job's row and tail instead of stdout.
    live: Option<JobView>,
}

impl TraceOut {
    pub fn new(style: Style, log: Option<File>, live: Option<JobView>) -> Self {
        TraceOut {
            style,
            stamps: Default::default(),
            stripped: Vec::new(),
            partial: Vec::new(),
            log,
            live,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if let Some(log) = &mut self.log {
            // A log that cannot be written (disk full, …) must not stop the job's output on stdout.
            if let Err(err) = log.write_all(bytes) {
                eprintln!("WARNING: cannot write a job log ({err}); continuing without it");
                self.log = None;
            }
        }
        let mut stripped = std::mem::take(&mut self.stripped);
        stripped.clear();
        self.stamps.push(bytes, &mut stripped);
        self.lines(&stripped);
        self.stripped = stripped;
    }

    /// Nothing new for a while: the last line is shown now rather than when the next one shows whether it
    /// continues it.
    pub fn idle(&mut self) {
        let mut stripped = std::mem::take(&mut self.stripped);
        stripped.clear();
        self.stamps.release(&mut stripped);
        self.lines(&stripped);
        self.stripped = stripped;
    }

    fn lines(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        if let Some(pos) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(pos + 1);
            let lines = std::mem::replace(&mut self.partial, rest);
            self.write(&lines);
        }
    }

    pub fn finish(&mut self) {
        let mut tail = Vec::new();
        self.stamps.finish(&mut tail);
        self.partial.extend_from_slice(&tail);
        if !self.partial.is_empty() {
            let mut lines = std::mem::take(&mut self.partial);
            lines.push(b'\n');
            self.write(&lines);
        }
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
    }

    fn write(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if let Some(view) = &self.live {
            let mut last = None;
            if let Ok(mut tail) = view.tail.lock() {
                for line in text.split_terminator('\n') {
                    // What a terminal would show of the line: the part after its last carriage return.
                    let plain = runwright_trace::ansi::strip_line(line);
                    let shown = plain
                        .trim_end_matches('\r')
                        .rsplit('\r')
                        .next()
                        .unwrap_or("");
                    if !shown.trim().is_empty() {
                        last = Some(shown.to_string());
                        tail.push(shown.to_string());
                    }
                }
            }
            if let Some(line) = last {
                view.live.progress(view.index, &line);
            }
            return;
        }
        let mut shown = String::with_capacity(text.len() + 16);
        for line in text.split_terminator('\n') {
            if let Some(l) = render_line(line, &self.style) {
                shown.push_str(l.as_str());
                shown.push('\n');
            }
        }
        crate::stdout::write(shown.as_bytes());
    }
}

/// One trace line (without its `\n`) as shown; `None` for a line that only held section markers or escape
/// sequences (it would show as nothing).
fn render_line(line: &str, style: &Style) -> Option<String> {
    let body = if !style.keep_ansi {
        strip_ansi(line)
    } else if style.prefix.is_some() {
        // A terminal shows what follows the last carriage return: section markers (`section_start:…\r`) and
        // progress bars would otherwise overwrite the prefix.
        let l = line.trim_end_matches('\r');
        let mut shown = l.rsplit('\r').next().unwrap_or(l).to_string();
        if shown.contains('\x1b') {
            // A colour left open would bleed into the next job's prefix.
            shown.push_str("\x1b[0m");
        }
        if strip_ansi(&shown).is_empty() && !line.is_empty() {
            return None;
        }
        return Some(format!(
            "{}{shown}",
            style.prefix.as_deref().unwrap_or_default()
        ));
    } else {
        // One job at a time on a terminal: the trace as GitLab shows it.
        return Some(line.to_string());
    };
    if body.is_empty() && !line.is_empty() {
        return None;
    }
    Some(format!(
        "{}{body}",
        style.prefix.as_deref().unwrap_or_default()
    ))
}

/// Removes ANSI escape sequences and GitLab's `section_start:…\r`/`section_end:…\r` markers, line by line (the
/// journal's `runwright logs` reads them the same way).
pub fn strip_ansi(s: &str) -> String {
    s.split('\n')
        .map(runwright_trace::ansi::strip_line)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi_and_sections() {
        let s = "section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m\nhi\nsection_end:1:step\r\x1b[0K\n";
        assert_eq!(strip_ansi(s), "$ echo hi\nhi\n\n");
    }

    #[test]
    fn lines_get_prefixes_and_marker_lines_go() {
        let plain = Style {
            keep_ansi: false,
            prefix: Some(prefix("build", 0, false)),
        };
        assert_eq!(
            render_line(
                "section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m",
                &plain
            )
            .as_deref(),
            Some("[build] $ echo hi")
        );
        assert_eq!(render_line("section_end:1:step\r\x1b[0K", &plain), None);
        assert_eq!(render_line("", &plain).as_deref(), Some("[build] "));

        let tty = Style {
            keep_ansi: true,
            prefix: Some(prefix("build", 0, true)),
        };
        assert_eq!(
            render_line("section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi", &tty).as_deref(),
            Some("\x1b[36m[build]\x1b[0m \x1b[0K\x1b[32;1m$ echo hi\x1b[0m")
        );
        assert_eq!(render_line("section_end:1:step\r\x1b[0K", &tty), None);
        assert_eq!(
            render_line("50%\r100%\r", &tty).as_deref(),
            Some("\x1b[36m[build]\x1b[0m 100%")
        );

        let raw = Style {
            keep_ansi: true,
            prefix: None,
        };
        assert_eq!(
            render_line("section_end:1:step\r\x1b[0K", &raw).as_deref(),
            Some("section_end:1:step\r\x1b[0K")
        );
    }
}
