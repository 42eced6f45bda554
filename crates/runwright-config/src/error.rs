//! What can go wrong reading `config.toml`, and the warnings that do not stop it.
//!
//! Every error's `Display` is one complete line that names the file (and, when the problem is in
//! the file, the line, column and key), so the binary can print it as is; what to do about it, where
//! there is something, is [`ConfigError::hint`]. Errors never contain a
//! runner token: values of `token` keys are replaced by their short form before a message is
//! built (see `load.rs`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file does not exist.
    #[error("{}: config file not found", path.display())]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },

    /// The config file exists but cannot be read (permissions, not UTF-8, …).
    #[error("{}: cannot read config file: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        error: io::Error,
    },

    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The TOML parser's message.
        message: String,
    },

    /// A key has a value of the wrong type, or a value GitLab's runner does not accept.
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value, in characters.
        column: usize,
        /// Path of the key, e.g. `runners[0].limit`.
        key: String,
        /// What is wrong, e.g. `invalid type: string "four", expected an integer`.
        message: String,
    },

    /// A required key is missing from a table (e.g. `url` in a `[[runners]]` entry).
    #[error("{}:{line}:{column}: {table}: missing required key '{key}'", path.display())]
    MissingKey {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the table's header (e.g. the `[[runners]]` line).
        line: usize,
        /// 1-based column of the table's header.
        column: usize,
        /// Path of the table, e.g. `runners[1]`.
        table: String,
        /// The missing key, e.g. `token`.
        key: String,
    },

    /// The `.runner_system_id` file exists but cannot be read.
    #[error("{}: cannot read runner system ID file: {error}", path.display())]
    SystemIdRead {
        /// The `.runner_system_id` file.
        path: PathBuf,
        /// The underlying I/O error.
        error: io::Error,
    },

    /// A new system id was generated but could not be saved. GitLab's runner goes on with the
    /// generated id after a warning; `id` lets a caller do the same.
    #[error("{}: cannot save runner system ID {id}: {error}", path.display())]
    SystemIdWrite {
        /// The `.runner_system_id` file.
        path: PathBuf,
        /// The generated id, usable for this run.
        id: String,
        /// The underlying I/O error.
        error: io::Error,
    },
}

/// What to do about a config file that is not found, printed by the binary as a `hint:` line of its own.
const NOT_FOUND_HINT: &str = "give its path with -c/--config";

impl ConfigError {
    /// What the user can do about it, when there is something to say beyond the message (the binary prints it
    /// as a `hint:` line).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ConfigError::NotFound { .. } => Some(NOT_FOUND_HINT),
            _ => None,
        }
    }
}

/// Something in the file that GitLab's runner would accept but that is probably a mistake
/// (an unknown key, an `environment` entry without `=`, …). Loading goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line the warning is about.
    pub line: usize,
    /// What is wrong, e.g. `unknown key 'runners[0].docker.imagee' (ignored)`.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}
