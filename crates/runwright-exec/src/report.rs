//! What a person sees of the jobs while the run goes: the [`Reporter`] the schedule loop tells of each job's
//! start and end, with its two views. [`Lines`] prints `=== job` lines among the traces on stdout (`output.rs`);
//! [`LiveRows`] draws one row per job on a terminal (`live.rs`) and a failed job's last lines.

use crate::live::{self, JobView, Live, Tail};
use crate::schedule::Status;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A job as the views name it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobLine<'a> {
    /// Its index in the scheduler (its row).
    pub index: usize,
    /// Its name as shown (`trigger > job` in a child pipeline).
    pub name: &'a str,
    pub stage: &'a str,
}

/// How a job ended, as the views show it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended<'a> {
    pub status: &'a Status,
    pub elapsed: Duration,
    pub exit_code: Option<i32>,
    /// Its log file.
    pub log: Option<&'a Path>,
}

/// The view of a running pipeline.
pub(crate) trait Reporter {
    /// A line of the run's own (a note, a job's output task that failed).
    fn say(&self, text: &str);
    /// The job does not run: `status` (skipped, manual, canceled) and why.
    fn skipped(&self, job: JobLine<'_>, status: &Status, why: &str);
    /// A trigger job created its child pipeline (`created` says which); with `depend` it lasts until the child
    /// pipeline ends.
    fn child_created(&self, job: JobLine<'_>, created: &str, depend: bool);
    /// A `strategy: depend` trigger job took the status of its child pipeline `child`.
    fn trigger_ended(&self, job: JobLine<'_>, status: &Status, elapsed: Duration, child: i64);
    /// The job was handed to the runners.
    fn started(&self, job: JobLine<'_>);
    /// Where the job's trace is shown instead of stdout (the live view's row), if anywhere.
    fn trace_view(&self, job: JobLine<'_>) -> Option<JobView>;
    /// The job ended.
    fn ended(&self, job: JobLine<'_>, end: Ended<'_>);
    /// The run is over: what is drawn stays on screen, the summary follows below.
    fn close(&self);
}

/// ` (exit code N)` after a job's status, for a non-zero exit code.
fn exit_code_suffix(exit_code: Option<i32>) -> String {
    exit_code
        .filter(|c| *c != 0)
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default()
}

/// The line view: every job's start and end on a line of its own, among the traces.
pub(crate) struct Lines;

impl Lines {
    fn skipped_line(job: JobLine<'_>, status: &Status, why: &str) -> String {
        format!(
            "--- {} ({}): {} — {why}",
            job.name,
            job.stage,
            status.label()
        )
    }

    fn created_line(job: JobLine<'_>, created: &str) -> String {
        format!("=== {} ({}): {created}", job.name, job.stage)
    }

    fn trigger_end_line(
        job: JobLine<'_>,
        status: &Status,
        elapsed: Duration,
        child: i64,
    ) -> String {
        format!(
            "=== {} ({}): {} in {:.1}s (child pipeline {child})",
            job.name,
            job.stage,
            status.label(),
            elapsed.as_secs_f64()
        )
    }

    fn started_line(job: JobLine<'_>) -> String {
        format!("=== {} ({})", job.name, job.stage)
    }

    fn ended_line(job: JobLine<'_>, end: Ended<'_>) -> String {
        format!(
            "=== {} ({}): {} in {:.1}s{}",
            job.name,
            job.stage,
            end.status.label(),
            end.elapsed.as_secs_f64(),
            exit_code_suffix(end.exit_code)
        )
    }
}

impl Reporter for Lines {
    fn say(&self, text: &str) {
        say!("{text}");
    }
    fn skipped(&self, job: JobLine<'_>, status: &Status, why: &str) {
        say!("{}", Lines::skipped_line(job, status, why));
    }
    fn child_created(&self, job: JobLine<'_>, created: &str, _depend: bool) {
        say!("{}", Lines::created_line(job, created));
    }
    fn trigger_ended(&self, job: JobLine<'_>, status: &Status, elapsed: Duration, child: i64) {
        say!("{}", Lines::trigger_end_line(job, status, elapsed, child));
    }
    fn started(&self, job: JobLine<'_>) {
        say!("{}", Lines::started_line(job));
    }
    fn trace_view(&self, _job: JobLine<'_>) -> Option<JobView> {
        None
    }
    fn ended(&self, job: JobLine<'_>, end: Ended<'_>) {
        say!("{}", Lines::ended_line(job, end));
    }
    fn close(&self) {}
}

/// The live view: a row per job, a failed job's last lines above the rows.
pub(crate) struct LiveRows {
    live: Arc<Live>,
    /// Each started job's last lines, filled by its output task.
    tails: Mutex<Vec<Option<Arc<Mutex<Tail>>>>>,
}

impl LiveRows {
    pub fn new(live: Arc<Live>, jobs: usize) -> Self {
        LiveRows {
            live,
            tails: Mutex::new(vec![None; jobs]),
        }
    }

    fn tail(&self, index: usize) -> Option<Arc<Mutex<Tail>>> {
        self.tails
            .lock()
            .ok()
            .and_then(|t| t.get(index).cloned().flatten())
    }
}

/// A finished row's mark in the live view.
fn mark(status: &Status) -> live::Outcome {
    match status {
        Status::Success => live::Outcome::Ok,
        Status::Failed { allowed: true } => live::Outcome::Allowed,
        Status::Failed { allowed: false } => live::Outcome::Failed,
        _ => live::Outcome::Neutral,
    }
}

impl Reporter for LiveRows {
    fn say(&self, text: &str) {
        self.live.println(text);
    }
    fn skipped(&self, job: JobLine<'_>, status: &Status, why: &str) {
        self.live.finished(
            job.index,
            &format!("{} — {why}", status.label()),
            None,
            live::Outcome::Neutral,
        );
    }
    fn child_created(&self, job: JobLine<'_>, created: &str, depend: bool) {
        if depend {
            self.live.started(job.index);
        } else {
            self.live
                .finished(job.index, created, Some(0.0), live::Outcome::Ok);
        }
    }
    fn trigger_ended(&self, job: JobLine<'_>, status: &Status, elapsed: Duration, child: i64) {
        self.live.finished(
            job.index,
            &format!("{} (child pipeline {child})", status.label()),
            Some(elapsed.as_secs_f64()),
            mark(status),
        );
    }
    fn started(&self, job: JobLine<'_>) {
        self.live.started(job.index);
    }
    fn trace_view(&self, job: JobLine<'_>) -> Option<JobView> {
        let tail = Arc::new(Mutex::new(Tail::default()));
        if let Ok(mut tails) = self.tails.lock() {
            if let Some(slot) = tails.get_mut(job.index) {
                *slot = Some(tail.clone());
            }
        }
        Some(JobView {
            live: self.live.clone(),
            index: job.index,
            tail,
        })
    }
    fn ended(&self, job: JobLine<'_>, end: Ended<'_>) {
        if matches!(end.status, Status::Failed { .. }) {
            if let Some(tail) = self.tail(job.index) {
                if let Ok(tail) = tail.lock() {
                    let log = end.log.map(|l| l.display().to_string());
                    self.live.tail(job.name, log.as_deref(), tail.lines());
                }
            }
        }
        self.live.finished(
            job.index,
            &format!("{}{}", end.status.label(), exit_code_suffix(end.exit_code)),
            Some(end.elapsed.as_secs_f64()),
            mark(end.status),
        );
    }
    fn close(&self) {
        self.live.close();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Remembers what the schedule loop reported, one line per call.
    #[derive(Default)]
    pub(crate) struct Recording {
        pub events: Mutex<Vec<String>>,
    }

    impl Recording {
        fn push(&self, event: String) {
            if let Ok(mut e) = self.events.lock() {
                e.push(event);
            }
        }
        pub fn events(&self) -> Vec<String> {
            self.events.lock().map(|e| e.clone()).unwrap_or_default()
        }
    }

    impl Reporter for Recording {
        fn say(&self, text: &str) {
            self.push(format!("say {text}"));
        }
        fn skipped(&self, job: JobLine<'_>, status: &Status, why: &str) {
            self.push(format!("skipped {} {} {why}", job.name, status.label()));
        }
        fn child_created(&self, job: JobLine<'_>, created: &str, depend: bool) {
            self.push(format!("child {} {created} depend={depend}", job.name));
        }
        fn trigger_ended(&self, job: JobLine<'_>, status: &Status, _: Duration, child: i64) {
            self.push(format!(
                "trigger-ended {} {} {child}",
                job.name,
                status.label()
            ));
        }
        fn started(&self, job: JobLine<'_>) {
            self.push(format!("started {}", job.name));
        }
        fn trace_view(&self, _job: JobLine<'_>) -> Option<JobView> {
            None
        }
        fn ended(&self, job: JobLine<'_>, end: Ended<'_>) {
            self.push(format!(
                "ended {} {}{}",
                job.name,
                end.status.label(),
                exit_code_suffix(end.exit_code)
            ));
        }
        fn close(&self) {
            self.push("close".into());
        }
    }

    const BUILD: JobLine<'static> = JobLine {
        index: 0,
        name: "build",
        stage: "test",
    };

    #[test]
    fn the_line_view_says_what_it_always_said() {
        assert_eq!(
            Lines::skipped_line(BUILD, &Status::Skipped, "needs failed"),
            "--- build (test): skipped — needs failed"
        );
        assert_eq!(Lines::started_line(BUILD), "=== build (test)");
        assert_eq!(
            Lines::created_line(BUILD, "created child pipeline 2 (a.yml)"),
            "=== build (test): created child pipeline 2 (a.yml)"
        );
        assert_eq!(
            Lines::trigger_end_line(BUILD, &Status::Success, Duration::from_millis(1250), 2),
            "=== build (test): success in 1.2s (child pipeline 2)"
        );
        let failed = Status::Failed { allowed: true };
        let end = |exit_code| Ended {
            status: &failed,
            elapsed: Duration::from_secs(2),
            exit_code,
            log: None,
        };
        assert_eq!(
            Lines::ended_line(BUILD, end(Some(3))),
            "=== build (test): failed (allowed) in 2.0s (exit code 3)"
        );
        assert_eq!(
            Lines::ended_line(BUILD, end(Some(0))),
            "=== build (test): failed (allowed) in 2.0s"
        );
    }

    #[test]
    fn the_live_view_marks_rows_and_keeps_tails_per_job() {
        let live = Live::new(&[("build", "test"), ("deploy", "deploy")], false, true);
        let rows = LiveRows::new(live, 2);
        rows.started(BUILD);
        let view = rows.trace_view(BUILD).expect("a view");
        assert_eq!(view.index, 0);
        assert!(rows.tail(0).is_some() && rows.tail(1).is_none());
        let failed = Status::Failed { allowed: false };
        rows.ended(
            BUILD,
            Ended {
                status: &failed,
                elapsed: Duration::from_secs(1),
                exit_code: Some(2),
                log: None,
            },
        );
        // An index past the rows is ignored rather than panicking.
        assert!(rows.trace_view(JobLine { index: 9, ..BUILD }).is_some());
        assert!(rows.tail(9).is_none());
        rows.close();
        assert!(matches!(mark(&failed), live::Outcome::Failed));
    }
}
