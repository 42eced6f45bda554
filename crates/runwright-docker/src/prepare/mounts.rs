//! The job's volumes and binds (reference `protocol.md` §10): runner-managed cache and temporary volumes (or
//! directories below `cache_dir`), the configured binds and named volumes, each entered in the session's mount
//! table so the runner finds on its own file system what the containers see (while the engine still moves
//! caches and artifacts in its own process; a remote daemon's volumes have no entry).

use super::Prep;
use crate::names;
use crate::session::DockerSession;
use crate::volumes::{self, VolumeSpec};
use crate::{admin, engine_api, DockerError};
use runwright_config::DockerConfig;
use runwright_engine::sources::GitStrategy;
use runwright_engine::PreparedJob;
use std::collections::HashMap;
use std::path::PathBuf;

impl DockerSession {
    /// The job's volumes: the configured ones, then the builds dir unless a bind already holds it. Each is
    /// entered in the mount table; returns the binds every container of the job gets.
    pub(super) async fn mount_volumes(&mut self, p: &Prep<'_>) -> Result<Vec<String>, DockerError> {
        let exec = p.exec;
        let protected = p.job.variables.value("CI_COMMIT_REF_PROTECTED") == Some("true");
        let mut specs = exec.volumes.clone();
        let builds_covered = specs
            .iter()
            .any(|v| volumes::is_within(&exec.builds_dir, v.destination()));
        let fetch = git_fetch(p.job);
        // Nothing mounted below the builds dir either: then all of it lives on the job's own builds volume.
        let nothing_below = !specs.iter().any(|v| {
            let d = v.destination();
            d != exec.builds_dir && volumes::is_within(d, &exec.builds_dir)
        });
        if !builds_covered {
            specs.push(VolumeSpec::Cache {
                destination: exec.builds_dir.clone(),
            });
        }
        let mut binds = Vec::new();
        for spec in &specs {
            let bind = match spec {
                VolumeSpec::Cache { destination } => {
                    // The builds dir outlives the job only for `fetch`, which reuses the previous checkout.
                    let fresh_builds = destination == &exec.builds_dir && !builds_covered && !fetch;
                    let temporary = p.cfg.disable_cache || fresh_builds;
                    if destination == &exec.builds_dir && !builds_covered && nothing_below {
                        self.builds_temporary = temporary;
                    }
                    self.mount_cache(p, destination, temporary, protected)
                        .await?
                }
                VolumeSpec::Bind {
                    source,
                    destination,
                    mode,
                } => {
                    self.mount_bind(p, spec, source, destination, mode.as_deref())
                        .await?
                }
            };
            binds.push(bind);
        }
        Ok(binds)
    }

    /// A runner-managed path: a directory below `cache_dir` when that is set, else a cache volume (or a
    /// temporary one, removed at cleanup); returns its bind.
    async fn mount_cache(
        &mut self,
        p: &Prep<'_>,
        destination: &str,
        temporary: bool,
        protected: bool,
    ) -> Result<String, DockerError> {
        if let Some(dir) = p.cfg.cache_dir.as_deref().filter(|d| !d.is_empty()) {
            let mut host = PathBuf::from(dir);
            host.push(&self.names.volume_prefix);
            host.push(format!(
                "{}{}",
                names::md5_hex(destination),
                if protected { "-protected" } else { "" }
            ));
            if let Err(source) = std::fs::create_dir_all(&host) {
                return Err(DockerError::CacheDir { path: host, source });
            }
            let bind = format!("{}:{destination}", host.display());
            self.mounts.add(destination, host);
            return Ok(bind);
        }
        let name = if temporary {
            self.names.temporary_volume(destination)
        } else {
            self.names.cache_volume(destination, protected)
        };
        let kind = if temporary { "temporary" } else { "cache" };
        let labels = names::labels(&p.labels, kind, &[("destination", destination.to_string())]);
        let mountpoint = self.volume(&name, labels, p.cfg).await?;
        if temporary {
            self.temporary_volumes.push(name.clone());
        }
        if let Some(mountpoint) = mountpoint {
            if !temporary {
                admin::touch(&mountpoint);
            }
            self.mounts.add(destination, mountpoint);
        }
        Ok(format!("{name}:{destination}"))
    }

    /// A configured `source:destination[:mode]`: a host directory (made if missing) or a named volume; returns
    /// its bind.
    async fn mount_bind(
        &mut self,
        p: &Prep<'_>,
        spec: &VolumeSpec,
        source: &str,
        destination: &str,
        mode: Option<&str>,
    ) -> Result<String, DockerError> {
        if let Some(host) = spec.host_source() {
            // Docker would create it too; the runner needs it before the first container exists.
            let _ = std::fs::create_dir_all(host);
            self.mounts.add(destination, host);
        } else {
            if let Some(mountpoint) = self.volume(source, HashMap::new(), p.cfg).await? {
                self.mounts.add(destination, mountpoint);
            }
        }
        Ok(match mode {
            Some(m) => format!("{source}:{destination}:{m}"),
            None => format!("{source}:{destination}"),
        })
    }

    /// Creates a volume when missing (labelled) and returns its mountpoint when the runner's file system has it
    /// (a local daemon); a remote daemon's volumes are reached through its containers only.
    async fn volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        cfg: &DockerConfig,
    ) -> Result<Option<PathBuf>, DockerError> {
        let existing = self.docker.inspect_volume(name).await;
        let volume = match existing {
            Ok(v) => v,
            Err(e) if engine_api::is_not_found(&e) => self
                .docker
                .create_volume(bollard::models::VolumeCreateRequest {
                    name: Some(name.to_string()),
                    driver: cfg.volume_driver.clone(),
                    driver_opts: (!cfg.volume_driver_ops.is_empty())
                        .then(|| cfg.volume_driver_ops.clone().into_iter().collect()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(|e| DockerError::daemon(format!("creating volume {name}"), e))?,
            Err(e) => return Err(DockerError::daemon(format!("inspecting volume {name}"), e)),
        };
        let mountpoint = PathBuf::from(&volume.mountpoint);
        Ok(mountpoint.is_dir().then_some(mountpoint))
    }
}

/// Whether the job fetches into its previous checkout: `GIT_STRATEGY` as the runner resolves it, an unknown
/// one being the project's default.
fn git_fetch(job: &PreparedJob) -> bool {
    match job.variables.value("GIT_STRATEGY").unwrap_or("") {
        "" => job.job.allow_git_fetch,
        v => GitStrategy::parse(v).map_or(job.job.allow_git_fetch, |s| s == GitStrategy::Fetch),
    }
}
