//! Reading the root CI file: [`Pipeline::load`] parses it (anchors, aliases, `<<` merges) and keeps it with
//! the project directory; everything that depends on a pipeline (include rules, job rules) waits for
//! [`crate::PipelineConfig::resolve`].
use std::path::{Path, PathBuf};

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::yaml::{parse_file, Source};

/// Entry point of the crate.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline;

impl Pipeline {
    /// Reads `file` (relative to `project_dir`, usually `.gitlab-ci.yml`).
    pub fn load(project_dir: impl AsRef<Path>, file: impl AsRef<Path>) -> Result<PipelineConfig> {
        let project_dir = project_dir.as_ref().to_path_buf();
        let file = file.as_ref().to_path_buf();
        let full = project_dir.join(&file);
        let text = std::fs::read_to_string(&full).map_err(|source| Error::Io {
            file: full.clone(),
            source,
        })?;
        Self::from_str(project_dir, file, &text)
    }

    /// Parses CI YAML given as text, as if read from `file` in `project_dir` (local includes are read from
    /// `project_dir`).
    pub fn from_str(
        project_dir: impl Into<PathBuf>,
        file: impl Into<PathBuf>,
        text: &str,
    ) -> Result<PipelineConfig> {
        let file = file.into();
        let root = parse_file(text, &file)?;
        Ok(PipelineConfig::new(
            project_dir.into(),
            Source {
                file,
                text: text.to_string(),
            },
            root,
        ))
    }
}
