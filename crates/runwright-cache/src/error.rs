//! The crate's one error type. Every variant names what failed (a path, an object, a URL with
//! its query string removed) and, where there is one, what to do about it. Presigned URLs carry
//! their signature and credential in the query string, so no variant ever holds a full URL.

use std::path::PathBuf;

/// Errors from cache keys, the local layout, the S3 cache and the admin operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A request header the caller gave (the helper's `cache-archiver --header`) is not a valid HTTP header.
    #[error("--header {0}")]
    Header(String),
    /// `[runners.cache]` cannot work as written.
    #[error("[runners.cache] {0}")]
    Config(String),
    /// A distributed cache type or option runwright does not implement yet; callers print this
    /// as a warning and keep caches local.
    #[error("[runners.cache] {0} is not supported yet: caches stay local to this runner")]
    Unsupported(String),
    /// The key cannot name an object inside the project's prefix.
    #[error("cache key {key:?}: {reason}")]
    ObjectName {
        /// The storage key.
        key: String,
        /// Why it is refused, and what to change.
        reason: String,
    },
    /// The key was unusable (see [`crate::key::KeyError`]).
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    /// The HTTP request itself failed (connection, timeout, body stream).
    #[error("{method} {url}: {source}")]
    Http {
        /// `GET`, `HEAD` or `PUT`.
        method: &'static str,
        /// The URL without its query string.
        url: String,
        /// reqwest's error, with its URL removed.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}{detail}")]
    Status {
        /// `GET`, `HEAD` or `PUT`.
        method: &'static str,
        /// The URL without its query string.
        url: String,
        /// The status code.
        status: u16,
        /// `: <Code>: <Message>` from an S3 error body, when there is one.
        detail: String,
    },
    /// An S3 API call (list, delete, presign) failed.
    #[error("S3 bucket {bucket:?}: {operation}: {source}")]
    S3 {
        /// The bucket.
        bucket: String,
        /// What was being done, with the object or prefix.
        operation: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
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

    pub(crate) fn http(method: &'static str, url: &str, source: reqwest::Error) -> Error {
        Error::Http {
            method,
            url: strip_query(url),
            // reqwest puts the whole URL, signature included, into its Display.
            source: source.without_url(),
        }
    }
}

/// `url` without its query string, fragment and user info: what may appear in logs and errors.
/// Presigned URLs carry `X-Amz-Signature` and `X-Amz-Credential` in the query.
pub fn strip_query(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            // Cannot fail for http(s) URLs; for the rest the URL is printed without them anyway.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        // Not a URL: keep what precedes any `?`, and never anything after an `@`.
        Err(_) => {
            let head = url.split(['?', '#']).next().unwrap_or_default();
            match head.rsplit_once('@') {
                Some((_, rest)) => rest.to_owned(),
                None => head.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_query_removes_signatures_and_user_info() {
        assert_eq!(
            strip_query("http://127.0.0.1:9000/b/o?X-Amz-Signature=abc&X-Amz-Credential=k#f"),
            "http://127.0.0.1:9000/b/o"
        );
        assert_eq!(strip_query("https://user:pw@host/p?q=1"), "https://host/p");
        assert_eq!(strip_query("not a url?secret=1"), "not a url");
    }
}
