//! Client for GitLab's runner API (reference `protocol.md` §0–§4).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod types;
