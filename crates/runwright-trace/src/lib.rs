//! runwright-trace: the job log on its way to GitLab.
//!
//! Everything a job prints reaches GitLab through a [`TraceBuffer`]: masked (masked variable
//! values, sensitive URL parameters, prefixed tokens), with `FF_TIMESTAMPS` timestamped line by
//! line per output stream ([`timestamp`]), made valid UTF-8, cut at the output limit with
//! GitLab's notice, checksummed (`crc32:%08x`) and readable by offset for the trace-patch loop.
//! The pieces are usable on their own: [`Masker`]/[`mask_str`] for other text that may hold
//! secrets, [`section_start`]/[`section_end`] and [`ansi`] for the log's markup,
//! [`timestamp::strip`] to read a timestamped log as GitLab's viewer shows it.
//!
//! ```
//! use runwright_trace::{TraceBuffer, TraceOptions};
//!
//! let trace = TraceBuffer::new(TraceOptions {
//!     masked: vec!["hunter22".into()],
//!     ..TraceOptions::default()
//! });
//! trace.write(b"password: hun");
//! trace.write(b"ter22, token glpat-abc123\n");
//! trace.finish();
//! assert_eq!(trace.read(0, 1024), b"password: [MASKED], token glpat-[MASKED]\n");
//! assert_eq!(trace.checksum().len(), "crc32:".len() + 8);
//! ```
//!
//! Behaviour follows GitLab's runner; each module cites the Go file it mirrors and says where we
//! deliberately differ (only ever by masking more).

pub mod ansi;
mod automaton;
mod buffer;
mod masker;
mod phrase;
mod sections;
pub mod timestamp;
mod token;
mod url;
mod utf8;

pub use buffer::{
    limit_exceeded_notice, TraceBuffer, TraceOptions, TraceStream, DEFAULT_OUTPUT_LIMIT,
};
pub use masker::{mask_str, Masker};
pub use phrase::MASK;
pub use sections::{section_end, section_start};
pub use timestamp::StreamType;
pub use token::{
    default_token_prefixes, ALL_DEFAULT_TOKEN_PREFIXES, DEFAULT_TOKEN_PREFIX, MAX_TOKEN_PREFIXES,
};
pub use url::SENSITIVE_URL_PARAMS;
