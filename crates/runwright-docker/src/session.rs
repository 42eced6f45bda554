//! A docker job's session: the containers, network, volumes and mount table `prepare` made, the stages run in
//! the build container (the predefined script stages in the runner-side shell), and the cleanup.

use crate::engine_api;
use crate::names::JobNames;
use crate::volumes::MountTable;
use crate::DockerError;
use async_trait::async_trait;
use bollard::Docker;
use runwright_engine::{ExecutorError, ExecutorSession};
use runwright_trace::TraceBuffer;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct DockerSession {
    pub(crate) docker: Docker,
    pub(crate) names: JobNames,
    pub(crate) build_container: Option<String>,
    /// Every container made for the job (services, build), removed at cleanup.
    pub(crate) containers: Vec<String>,
    pub(crate) network: Option<String>,
    pub(crate) temporary_volumes: Vec<String>,
    pub(crate) mounts: MountTable,
    /// The runner-side shell for the predefined script stages.
    pub(crate) host_shell: Option<Box<dyn ExecutorSession>>,
    pub(crate) kill_grace: Duration,
    pub(crate) host: String,
    /// With a non-root container user: the host dirs (project, temp) whose files the runner wrote and the
    /// user's stages must be able to change, opened up once before the first stage in the container.
    pub(crate) open_up: Vec<PathBuf>,
}

/// Whether a container user (`user`, `uid[:gid]`, `name[:group]`) is root; `None` is the image's own user,
/// which GitLab's runner also treats as root (its helper writes with umask 0000 for everyone else).
pub(crate) fn is_root(user: Option<&str>) -> bool {
    match user.map(|u| u.split(':').next().unwrap_or(u)) {
        None | Some("") | Some("0") | Some("root") => true,
        Some(_) => false,
    }
}

/// Makes what the runner wrote (sources, caches, artifacts, temp files) writable by any user, as GitLab's
/// helper does by running with umask 0000: directories 0777, files gain rw for all. Symlinks are never
/// followed, so a repository cannot point this at files outside the tree.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode();
        let wanted = if meta.is_dir() {
            mode | 0o777
        } else if meta.is_file() {
            mode | 0o666
        } else {
            continue;
        };
        if wanted != mode {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(wanted));
        }
    }
}
#[async_trait]
impl ExecutorSession for DockerSession {
    async fn run_stage(
        &mut self,
        stage: &str,
        script: &str,
        trace: &TraceBuffer,
        cancel: CancellationToken,
    ) -> Result<i32, ExecutorError> {
        if matches!(stage, "prepare_script" | "get_sources" | "clear_worktree") {
            if let Some(host) = self.host_shell.as_mut() {
                return host.run_stage(stage, script, trace, cancel).await;
            }
        }
        let container = self
            .build_container
            .clone()
            .ok_or(DockerError::NoBuildContainer)?;
        let dirs = std::mem::take(&mut self.open_up);
        if !dirs.is_empty() {
            tokio::task::spawn_blocking(move || dirs.iter().for_each(|d| open_up(d)))
                .await
                .map_err(|source| DockerError::OpenUp { source })?;
        }
        engine_api::run_stage(
            &self.docker,
            &container,
            script,
            trace,
            &cancel,
            self.kill_grace,
        )
        .await
        .map_err(ExecutorError::from)
    }

    fn host_name(&self) -> Option<String> {
        Some(format!("{} via {}", self.names.base, self.host))
    }

    async fn cleanup(&mut self) {
        if let Some(host) = self.host_shell.as_mut() {
            host.cleanup().await;
        }
        // Services and the build container first, force-removed with their anonymous volumes as GitLab's runner
        // does (executors/docker `removeContainer`): the job's stages are over, a canceled one was already
        // terminated with its grace period, and services get none. Then the network and temporary volumes.
        let containers = std::mem::take(&mut self.containers);
        futures::future::join_all(
            containers
                .iter()
                .map(|c| engine_api::remove_container(&self.docker, c)),
        )
        .await;
        if let Some(net) = self.network.take() {
            if let Err(e) = self.docker.remove_network(&net).await {
                if !engine_api::is_not_found(&e) {
                    tracing::warn!(
                        network = net,
                        "removing network: {}",
                        engine_api::daemon_message(&e)
                    );
                }
            }
        }
        for v in std::mem::take(&mut self.temporary_volumes) {
            let _ = self
                .docker
                .remove_volume(
                    &v,
                    Some(bollard::query_parameters::RemoveVolumeOptions { force: true }),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn root_users() {
        assert!(is_root(None));
        assert!(is_root(Some("root:root")));
        assert!(is_root(Some("0")));
        assert!(!is_root(Some("1000:1000")));
        assert!(!is_root(Some("nobody")));
    }

    #[test]
    fn open_up_makes_the_tree_writable_and_never_follows_symlinks() {
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "x").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let tree = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tree.path().join("src")).expect("mkdir");
        std::fs::write(tree.path().join("src/main.c"), "int main;").expect("write");
        std::fs::set_permissions(
            tree.path().join("src/main.c"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink(&secret, tree.path().join("link")).expect("symlink");
        open_up(tree.path());
        let mode = |p: &Path| p.metadata().expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&tree.path().join("src")), 0o777);
        assert_eq!(mode(&tree.path().join("src/main.c")), 0o777);
        assert_eq!(mode(&secret), 0o600);
    }
}
