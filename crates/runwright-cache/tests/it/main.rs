//! Integration tests: the S3 cache against a real S3-compatible server (moto, see
//! `runwright_cache::testing`), and listing/clearing local and S3 caches.

mod admin;
mod s3;
mod support;
