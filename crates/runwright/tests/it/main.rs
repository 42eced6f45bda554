//! Integration tests: the real `runwright` binary against a coordinator that follows GitLab's documented
//! runner API, real git repositories over loopback HTTP, real processes. One test binary (ripgrep's layout).

mod harness;

mod bounds;
mod cancel;
mod config;
mod docker;
mod exec;
mod jobs;
mod journal;
mod lint;
mod mock_compat;
mod ops;
mod polling;
mod registry;
mod signals;
mod soak;
mod sources;
mod trace;
mod transfer;
