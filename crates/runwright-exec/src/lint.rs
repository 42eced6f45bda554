//! `runwright lint`: validates a `.gitlab-ci.yml` and prints the fully resolved configuration, like GitLab's
//! merged YAML ("Full configuration"): includes inlined, `extends`, anchors and `!reference` resolved, hidden
//! jobs (templates) dropped.
//!
//! On an invalid file the error goes to stderr as the pipeline crate words it (with file and line) and
//! nothing goes to stdout, so `runwright lint > merged.yml` never leaves half a document; exit 2 (a configuration
//! error, [`crate::ExecError::InvalidCi`]).

use anyhow::Context;
use runwright_pipeline::Pipeline;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `runwright lint` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// The CI file, relative to the top of the checkout.
    pub file: PathBuf,
    /// The checkout (default: the current directory).
    pub directory: Option<PathBuf>,
    /// The resolved configuration as JSON instead of YAML.
    pub json: bool,
}

pub fn run(args: &LintOptions) -> anyhow::Result<ExitCode> {
    let dir = match &args.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    // Include `rules:` need a pipeline to be evaluated for: a push of the current branch, the usual case.
    let (root, ctx) = crate::context::lint_context(&dir, &args.file)?;
    let resolved = Pipeline::load(&root, &args.file)
        .and_then(|c| c.resolve(&ctx))
        .map_err(crate::ExecError::InvalidCi)?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&resolved.merged_json())?;
        json.push('\n');
        json
    } else {
        resolved.merged_yaml()
    };
    // `runwright lint | head`: the closed pipe goes up with the rest; the binary ends quietly with 0 on it.
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the configuration to stdout")?;
    Ok(ExitCode::SUCCESS)
}
