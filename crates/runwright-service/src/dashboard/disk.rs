//! Disk use for the dashboard (issue 6): the builds and cache directories the shell runner entries use on this
//! host, and the runner-managed docker volumes (builds and caches of docker entries) when a daemon answers.
//! Walking a builds directory can take a while: one result is kept for [`FRESH`] and computed off the async
//! threads.

use super::Dashboard;
use runwright_config::Config;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one measurement is shown before the next is taken.
pub const FRESH: Duration = Duration::from_secs(30);

/// The host directories of the runner entries: (runner, kind, path).
fn host_dirs(config: &Config, working_dir: &Path) -> Vec<(String, &'static str, PathBuf)> {
    let mut out = Vec::new();
    for r in config.runners.iter().filter(|r| r.executor == "shell") {
        let dir = |set: Option<&str>, default: &str| match set.filter(|s| !s.is_empty()) {
            Some(d) => working_dir.join(d),
            None => working_dir.join(default),
        };
        out.push((
            r.name.clone(),
            "builds",
            dir(r.builds_dir.as_deref(), "builds"),
        ));
        out.push((
            r.name.clone(),
            "cache",
            dir(r.cache_dir.as_deref(), "cache"),
        ));
    }
    out
}

/// Bytes of regular files under `dir` (not following links); `None` when it does not exist.
fn du(dir: &Path) -> Option<u64> {
    if !dir.exists() {
        return None;
    }
    Some(
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
    )
}

async fn volumes(config: &Config) -> Value {
    // Each daemon the docker entries name (a host of their own, or the default).
    let hosts: BTreeSet<Option<String>> = config
        .runners
        .iter()
        .filter(|r| r.executor == "docker")
        .map(|r| {
            r.docker
                .as_ref()
                .and_then(|d| d.host.clone())
                .filter(|h| !h.is_empty())
        })
        .chain(std::iter::once(None))
        .collect();
    let mut daemons = Vec::new();
    for host in hosts {
        let shown = host.clone().unwrap_or_else(|| "default".into());
        let entry = match runwright_docker::connect(host.as_deref(), None, false).await {
            Err(e) => json!({ "host": shown, "available": false, "error": e.with_hint() }),
            Ok(docker) => match runwright_docker::admin::list(&docker, &Default::default()).await {
                Err(e) => json!({ "host": shown, "available": false, "error": e.with_hint() }),
                Ok(list) => {
                    let total: u64 = list.iter().filter_map(|v| v.size_bytes).sum();
                    json!({ "host": shown, "available": true, "volumes": list, "total_bytes": total })
                }
            },
        };
        daemons.push(entry);
    }
    Value::Array(daemons)
}

async fn measure(d: &Dashboard) -> Value {
    let config = d.config();
    let dirs = host_dirs(&config, &d.working_dir);
    let measured = tokio::task::spawn_blocking(move || {
        dirs.into_iter()
            .map(|(runner, kind, path)| {
                let bytes = du(&path);
                json!({ "runner": runner, "kind": kind, "path": path, "exists": bytes.is_some(), "bytes": bytes })
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    // Listing volumes walks each one for its size: off the async threads too.
    let handle = tokio::runtime::Handle::current();
    let docker = tokio::task::spawn_blocking(move || handle.block_on(volumes(&config)))
        .await
        .unwrap_or_default();
    json!({
        "directories": measured,
        "docker": docker,
        "measured_at": crate::history::format_ms(runwright_journal::now_ms()),
    })
}

/// The latest measurement, taken again when older than [`FRESH`].
pub async fn usage(d: &Dashboard) -> Value {
    let mut cached = d.disk.lock().await;
    if let Some((at, v)) = cached.as_ref() {
        if at.elapsed() < FRESH {
            return v.clone();
        }
    }
    let v = measure(d).await;
    *cached = Some((Instant::now(), v.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_entries_have_builds_and_cache_dirs_and_sizes_add_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = runwright_config::parse(
            "[[runners]]\nname = \"a\"\nurl = \"http://x/\"\ntoken = \"t\"\nexecutor = \"shell\"\ncache_dir = \"/c\"\n\
             [[runners]]\nname = \"d\"\nurl = \"http://x/\"\ntoken = \"u\"\nexecutor = \"docker\"\n",
            Path::new("config.toml"),
        )
        .expect("config")
        .config;
        let dirs = host_dirs(&cfg, tmp.path());
        assert_eq!(
            dirs,
            vec![
                ("a".into(), "builds", tmp.path().join("builds")),
                ("a".into(), "cache", PathBuf::from("/c")),
            ]
        );
        std::fs::create_dir_all(tmp.path().join("builds/x")).expect("dir");
        std::fs::write(tmp.path().join("builds/x/f"), vec![0u8; 1000]).expect("file");
        std::fs::write(tmp.path().join("builds/g"), vec![0u8; 24]).expect("file");
        assert_eq!(du(&tmp.path().join("builds")), Some(1024));
        assert_eq!(du(&tmp.path().join("nope")), None);
    }
}
