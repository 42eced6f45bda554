//! `runwright volumes list|prune`: the runner-managed volumes on this Docker host, which GitLab's runner leaves
//! to hand-written scripts. Only volumes labelled `com.gitlab.gitlab-runner.managed=true` are ever touched.

use crate::names::LABEL_PREFIX;
use crate::DockerError;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use bollard::Docker;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Marks a volume as used now: the mtime of its directory above `_data`, which Docker itself never changes,
/// so nothing appears inside the volume.
pub fn touch(mountpoint: &Path) {
    if let Some(dir) = mountpoint.parent() {
        if let Ok(f) = std::fs::File::open(dir) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// `cache` (kept between jobs) or `temporary` (left by a job that never ended).
    pub kind: String,
    /// The runner's short token.
    pub runner: String,
    pub project: Option<i64>,
    /// `CI_CONCURRENT_PROJECT_ID` of the jobs that use it.
    pub slot: Option<usize>,
    /// The container path it backs (`/cache`, `/builds`, …).
    pub destination: String,
    pub mountpoint: String,
    pub size_bytes: Option<u64>,
    /// Seconds since the epoch of the last job that used it (or its creation).
    pub last_used: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A short token or its prefix.
    pub runner: Option<String>,
    pub project: Option<i64>,
    pub older_than: Option<Duration>,
}

impl Filter {
    fn matches(&self, v: &VolumeInfo, now: SystemTime) -> bool {
        if let Some(r) = &self.runner {
            if !v.runner.starts_with(r.as_str()) {
                return false;
            }
        }
        if let Some(p) = self.project {
            if v.project != Some(p) {
                return false;
            }
        }
        if let Some(age) = self.older_than {
            let now = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match v.last_used {
                Some(t) if now - t >= age.as_secs() as i64 => {}
                _ => return false,
            }
        }
        true
    }
}

/// The runner-managed volumes that match, by name.
pub async fn list(docker: &Docker, filter: &Filter) -> Result<Vec<VolumeInfo>, DockerError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_PREFIX}.managed=true")],
    )]);
    let resp = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| DockerError::daemon("listing volumes", e))?;
    let now = SystemTime::now();
    let mut out: Vec<VolumeInfo> = resp
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let label = |k: &str| v.labels.get(&format!("{LABEL_PREFIX}.{k}")).cloned();
            let mountpoint = Path::new(&v.mountpoint);
            let last_used = mountpoint
                .parent()
                .and_then(|d| std::fs::metadata(d).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            VolumeInfo {
                kind: label("type").unwrap_or_default(),
                runner: label("runner.id").unwrap_or_default(),
                project: label("project.id").and_then(|p| p.parse().ok()),
                slot: label("project.runner_id").and_then(|p| p.parse().ok()),
                destination: label("destination").unwrap_or_default(),
                size_bytes: mountpoint.is_dir().then(|| dir_size(mountpoint)),
                mountpoint: v.mountpoint.clone(),
                last_used,
                name: v.name,
            }
        })
        .filter(|v| filter.matches(v, now))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Removes one volume; a volume a container still uses is refused by Docker, never forced.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    Ok(docker
        .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
        .await?)
}
