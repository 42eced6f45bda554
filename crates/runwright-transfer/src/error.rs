//! What writing a transfer stage can fail with, in the words the job log shows: a cache problem becomes a
//! warning in the stage, an unknown `cache:policy` for a restore fails the job. What the helper meets while it
//! moves files (archives, HTTP) it reports itself, in the stage's output.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `cache:policy` other than GitLab's three, after expansion (runner common/spec/spec.go `CheckPolicy`).
    #[error("unknown cache policy {0:?} (use pull, push or pull-push)")]
    UnknownCachePolicy(String),
    /// The cache's keys or bucket (presigning a URL).
    #[error(transparent)]
    Cache(#[from] runwright_cache::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_gitlab_accepts() {
        assert_eq!(
            Error::UnknownCachePolicy("pul".into()).to_string(),
            "unknown cache policy \"pul\" (use pull, push or pull-push)"
        );
    }
}
