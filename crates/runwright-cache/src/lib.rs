//! runwright-cache: GitLab-compatible job caches — keys, the local layout, the S3 distributed
//! cache, and listing/clearing them.
//!
//! * [`key`] turns the keys GitLab sends into the ones the runner uses: sanitized (or hashed),
//!   with GitLab's fallback order (protocol.md §6.1).
//! * [`local`] names the project's cache directory and writes `metadata.json` (§6.2).
//! * [`s3`] presigns `GET`/`HEAD`/`PUT` URLs with the runner's credentials and moves archives
//!   through them, streaming, the way GitLab's helper does (§6.3, §6.4).
//! * [`admin`] lists every runner's caches and clears what a filter selects.
//!
//! Nothing here fails a job: callers turn every error into a warning, as GitLab's runner does.
#![warn(missing_docs)]

pub mod admin;
mod error;
mod gopath;
pub mod key;
pub mod local;
pub mod s3;
mod s3_endpoint;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::{CacheEntry, Filter, Location, RunnerCaches};
pub use error::{strip_query, Error, Result};
pub use key::{candidates, default_key, hashed, sanitize, CacheKey, Candidates, KeyError};
pub use local::{project_slug, LocalCache};
pub use s3::{
    download, download_from, upload, upload_with_headers, DownloadResult, S3Cache, UploadResult,
};
