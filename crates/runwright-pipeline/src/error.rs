//! The crate's one error type.
//!
//! Every error about the CI file carries where it is: the file, the YAML path (`build.script[2]`) and, when
//! the line locator finds it, the line. GitLab's own wording is kept where users know it (`jobs:build config
//! contains unknown keys: scirpt`, `undefined need: build`).
use std::fmt;
use std::path::PathBuf;

/// Where in the CI configuration an error is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file, relative to the project directory when it is inside it.
    pub file: Option<PathBuf>,
    /// The YAML path, e.g. `build.script[2]`; empty for the whole file.
    pub path: String,
    /// 1-based line, when found.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}", file.display())?,
            (Some(file), None) => write!(f, "{}", file.display())?,
            (None, Some(line)) => write!(f, "line {line}")?,
            (None, None) => {}
        }
        if !self.path.is_empty() {
            if self.file.is_some() || self.line.is_some() {
                f.write_str(": ")?;
            }
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

/// An error of the pipeline model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("{}:{line}:{column}: YAML syntax error: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The configuration is invalid.
    #[error("{location}: {message}")]
    Config {
        /// Where.
        location: Location,
        /// GitLab-like message.
        message: String,
    },
    /// An include that needs GitLab (remote, project, template, component).
    #[error("{location}: `include:{kind}` ({target}) is not available offline: only local includes can be resolved without GitLab")]
    IncludeOffline {
        /// Where the include is.
        location: Location,
        /// `remote`, `project`, `template` or `component`.
        kind: String,
        /// What it points at.
        target: String,
    },
    /// A `rules:if` / `only:variables` expression is invalid.
    #[error(
        "{location}: invalid expression syntax at column {column} of `{expression}`: {message}"
    )]
    Expression {
        /// Where the expression is.
        location: Location,
        /// The expression.
        expression: String,
        /// 1-based column of the offending token.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The pipeline cannot be created (needs errors and the like); every problem is listed, as GitLab does.
    #[error("{}", errors.join("\n"))]
    Plan {
        /// GitLab-like messages, one per problem.
        errors: Vec<String>,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(location: Location, message: impl Into<String>) -> Self {
        Error::Config {
            location,
            message: message.into(),
        }
    }
}
