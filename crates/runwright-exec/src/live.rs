//! The live view of a local pipeline on a terminal: one line per job (status, duration, a spinner and the
//! job's latest output line while it runs), the tail of a failed job's log printed above the lines, and the
//! run's own messages printed above them too. Drawn by indicatif, which redraws in place and leaves the final
//! state on screen.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines of a failed job's log shown under the view.
pub(super) const TAIL_LINES: usize = 15;

/// One job's row.
struct Row {
    bar: ProgressBar,
    label: String,
}

/// The view of the whole pipeline; shared by the job output tasks.
pub(super) struct Live {
    multi: MultiProgress,
    rows: Vec<Row>,
    colour: bool,
}

/// How a row's state is shown.
fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

impl Live {
    /// Rows for `jobs` (name, stage), all pending. `hidden` draws nothing (tests of the bookkeeping).
    pub fn new(jobs: &[(&str, &str)], colour: bool, hidden: bool) -> Arc<Live> {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            // stdout, as the line mode's logs: `runwright exec > file` gets the summary, not escape codes
            // (indicatif draws nothing when the target is not a terminal).
            ProgressDrawTarget::stdout_with_hz(10)
        };
        let multi = MultiProgress::with_draw_target(target);
        let w_job = jobs.iter().map(|j| j.0.len()).max().unwrap_or(3).min(40);
        let w_stage = jobs.iter().map(|j| j.1.len()).max().unwrap_or(5).min(20);
        let rows = jobs
            .iter()
            .map(|(name, stage)| {
                let bar = multi.add(ProgressBar::new_spinner());
                let label = format!("{name:<w_job$}  {stage:<w_stage$}");
                bar.set_style(style("  {prefix}  {msg}"));
                bar.set_prefix(label.clone());
                bar.set_message(paint(colour, "2", "pending"));
                bar.tick();
                Row { bar, label }
            })
            .collect();
        Arc::new(Live {
            multi,
            rows,
            colour,
        })
    }

    /// A message of the run itself (notes, the pipeline line), above the rows.
    pub fn println(&self, text: &str) {
        // A terminal that went away makes the println fail; the run goes on.
        let _ = self.multi.println(text);
    }

    pub fn started(&self, i: usize) {
        let Some(row) = self.rows.get(i) else { return };
        row.bar.reset_elapsed();
        row.bar
            .set_style(style("{spinner} {prefix}  {elapsed:>4}  {wide_msg}"));
        row.bar.set_message(paint(self.colour, "36", "running"));
        row.bar.enable_steady_tick(Duration::from_millis(100));
    }

    /// The job's latest output line (already stripped of escape sequences), shown dimmed after its state.
    pub fn progress(&self, i: usize, line: &str) {
        let Some(row) = self.rows.get(i) else { return };
        let line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
        row.bar.set_message(format!(
            "{}  {}",
            paint(self.colour, "36", "running"),
            paint(self.colour, "2", &line)
        ));
    }

    /// The job ended (or was skipped) with `label`; `ok` picks the mark and colour, `failed` (red) wins.
    pub fn finished(&self, i: usize, state: &str, secs: Option<f64>, outcome: Outcome) {
        let Some(row) = self.rows.get(i) else { return };
        let (mark, code) = match outcome {
            Outcome::Ok => ("✔", "32"),
            Outcome::Failed => ("✘", "31"),
            Outcome::Allowed => ("!", "33"),
            Outcome::Neutral => ("·", "2"),
        };
        let time = secs.map_or(String::new(), |s| format!("  {s:>5.1}s"));
        row.bar.set_style(style("{msg}"));
        row.bar.finish_with_message(format!(
            "{} {}{time}  {}",
            paint(self.colour, code, mark),
            row.label,
            paint(self.colour, code, state)
        ));
    }

    /// The last lines of a failed job's log, printed above the rows.
    pub fn tail(&self, job: &str, log: Option<&str>, lines: &VecDeque<String>) {
        let mut block = format!(
            "{} (last {} lines{}):",
            paint(self.colour, "31;1", &format!("--- {job} failed")),
            lines.len(),
            log.map(|l| format!(" of {l}")).unwrap_or_default()
        );
        for l in lines {
            block.push_str("\n  ");
            block.push_str(l);
        }
        self.println(&block);
    }

    /// Leaves the rows as they are on screen: each is finished, so the summary prints below them.
    pub fn close(&self) {
        for row in &self.rows {
            if !row.bar.is_finished() {
                row.bar.abandon();
            }
        }
    }
}

/// The mark of a finished row.
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Ok,
    Failed,
    Allowed,
    Neutral,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file: a bad one is a bug caught by the tests, and the default style
    // is still a working view.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

/// The last `TAIL_LINES` non-empty lines of a job's output (stripped), shown when it fails.
#[derive(Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    pub fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
    pub fn lines(&self) -> &VecDeque<String> {
        &self.lines
    }
}

/// A job's handle on the view, held by its output task.
pub(super) struct JobView {
    pub live: Arc<Live>,
    pub index: usize,
    pub tail: Arc<Mutex<Tail>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [
            "  {prefix}  {msg}",
            "{spinner} {prefix}  {elapsed:>4}  {wide_msg}",
            "{msg}",
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for n in 0..(TAIL_LINES + 5) {
            t.push(format!("line {n}"));
        }
        assert_eq!(t.lines().len(), TAIL_LINES);
        assert_eq!(t.lines().front().map(String::as_str), Some("line 5"));
        assert_eq!(
            t.lines().back().map(String::as_str),
            Some(format!("line {}", TAIL_LINES + 4).as_str())
        );
    }

    #[test]
    fn rows_go_from_pending_to_finished() {
        let live = Live::new(&[("build", "build"), ("test", "test")], false, true);
        live.started(0);
        live.progress(0, "compiling\x07 things");
        live.finished(0, "success", Some(1.25), Outcome::Ok);
        live.finished(1, "skipped", None, Outcome::Neutral);
        assert!(live.rows[0].bar.is_finished());
        assert_eq!(
            live.rows[0].bar.message(),
            "✔ build  build    1.2s  success"
        );
        assert_eq!(live.rows[1].bar.message(), "· test   test   skipped");
        // Out-of-range rows are ignored rather than panicking.
        live.started(7);
        live.close();
    }
}
