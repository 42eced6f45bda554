//! The crate's one error type. Every variant names what failed: the file being archived, or the archive and
//! the entry being extracted, so a job log line is enough to find the culprit.

use std::path::PathBuf;

/// Errors from selecting, writing or extracting archives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The zip library refused something while writing.
    #[error("writing {archive}: entry {entry:?}: {source}")]
    ZipWrite {
        archive: PathBuf,
        entry: String,
        #[source]
        source: zip::result::ZipError,
    },
    /// The archive could not be read at all (not a zip, truncated central directory, …).
    #[error("{archive}: not a readable archive: {reason}")]
    BadArchive { archive: PathBuf, reason: String },
    /// One entry of the archive is refused or failed; nothing of the archive is left in the target.
    #[error("{archive}: entry {entry:?}: {reason}")]
    Entry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    /// The archive as a whole is refused before anything is written.
    #[error("{archive}: {reason}")]
    Refused { archive: PathBuf, reason: String },
    /// A glob pattern could not be parsed.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    /// More files, directories and symlinks matched than [`crate::ArchiveSpec::max_files`] allows.
    #[error("more than {limit} files, directories and symlinks match")]
    TooManyFiles { limit: usize },
    /// An archive to extract holds more entries than [`crate::ExtractOptions::max_entries`] allows.
    #[error("{archive}: more than {limit} entries")]
    TooManyEntries { archive: PathBuf, limit: usize },
    /// Writing was given an unusable option (for example a format that has no single-file meaning).
    #[error("{0}")]
    Invalid(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn entry(
        archive: &std::path::Path,
        entry: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Entry {
            archive: archive.to_path_buf(),
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// Adds a path to I/O errors.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
