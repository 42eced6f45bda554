//! Integration tests of runwright-client against a fake GitLab on loopback (one test binary).

mod artifacts;
mod bounds;
mod client;
mod job_trace;
mod support;
mod trace_props;
