//! `runwright lint`: validates a `.gitlab-ci.yml` and prints the fully resolved configuration, like GitLab's
//! merged YAML ("Full configuration"): includes inlined, `extends`, anchors and `!reference` resolved, hidden
//! jobs (templates) dropped.
//!
//! On an invalid file the error goes to stderr as the pipeline crate words it (with file and line) and
//! nothing goes to stdout, so `runwright lint > merged.yml` never leaves half a document; exit 1.

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
    let resolved = match Pipeline::load(&root, &args.file).and_then(|c| c.resolve(&ctx)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: invalid CI configuration: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&resolved.merged_json())?;
        json.push('\n');
        json
    } else {
        resolved.merged_yaml()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `runwright lint | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing the configuration to stdout")
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
