//! `config.toml` (runwright-config): the file an administrator writes, read at start and on every reload.
use std::path::Path;

use crate::distinctive;

/// Parses the input as `config.toml`. Properties: no panic; errors and warnings render; a config that loads
/// never shows a runner token in its `Debug` output (what logs would print).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match runwright_config::parse(text, Path::new("config.toml")) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let _ = w.to_string();
            }
            let shown = format!("{:?}", loaded.config);
            for runner in &loaded.config.runners {
                if distinctive(&runner.token, text) {
                    assert!(
                        !shown.contains(&runner.token),
                        "runner token in Debug output: {shown}"
                    );
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
