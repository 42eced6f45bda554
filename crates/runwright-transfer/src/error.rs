//! The transfer steps' errors, in the words the job log shows: artifact failures fail the job (as the message
//! after `ERROR: Job failed`), cache failures become warnings.

use runwright_client::ArtifactError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `cache:policy` other than GitLab's three, after expansion (runner common/spec/spec.go `CheckPolicy`).
    #[error("unknown cache policy {0:?} (use pull, push or pull-push)")]
    UnknownCachePolicy(String),
    /// `artifacts:reports` format GitLab does not know.
    #[error("unsupported artifact format {0:?} (GitLab accepts raw, zip and gzip)")]
    UnsupportedArtifactFormat(String),
    #[error("artifact format raw needs exactly one file, found {0}")]
    RawNeedsOneFile(usize),
    /// A selection over the runner's `max_archive_files`: the limit, whose it is, and how to get under it or
    /// raise it. `what` names the archive (`artifacts`, `cache`).
    #[error(
        "{what}: more than {limit} files, directories and symlinks match, over this runner's limit for one \
         archive (max_archive_files in its [[runners]] entry of config.toml; runwright lists an archive's files \
         in the runner's own memory). Archive fewer, larger files (for example, pack the directory into one \
         tar file in the job's script and archive that), or ask the runner's administrator to raise \
         max_archive_files"
    )]
    TooManyFiles { what: &'static str, limit: usize },
    /// An archive to extract over `max_archive_files`; the caller names the archive (`extracting artifacts of
    /// build (42): …`, `Extracting cache key: …`).
    #[error(
        "the archive holds more than {limit} entries, over this runner's limit for one archive \
         (max_archive_files in its [[runners]] entry of config.toml; runwright reads an archive's index in the \
         runner's own memory): archive fewer, larger files, or ask the runner's administrator to raise \
         max_archive_files"
    )]
    TooManyEntries { limit: usize },
    /// Selecting, writing or extracting an archive failed otherwise.
    #[error(transparent)]
    Archive(runwright_archive::Error),
    #[error("creating {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cache's keys, local layout or bucket.
    #[error(transparent)]
    Cache(#[from] runwright_cache::Error),
    /// An archive task on a blocking thread panicked.
    #[error("internal error in an archive task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The job was stopped while its artifacts were downloaded.
    #[error("canceled")]
    Canceled,
    /// Every attempt to download a dependency's artifacts failed; the last one's error.
    #[error("downloading artifacts of {name} ({id}) failed after {tries} attempt(s): {source}")]
    Download {
        name: String,
        id: i64,
        tries: u32,
        source: ArtifactError,
    },
    #[error("extracting artifacts of {name} ({id}): {source}")]
    Extract {
        name: String,
        id: i64,
        source: Box<Error>,
    },
    #[error("Uploading artifacts as \"{artifact_type}\" to coordinator... {source}")]
    Upload {
        artifact_type: String,
        source: ArtifactError,
    },
}

impl Error {
    /// An archive error, with the runner's limit explained where it is the cause; `what` names the archive.
    pub(crate) fn archive(e: runwright_archive::Error, what: &'static str) -> Self {
        match e {
            runwright_archive::Error::TooManyFiles { limit } => Error::TooManyFiles { what, limit },
            runwright_archive::Error::TooManyEntries { limit, .. } => {
                Error::TooManyEntries { limit }
            }
            e => Error::Archive(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_key_to_raise_and_how_to_get_under_them() {
        let files = Error::archive(
            runwright_archive::Error::TooManyFiles { limit: 2000 },
            "artifacts",
        );
        assert_eq!(
            files.to_string(),
            "artifacts: more than 2000 files, directories and symlinks match, over this runner's limit for one \
             archive (max_archive_files in its [[runners]] entry of config.toml; runwright lists an archive's \
             files in the runner's own memory). Archive fewer, larger files (for example, pack the directory \
             into one tar file in the job's script and archive that), or ask the runner's administrator to \
             raise max_archive_files"
        );
        let entries = Error::archive(
            runwright_archive::Error::TooManyEntries {
                archive: PathBuf::from("/tmp/a.zip"),
                limit: 2000,
            },
            "cache",
        );
        let extract = Error::Extract {
            name: "build".into(),
            id: 42,
            source: Box::new(entries),
        };
        assert_eq!(
            extract.to_string(),
            "extracting artifacts of build (42): the archive holds more than 2000 entries, over this runner's \
             limit for one archive (max_archive_files in its [[runners]] entry of config.toml; runwright reads \
             an archive's index in the runner's own memory): archive fewer, larger files, or ask the runner's \
             administrator to raise max_archive_files"
        );
        // Other archive errors keep their own text.
        let invalid = Error::archive(runwright_archive::Error::Invalid("bad".into()), "cache");
        assert_eq!(invalid.to_string(), "bad");
    }

    #[test]
    fn refusals_say_what_gitlab_accepts() {
        assert_eq!(
            Error::UnknownCachePolicy("pul".into()).to_string(),
            "unknown cache policy \"pul\" (use pull, push or pull-push)"
        );
        assert_eq!(
            Error::UnsupportedArtifactFormat("rar".into()).to_string(),
            "unsupported artifact format \"rar\" (GitLab accepts raw, zip and gzip)"
        );
        assert_eq!(
            Error::RawNeedsOneFile(3).to_string(),
            "artifact format raw needs exactly one file, found 3"
        );
    }
}
