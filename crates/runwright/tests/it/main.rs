//! Integration tests: the real `runwright` binary against a coordinator that follows GitLab's documented
//! runner API, real git repositories over loopback HTTP, real processes. One test binary (ripgrep's layout).

mod harness;

mod bounds;
mod browser;
mod cancel;
mod cgroup;
mod config;
mod dashboard;
mod docker;
mod exec;
mod exec_live;
mod exec_served;
mod fidelity;
mod jobs;
mod journal;
mod lint;
mod mock_compat;
mod ops;
mod polling;
mod registry;
mod secrets;
mod signals;
mod soak;
mod sources;
mod tls;
mod trace;
mod transfer;
