//! The executor of a `[[runners]]` entry with `executor = "docker"`: its checked settings, the connection to the
//! daemon it opens once, what it tells the engine (features, directories, variables), and one session per job.

use crate::engine_api;
use crate::names::{self, JobNames};
use crate::session::DockerSession;
use crate::volumes::{self, VolumeSpec};
use crate::DockerError;
use async_trait::async_trait;
use bollard::Docker;
use runwright_api::types::FeaturesInfo;
use runwright_config::{DockerConfig, RunnerConfig};
use runwright_engine::feature_flags::FeatureFlags;
use runwright_engine::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct DockerExecutor {
    pub(crate) runner: RunnerConfig,
    pub(crate) volumes: Vec<VolumeSpec>,
    pub(crate) builds_dir: String,
    builds_shared: bool,
    kill_grace: Duration,
    client: tokio::sync::OnceCell<Docker>,
}

impl DockerExecutor {
    /// Checks the runner entry's docker settings; an error names the bad key. `_working_dir` (the service's
    /// working directory) is no longer used: nothing of a docker job runs on the host.
    pub fn new(
        runner: &RunnerConfig,
        _working_dir: PathBuf,
        kill_grace: Duration,
    ) -> Result<Self, DockerError> {
        let docker = runner.docker.clone().unwrap_or_default();
        let volumes = docker
            .volumes
            .iter()
            .map(|v| VolumeSpec::parse(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DockerError::Runner {
                runner: runner.name.clone(),
                source: Box::new(e),
            })?;
        let builds_dir = runner
            .builds_dir
            .clone()
            .filter(|d| !d.is_empty())
            .map(|d| volumes::normalize(&d))
            .unwrap_or_else(|| "/builds".to_string());
        // A bind of the builds dir (or a parent of it) is shared between jobs: project dirs get
        // `<short token>/<slot>/` (runner executors/docker `isHostMountedVolume`).
        let builds_shared = volumes.iter().any(|v| {
            matches!(v, VolumeSpec::Bind { .. }) && volumes::is_within(&builds_dir, v.destination())
        });
        Ok(Self {
            runner: runner.clone(),
            volumes,
            builds_dir,
            builds_shared,
            kill_grace,
            client: tokio::sync::OnceCell::new(),
        })
    }

    pub(crate) fn config(&self) -> &DockerConfig {
        static EMPTY: std::sync::OnceLock<DockerConfig> = std::sync::OnceLock::new();
        self.runner
            .docker
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(DockerConfig::default))
    }

    async fn client(&self) -> Result<Docker, DockerError> {
        let cfg = self.config();
        self.client
            .get_or_try_init(|| {
                engine_api::connect(
                    cfg.host.as_deref(),
                    cfg.tls_cert_path.as_deref(),
                    cfg.tls_verify,
                )
            })
            .await
            .cloned()
    }

    /// Whether the job gets a network of its own: only without `network_mode` and with
    /// `FF_NETWORK_PER_BUILD` (runner executors/docker/internal/networks/manager.go `Create`); otherwise its
    /// containers share the configured network or the daemon's default bridge, and the build container finds
    /// the services through `/etc/hosts` (GitLab's emulation of links).
    pub(crate) fn network_per_job(&self, flags: &FeatureFlags) -> bool {
        self.config()
            .network_mode
            .as_deref()
            .unwrap_or("")
            .is_empty()
            && flags.is_on(runwright_engine::feature_flags::NETWORK_PER_BUILD)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &str {
        "docker"
    }

    fn shell(&self) -> &str {
        "bash"
    }

    fn features(&self, f: &mut FeaturesInfo) {
        // runner executors/docker/docker_command.go `dockerFeaturesUpdater`, less the session/terminal server and
        // native steps (a `run:` job goes through the step-runner shim, service/job_request.rs).
        f.variables = true;
        f.image = true;
        f.services = true;
        f.service_variables = true;
        f.service_multiple_aliases = true;
        // `executor_opts.docker` `platform` and `user` of the image and of services are honoured (policy.rs).
        f.image_executor_opts = true;
        f.service_executor_opts = true;
        f.shared = false;
    }

    fn default_builds_dir(&self) -> PathBuf {
        PathBuf::from(&self.builds_dir)
    }

    fn builds_dir_shared(&self) -> bool {
        self.builds_shared
    }

    // runner executors/docker/docker_command.go `newDockerOptions`.
    fn default_custom_build_dir_enabled(&self) -> bool {
        true
    }

    fn default_safe_directory_checkout(&self) -> bool {
        true
    }

    fn default_cache_dir(&self) -> PathBuf {
        PathBuf::from("/cache")
    }

    fn job_variables(
        &self,
        job: &runwright_api::types::JobResponse,
        slot: usize,
    ) -> Vec<(String, String)> {
        // runner common/build.go `GetAllVariables`: only with FF_NETWORK_PER_BUILD.
        // Asked while the engine plans the job's variables, before it resolved the job's flags.
        let flags =
            runwright_engine::feature_flags::JobSettings::of(&self.runner, job).feature_flags;
        if !self.network_per_job(&flags) {
            return Vec::new();
        }
        vec![(
            "CI_BUILD_NETWORK_NAME".to_string(),
            names::network_name(
                &self.runner.short_token(),
                job.job_info.project_id,
                slot,
                job.id,
            ),
        )]
    }

    fn shared_environment(&self) -> bool {
        false
    }

    fn description(&self) -> String {
        String::new()
    }

    async fn prepare(&self, job: &PreparedJob) -> Result<Box<dyn ExecutorSession>, ExecutorError> {
        let docker = self.client().await?;
        let names = JobNames::new(
            &self.runner.token,
            &self.runner.short_token(),
            &job.system_id,
            job.job.job_info.project_id,
            job.concurrent_project_id,
            job.job_id,
        );
        let mut session = DockerSession {
            docker,
            names,
            build_container: None,
            containers: Vec::new(),
            network: None,
            temporary_volumes: Vec::new(),
            helper: None,
            builds_temporary: false,
            chown: None,
            kill_grace: self.kill_grace,
            host: hostname(),
        };
        match session.prepare(self, job).await {
            Ok(()) => Ok(Box::new(session)),
            Err(e) => {
                session.cleanup().await;
                Err(if job.cancel.is_cancelled() {
                    ExecutorError::Canceled
                } else {
                    e.into()
                })
            }
        }
    }
}
