//! Static declarations shared by every runwright crate: the environment variables runwright reads
//! ([`env_vars`]), each with what it means and who reads it (as uv's `uv-static`).

pub mod env_vars;
