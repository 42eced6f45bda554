//! Argument groups several verbs share (a leaf: the verbs and `cli.rs` use it, it uses none of them).

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// Config file (default: /etc/gitlab-runner/config.toml as root, else ~/.gitlab-runner/config.toml).
    #[arg(short = 'c', long, env = runwright_static::env_vars::CONFIG_FILE)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(runwright_config::default_config_path)
    }
}
