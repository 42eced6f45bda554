//! Writing one job while it runs: the trace sink the `TraceBuffer` tees into, and the metadata updates.
//!
//! State owned (one mutex per job): the open `trace.log`, the section scanner and the current metadata.
//! The sink is called under the trace buffer's own lock, so it does one `write(2)` per slice and, at a stage
//! boundary, one small `meta.json` rewrite — never anything that waits on the network.

use crate::error::JournalError;
use crate::meta::{JobMeta, JobStatus, StageTiming};
use crate::sections::{SectionEvent, SectionScanner};
use crate::store::{now_ms, write_meta, TOKEN_FILE, TRACE_FILE};
use crate::tracefile::{Event, TraceWriter};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// One job being journaled. Cheap to clone.
#[derive(Clone)]
pub struct JobRecorder {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    meta: JobMeta,
    /// `None` once the job ended (or writing failed).
    trace: Option<TraceWriter>,
    scanner: SectionScanner,
}

impl std::fmt::Debug for JobRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRecorder")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl JobRecorder {
    pub(crate) fn new(dir: PathBuf, meta: JobMeta, trace: TraceWriter) -> Self {
        JobRecorder {
            shared: Arc::new(Shared {
                dir,
                state: Mutex::new(State {
                    meta,
                    trace: Some(trace),
                    scanner: SectionScanner::default(),
                }),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves metadata that is still worth writing.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer to hand to `TraceBuffer::set_sink`: every byte goes to `trace.log` at once.
    pub fn sink(&self) -> TraceSink {
        TraceSink {
            recorder: self.clone(),
        }
    }

    /// A copy of the current metadata.
    pub fn meta(&self) -> JobMeta {
        self.lock().meta.clone()
    }

    /// Changes the metadata and writes it (atomically; `sync` also flushes it to disk).
    pub fn update(&self, sync: bool, f: impl FnOnce(&mut JobMeta)) -> Result<(), JournalError> {
        let mut st = self.lock();
        f(&mut st.meta);
        write_meta(&self.shared.dir, &st.meta, sync)
    }

    /// The job ended: final state, end time, trace synced, unfinished sections closed. `reported` says
    /// whether GitLab has the final state (then the job token file goes).
    pub fn finish(
        &self,
        state: JobStatus,
        failure_reason: Option<String>,
        exit_code: Option<i32>,
        reported: bool,
    ) -> Result<(), JournalError> {
        let mut st = self.lock();
        let st = &mut *st;
        // A local (`runwright exec`) job has nothing to recover after a crash: its record is history only.
        let sync = !st.meta.local;
        if let Some(w) = st.trace.as_mut() {
            // Past its cap, the trace is rebuilt as head + note + tail here.
            match w.finish(sync) {
                Ok(dropped) => st.meta.trace_dropped = dropped,
                Err(e) => {
                    tracing::warn!(dir = %self.shared.dir.display(), "journal: finishing the trace: {e}");
                    st.meta
                        .trace_error
                        .get_or_insert(format!("finishing the trace: {e}"));
                }
            }
        }
        let now = now_ms();
        let m = &mut st.meta;
        m.state = state;
        m.failure_reason = failure_reason;
        m.exit_code = exit_code;
        m.finished_at_ms = Some(now);
        m.reported = reported || m.local;
        for s in m.stages.iter_mut().filter(|s| s.finished_at_ms.is_none()) {
            s.finished_at_ms = Some(now);
        }
        m.trace_bytes = trace_len(&self.shared.dir);
        write_meta(&self.shared.dir, &st.meta, true)?;
        if st.meta.reported {
            remove_token(&self.shared.dir);
        }
        st.trace = None;
        Ok(())
    }

    /// GitLab has the final state now: the job token is no longer needed.
    pub fn mark_reported(&self) -> Result<(), JournalError> {
        let mut st = self.lock();
        st.meta.reported = true;
        write_meta(&self.shared.dir, &st.meta, true)?;
        remove_token(&self.shared.dir);
        Ok(())
    }

    fn write_trace(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(writer) = st.trace.as_mut() else {
            return Ok(());
        };
        let mut changed = false;
        match writer.write(buf) {
            Ok(None) => {}
            Ok(Some(Event::Stopped(note))) => {
                st.meta.trace_error = Some(note);
                changed = true;
            }
            Err(e) => {
                st.trace = None;
                st.meta.trace_error = Some(e.to_string());
                st.meta.trace_bytes = trace_len(&self.shared.dir);
                let _ = write_meta(&self.shared.dir, &st.meta, false);
                return Err(e);
            }
        }
        // Every byte, also those the cap or the floor kept off the disk: the stage timings stay whole.
        let events = st.scanner.feed(buf);
        if !events.is_empty() || changed {
            let now = now_ms();
            for ev in events {
                match ev {
                    SectionEvent::Start(name) => st.meta.stages.push(StageTiming {
                        name,
                        started_at_ms: now,
                        finished_at_ms: None,
                    }),
                    SectionEvent::End(name) => {
                        if let Some(s) = st
                            .meta
                            .stages
                            .iter_mut()
                            .rev()
                            .find(|s| s.name == name && s.finished_at_ms.is_none())
                        {
                            s.finished_at_ms = Some(now);
                        }
                    }
                }
            }
            st.meta.trace_bytes = trace_len(&self.shared.dir);
            if let Err(e) = write_meta(&self.shared.dir, &st.meta, false) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }
}

fn trace_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(TRACE_FILE))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn remove_token(dir: &Path) {
    let path = dir.join(TOKEN_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("journal: removing {}: {e}", path.display()),
    }
}

/// `Write` into a job's `trace.log` (and its stage timings). Unbuffered on purpose: bytes handed over are in
/// the kernel when `write` returns, so killing the service loses none of them.
pub struct TraceSink {
    recorder: JobRecorder,
}

impl Write for TraceSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.recorder.write_trace(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
