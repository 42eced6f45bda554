//! runwright-journal: the build host's own record of every job (issue 6).
//!
//! Each job gets a directory under `<journal>/jobs/` holding `meta.json` (runner, project, ref, job, queue and
//! stage timings, final state) and `trace.log`, the masked trace: the bytes GitLab receives, before
//! `output_limit` cuts them — whole up to a cap per job (`max_trace_mb`), past it the head GitLab got, a note of
//! what was dropped and the end (`tracefile.rs`); nothing while the journal's file system is below its
//! free-space floor (`space.rs`). While a service job runs, `job-token` keeps its job token so that a restarted
//! service can still finalise the job towards GitLab; it is removed once GitLab has the final state.
//!
//! Why plain files and not an embedded store: the trace is an append-only byte stream that readers
//! (`runwright logs --follow`) tail while it grows, and a killed process loses nothing that reached `write(2)`:
//! a file opened with `O_APPEND` and written without user-space buffering gives both for free. The metadata is
//! small and rewritten whole (temporary file + `rename`), so a reader never sees half of it. An embedded
//! database (sled, redb) would add a second copy of every trace byte or a blob API to tail, and a lock that
//! readers in another process cannot share. `fsync` runs when a job starts and ends, not per trace write: a
//! crash of the *service* loses nothing; a crash of the *machine* may lose the page cache's last seconds.
//!
//! Permissions: directories 0700, files 0600 (the trace may show more than its author meant; the token file is
//! a credential). A journal directory of another user, and a lock file that is a symbolic link, another user's
//! or writable by others, are refused (`trusted`).

mod error;
mod meta;
mod recorder;
mod sections;
mod space;
mod store;
mod tracefile;
pub mod trusted;

pub use error::JournalError;
pub use meta::{JobMeta, JobStatus, RunnerRef, StageTiming, TlsFiles, META_VERSION};
pub use recorder::{JobRecorder, TraceSink};
pub use sections::{SectionEvent, SectionScanner};
pub use space::{floor_for, statvfs_space, Space, DEFAULT_MIN_FREE, DEFAULT_MIN_FREE_PERCENT};
pub use store::{
    now_ms, JobEntry, Journal, JournalLock, Retention, RetentionReport, TraceLimits,
    DEFAULT_MAX_AGE, DEFAULT_MAX_JOBS, DEFAULT_MAX_SIZE,
};
pub use tracefile::{default_trace_cap, trace_cap, MIN_DEFAULT_TRACE_CAP, MIN_TAIL};

#[cfg(test)]
mod tests;
