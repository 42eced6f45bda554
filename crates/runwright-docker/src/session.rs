//! A docker job's session: the containers, network, volumes and mount table `prepare` made, the stages run in
//! the helper container (the predefined stages) or the build container (the user's stages), and the cleanup.

use crate::engine_api;
use crate::names::JobNames;
use crate::DockerError;
use async_trait::async_trait;
use bollard::Docker;
use runwright_engine::{ExecutorError, ExecutorSession};
use runwright_trace::TraceBuffer;

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
    /// The helper container for the predefined stages; `None` for a job without predefined work, whose few
    /// predefined stages (an echo, an empty cleanup) run in the build container.
    pub(crate) helper: Option<crate::helper::Helper>,
    /// The builds dir, and so the project and temp dirs under it, is a volume of this job alone, removed at
    /// cleanup (no bind, no mount below it).
    pub(crate) builds_temporary: bool,
    /// With `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` and a non-root numeric build user: `uid[:gid]` and the dirs
    /// (project, temp) the helper gives to that user before the first build container stage.
    pub(crate) chown: Option<(String, Vec<String>)>,
    pub(crate) kill_grace: Duration,
    pub(crate) host: String,
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
        if crate::helper::is_predefined(stage) {
            if let Some(helper) = self.helper.as_mut() {
                return helper
                    .run_stage(&self.docker, script, trace, &cancel, self.kill_grace)
                    .await
                    .map_err(ExecutorError::from);
            }
            // A job without a helper has no sources, caches or artifacts: its cleanup only removes file
            // variables and git leftovers from the builds dir, which is the job's own volume and goes with it at
            // cleanup, so a container start for it is saved (bench/docker.md).
            if stage == "cleanup_file_variables" && self.builds_temporary {
                return Ok(0);
            }
        }
        let container = self
            .build_container
            .clone()
            .ok_or(DockerError::NoBuildContainer)?;
        if let (Some((owner, dirs)), Some(helper)) = (self.chown.take(), self.helper.as_mut()) {
            // runner executors/docker/docker_command.go `changeFilesOwnership`: without umask 0000 the files
            // the helper wrote are root's, so they are given to the build container's user.
            // The dirs may come from the job (`GIT_CLONE_PATH`): every word is quoted.
            use runwright_engine::script::shell_escape as q;
            let mut script = String::new();
            for dir in &dirs {
                let said = format!("Changing ownership of files at \"{dir}\" to {owner}");
                script.push_str(&format!(
                    "echo {}\nchown -RP -- {} {} || true\n",
                    q(&said),
                    q(&owner),
                    q(dir)
                ));
            }
            helper
                .run_stage(&self.docker, &script, trace, &cancel, self.kill_grace)
                .await
                .map_err(ExecutorError::from)?;
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
        // Services, the helper and the build container first, force-removed with their anonymous volumes as GitLab's runner
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
