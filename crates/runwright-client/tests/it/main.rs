//! Integration tests of runwright-client against a fake GitLab on loopback (one test binary).
// The workspace denies printing (libraries log or return errors); tests print what they saw for `--nocapture`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod artifacts;
mod bounds;
mod client;
mod job_trace;
mod support;
mod trace_props;
