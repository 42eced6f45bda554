//! runwright's own bound on one archive (`max_archive_files`, issue 17 item 3), said the way the job's log said it
//! when the runner archived in its own process: which limit, whose it is, how to get under it or raise it. The
//! stage scripts pass the runner's value in `RUNWRIGHT_MAX_ARCHIVE_FILES`.

/// `e` in the job's words; `what` names the archive (`artifacts`, `cache`) when files are selected for it.
pub(crate) fn explain(e: &runwright_archive::Error, what: &str) -> String {
    match e {
        runwright_archive::Error::TooManyFiles { limit } => format!(
            "{what}: more than {limit} files, directories and symlinks match, over this runner's limit for one \
             archive (max_archive_files in its [[runners]] entry of config.toml). Archive fewer, larger files \
             (for example, pack the directory into one tar file in the job's script and archive that), or ask \
             the runner's administrator to raise max_archive_files"
        ),
        runwright_archive::Error::TooManyEntries { limit, .. } => format!(
            "the archive holds more than {limit} entries, over this runner's limit for one archive \
             (max_archive_files in its [[runners]] entry of config.toml): archive fewer, larger files, or ask \
             the runner's administrator to raise max_archive_files"
        ),
        e => e.to_string(),
    }
}

/// Whether `e` is the bound (rather than a broken archive or file system).
pub(crate) fn is_limit(e: &runwright_archive::Error) -> bool {
    matches!(
        e,
        runwright_archive::Error::TooManyFiles { .. }
            | runwright_archive::Error::TooManyEntries { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_bound_names_the_key_to_raise_and_how_to_get_under_it() {
        let files = runwright_archive::Error::TooManyFiles { limit: 2000 };
        assert!(is_limit(&files));
        assert_eq!(
            explain(&files, "artifacts"),
            "artifacts: more than 2000 files, directories and symlinks match, over this runner's limit for one \
             archive (max_archive_files in its [[runners]] entry of config.toml). Archive fewer, larger files \
             (for example, pack the directory into one tar file in the job's script and archive that), or ask \
             the runner's administrator to raise max_archive_files"
        );
        let entries = runwright_archive::Error::TooManyEntries {
            archive: PathBuf::from("/tmp/a.zip"),
            limit: 2000,
        };
        assert!(explain(&entries, "cache").starts_with(
            "the archive holds more than 2000 entries, over this runner's limit for one archive (max_archive_files"
        ));
        let other = runwright_archive::Error::Invalid("bad".into());
        assert!(!is_limit(&other));
        assert_eq!(explain(&other, "cache"), "bad");
    }
}
