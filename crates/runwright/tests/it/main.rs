//! Integration tests: the real `runwright` binary against a coordinator that follows GitLab's documented
//! runner API, real git repositories over loopback HTTP, real processes. One test binary (ripgrep's layout).
// The workspace denies printing (libraries log or return errors); tests print what they saw for `--nocapture` and on failure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod attackers;
mod harness;

mod bounds;
mod browser;
mod cancel;
mod cgroup;
mod cli;
mod config;
mod config_writes;
mod dashboard;
mod docker;
mod docker_helper;
mod exec;
mod exec_live;
mod exec_served;
mod fidelity;
mod file_count;
mod helper_verbs;
mod isolation;
mod jobs;
mod journal;
mod journal_bounds;
mod lint;
mod local_users;
mod mock_compat;
mod ops;
mod polling;
mod registry;
mod secrets;
mod shell_isolation;
mod signals;
mod soak;
mod sources;
mod terminal;
mod tls;
mod trace;
mod transfer;
