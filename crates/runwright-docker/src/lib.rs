//! The docker executor (reference `protocol.md` §7.1, §8.4, §10): each job gets its image pulled by policy, its
//! runner-managed volumes, a network of its own with its services on it, and a build container that runs the
//! user's stages; everything carries GitLab's names and `com.gitlab.gitlab-runner.*` labels and is removed when
//! the job ends, however it ends.
//!
//! GitLab runs the predefined stages (sources, caches, artifacts) in a helper container from its registry. No
//! registry is needed here: the runner performs them itself, on the job's volumes and binds as its own file
//! system sees them (`ExecutorSession::host_path`), so job images need neither git nor a shell for them. That
//! needs the runner on the Docker host with access to the volumes' mountpoints (as root, like GitLab's own
//! service); a remote `host` fails the job with a message saying so.

pub mod admin;
mod auth;
mod engine_api;
mod host_config;
pub mod leftovers;
pub mod names;
pub mod policy;
mod services;
pub mod volumes;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use names::{JobNames, LabelSource};
use runwright_client::failure_reason::FailureReason;
use runwright_client::types::FeaturesInfo;
use runwright_config::{DockerConfig, RunnerConfig};
use runwright_engine::sources::GitStrategy;
use runwright_engine::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use runwright_trace::TraceBuffer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use volumes::{MountTable, VolumeSpec};

pub use bollard;
pub use engine_api::connect;

/// A yellow warning line in the trace, as GitLab prints them.
pub(crate) fn warn(trace: &TraceBuffer, text: &str) {
    trace.write(format!("\x1b[0;33mWARNING: {text}\x1b[0;m\n").as_bytes());
}

/// GitLab's shell detection for containers (runner shells/bash.go `BashDetectShellScript`): the first bash or
/// sh found runs the stage script it reads on stdin.
const DETECT_SHELL: &str = r#"if [ -x /usr/local/bin/bash ]; then
	exec /usr/local/bin/bash
elif [ -x /usr/bin/bash ]; then
	exec /usr/bin/bash
elif [ -x /bin/bash ]; then
	exec /bin/bash
elif [ -x /usr/local/bin/sh ]; then
	exec /usr/local/bin/sh
elif [ -x /usr/bin/sh ]; then
	exec /usr/bin/sh
elif [ -x /bin/sh ]; then
	exec /bin/sh
elif [ -x /busybox/sh ]; then
	exec /busybox/sh
else
	echo shell not found
	exit 1
fi
"#;

#[derive(Debug)]
pub struct DockerExecutor {
    runner: RunnerConfig,
    volumes: Vec<VolumeSpec>,
    builds_dir: String,
    builds_shared: bool,
    kill_grace: Duration,
    working_dir: PathBuf,
    client: tokio::sync::OnceCell<Docker>,
}

impl DockerExecutor {
    /// Checks the runner entry's docker settings; an error names the bad key.
    pub fn new(
        runner: &RunnerConfig,
        working_dir: PathBuf,
        kill_grace: Duration,
    ) -> Result<Self, String> {
        let docker = runner.docker.clone().unwrap_or_default();
        let volumes = docker
            .volumes
            .iter()
            .map(|v| VolumeSpec::parse(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("runner {:?}: [runners.docker] {e}", runner.name))?;
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
            working_dir,
            client: tokio::sync::OnceCell::new(),
        })
    }

    fn config(&self) -> &DockerConfig {
        static EMPTY: std::sync::OnceLock<DockerConfig> = std::sync::OnceLock::new();
        self.runner
            .docker
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(DockerConfig::default))
    }

    async fn client(&self) -> Result<Docker, String> {
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

    fn network_per_job(&self) -> bool {
        self.config()
            .network_mode
            .as_deref()
            .unwrap_or("")
            .is_empty()
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
        job: &runwright_client::types::JobResponse,
        slot: usize,
    ) -> Vec<(String, String)> {
        if !self.network_per_job() {
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
        let docker = self.client().await.map_err(ExecutorError::System)?;
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
            mounts: MountTable::default(),
            host_shell: None,
            kill_grace: self.kill_grace,
            host: hostname(),
            open_up: Vec::new(),
        };
        match session.prepare(self, job).await {
            Ok(()) => Ok(Box::new(session)),
            Err(e) => {
                session.cleanup().await;
                Err(if job.cancel.is_cancelled() {
                    ExecutorError::Canceled
                } else {
                    e
                })
            }
        }
    }
}

pub struct DockerSession {
    docker: Docker,
    names: JobNames,
    build_container: Option<String>,
    /// Every container made for the job (services, build), removed at cleanup.
    containers: Vec<String>,
    network: Option<String>,
    temporary_volumes: Vec<String>,
    mounts: MountTable,
    /// The runner-side shell for the predefined script stages.
    host_shell: Option<Box<dyn ExecutorSession>>,
    kill_grace: Duration,
    host: String,
    /// With a non-root container user: the host dirs (project, temp) whose files the runner wrote and the
    /// user's stages must be able to change, opened up once before the first stage in the container.
    open_up: Vec<PathBuf>,
}

/// Whether a container user (`user`, `uid[:gid]`, `name[:group]`) is root; `None` is the image's own user,
/// which GitLab's runner also treats as root (its helper writes with umask 0000 for everyone else).
fn is_root(user: Option<&str>) -> bool {
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

fn config_error(msg: impl Into<String>) -> ExecutorError {
    ExecutorError::Failed(FailureReason::RunnerConfigurationError, msg.into())
}

impl DockerSession {
    async fn prepare(
        &mut self,
        exec: &DockerExecutor,
        job: &PreparedJob,
    ) -> Result<(), ExecutorError> {
        let cfg = exec.config();
        let trace = &job.trace;
        let expand = |s: &str| {
            job.variables
                .expand_str(s, &|k| format!("{}/{k}", job.tmp_dir.display()))
        };
        let job_image = job.job.image.as_ref().filter(|i| !i.name.is_empty());
        let image = match job_image {
            Some(i) => {
                let name = expand(&i.name);
                policy::check_allowed("image", &name, &cfg.allowed_images).map_err(config_error)?;
                name
            }
            None => cfg.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| {
                config_error("the job has no image and [runners.docker] image is not set: set a default image")
            })?,
        };
        trace.write(format!("Using Docker executor with image {image} ...\n").as_bytes());
        let policies = policy::effective_pull_policies(
            job_image.and_then(|i| i.pull_policy.as_deref()),
            &cfg.pull_policies(),
            &cfg.allowed_pull_policies(),
        )
        .map_err(config_error)?;
        let opts = policy::docker_opts(job_image.and_then(|i| i.executor_opts.as_ref()));
        let user = policy::effective_user(
            cfg.user.as_deref(),
            opts.user.as_deref(),
            &cfg.allowed_users,
        )
        .map_err(config_error)?;
        let auth = auth::Resolver::new(
            job.variables.value("DOCKER_AUTH_CONFIG"),
            &job.job.credentials,
        );
        for problem in &auth.problems {
            warn(trace, problem);
        }

        let short = exec.runner.short_token();
        let label_src = LabelSource {
            job: &job.job,
            short_token: &short,
            system_id: &job.system_id,
            slot: job.concurrent_project_id,
            extra: &cfg.container_labels,
        };

        // Volumes: the configured ones, then the builds dir unless a bind already holds it.
        let protected = job.variables.value("CI_COMMIT_REF_PROTECTED") == Some("true");
        let mut binds = Vec::new();
        let mut specs = exec.volumes.clone();
        let builds_covered = specs
            .iter()
            .any(|v| volumes::is_within(&exec.builds_dir, v.destination()));
        // The strategy as the runner resolves it: an unknown one is the project's default.
        let fetch = match job.variables.value("GIT_STRATEGY").unwrap_or("") {
            "" => job.job.allow_git_fetch,
            v => GitStrategy::parse(v).map_or(job.job.allow_git_fetch, |s| s == GitStrategy::Fetch),
        };
        if !builds_covered {
            specs.push(VolumeSpec::Cache {
                destination: exec.builds_dir.clone(),
            });
        }
        for spec in &specs {
            let persistent_builds = spec.destination() == exec.builds_dir && fetch;
            let is_builds = spec.destination() == exec.builds_dir && !builds_covered;
            match spec {
                VolumeSpec::Cache { destination } => {
                    if let Some(dir) = cfg.cache_dir.as_deref().filter(|d| !d.is_empty()) {
                        let mut host = PathBuf::from(dir);
                        host.push(&self.names.volume_prefix);
                        host.push(format!(
                            "{}{}",
                            names::md5_hex(destination),
                            if protected { "-protected" } else { "" }
                        ));
                        std::fs::create_dir_all(&host).map_err(|e| {
                            ExecutorError::System(format!(
                                "creating cache dir {}: {e}",
                                host.display()
                            ))
                        })?;
                        binds.push(format!("{}:{destination}", host.display()));
                        self.mounts.add(destination, host);
                        continue;
                    }
                    let temporary = cfg.disable_cache || (is_builds && !persistent_builds);
                    let name = if temporary {
                        self.names.temporary_volume(destination)
                    } else {
                        self.names.cache_volume(destination, protected)
                    };
                    let kind = if temporary { "temporary" } else { "cache" };
                    let labels =
                        names::labels(&label_src, kind, &[("destination", destination.clone())]);
                    let mountpoint = self.volume(&name, labels, cfg).await?;
                    if temporary {
                        self.temporary_volumes.push(name.clone());
                    } else {
                        admin::touch(&mountpoint);
                    }
                    binds.push(format!("{name}:{destination}"));
                    self.mounts.add(destination, mountpoint);
                }
                VolumeSpec::Bind {
                    source,
                    destination,
                    mode,
                } => {
                    let source_expanded = source.clone();
                    if let Some(host) = spec.host_source() {
                        // Docker would create it too; the runner needs it before the first container exists.
                        let _ = std::fs::create_dir_all(host);
                        self.mounts.add(destination, host);
                    } else {
                        let labels = HashMap::new();
                        let mountpoint = self.volume(&source_expanded, labels, cfg).await?;
                        self.mounts.add(destination, mountpoint);
                    }
                    binds.push(match mode {
                        Some(m) => format!("{source_expanded}:{destination}:{m}"),
                        None => format!("{source_expanded}:{destination}"),
                    });
                }
            }
        }
        if job.cancel.is_cancelled() {
            return Err(ExecutorError::Canceled);
        }

        let pull = engine_api::PullContext {
            auth: &auth,
            platform: opts.platform.as_deref(),
        };
        engine_api::ensure_image(&self.docker, &image, &pull, &policies, trace, &job.cancel)
            .await?;

        // The job's network, or the configured network mode.
        let network_mode = if exec.network_per_job() {
            let name = self.names.network.clone();
            let request = NetworkCreateRequest {
                name: name.clone(),
                enable_ipv6: cfg.enable_ipv6.then_some(true),
                options: (cfg.network_mtu > 0).then(|| {
                    HashMap::from([(
                        "com.docker.network.driver.mtu".to_string(),
                        cfg.network_mtu.to_string(),
                    )])
                }),
                labels: Some(names::labels(&label_src, "network", &[])),
                ..Default::default()
            };
            // Docker accepts two networks of one name; a left-over of an earlier run of this job id (a runner
            // killed hard) would make the name ambiguous, so it goes first.
            let same_name = HashMap::from([("name".to_string(), vec![format!("^{name}$")])]);
            if let Ok(old) = self
                .docker
                .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                    filters: Some(same_name),
                }))
                .await
            {
                for id in old.into_iter().filter_map(|n| n.id) {
                    let _ = self.docker.remove_network(&id).await;
                }
            }
            self.docker.create_network(request).await.map_err(|e| {
                ExecutorError::System(format!(
                    "creating network {name}: {}",
                    engine_api::daemon_message(&e)
                ))
            })?;
            self.network = Some(name.clone());
            name
        } else {
            cfg.network_mode.clone().unwrap_or_default()
        };

        // Services, started and waited for.
        let env: Vec<String> = job
            .variables
            .deduplicated()
            .into_iter()
            .filter(|v| !v.file)
            .map(|v| format!("{}={}", v.key, v.value))
            .collect();
        let started = services::start_all(
            &services::ServiceContext {
                docker: &self.docker,
                cfg,
                job,
                names: &self.names,
                labels: &label_src,
                binds: &binds,
                network_mode: &network_mode,
                per_job_network: exec.network_per_job(),
                env: &env,
                auth: &auth,
                expand: &expand,
            },
            &mut self.containers,
        )
        .await?;
        if job.cancel.is_cancelled() {
            return Err(ExecutorError::Canceled);
        }
        if let Some(timeout) = cfg.wait_for_services_timeout() {
            services::wait_all(
                &self.docker,
                &started,
                &network_mode,
                timeout,
                trace,
                &job.cancel,
            )
            .await;
        }

        // The build container: created now, started once per stage.
        let mut extra_hosts = cfg.extra_hosts.clone();
        if !exec.network_per_job() {
            // Without a user network, aliases reach services through /etc/hosts (GitLab's link emulation).
            for s in &started {
                if let Some(ip) = &s.ip {
                    extra_hosts.extend(s.aliases.iter().map(|a| format!("{a}:{ip}")));
                }
            }
        }
        let job_entrypoint = job_image.and_then(|i| i.entrypoint.clone());
        let entrypoint = match job_entrypoint {
            Some(e) if cfg.disable_entrypoint_overwrite => {
                warn(
                    trace,
                    "Entrypoint override disabled ([runners.docker] disable_entrypoint_overwrite)",
                );
                let _ = e;
                None
            }
            other => other,
        };
        if !is_root(user.as_deref()) {
            self.open_up = [&job.project_dir, &job.tmp_dir]
                .into_iter()
                .filter_map(|p| self.mounts.host_path(p))
                .collect();
        }
        let host_config =
            host_config::build(cfg, &image, binds.clone(), extra_hosts, &network_mode)?;
        let name = self.names.build_container();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            hostname: Some(
                cfg.hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| self.names.base.clone()),
            ),
            user,
            cmd: Some(vec![
                "sh".to_string(),
                "-c".to_string(),
                DETECT_SHELL.to_string(),
            ]),
            entrypoint,
            env: Some(env),
            labels: Some(names::labels(&label_src, "build", &[])),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            networking_config: self.network.as_ref().map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    n.clone(),
                    EndpointSettings {
                        aliases: Some(vec!["build".to_string()]),
                        mac_address: cfg.mac_address.clone(),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: opts.platform.clone().unwrap_or_default(),
                }),
                body,
            )
            .await
            .map_err(|e| {
                ExecutorError::System(format!(
                    "creating the build container: {}",
                    engine_api::daemon_message(&e)
                ))
            })?;
        self.containers.push(name.clone());
        self.build_container = Some(name);

        // The runner's own shell for the predefined stages, in the builds dir as the host sees it.
        let host_builds = self
            .mounts
            .host_path(Path::new(&exec.builds_dir))
            .ok_or_else(|| {
                ExecutorError::System(format!("the builds dir {} has no volume", exec.builds_dir))
            })?;
        let shell = runwright_shell::ShellExecutor::new(
            Some("bash"),
            None,
            exec.working_dir.clone(),
            self.kill_grace,
        )
        .map_err(ExecutorError::System)?;
        let mut host_job = job.clone();
        host_job.builds_dir = host_builds;
        self.host_shell = Some(shell.prepare(&host_job).await?);
        Ok(())
    }

    /// Creates a volume when missing (labelled) and returns its mountpoint, which must be reachable here.
    async fn volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        cfg: &DockerConfig,
    ) -> Result<PathBuf, ExecutorError> {
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
                .map_err(|e| {
                    ExecutorError::System(format!(
                        "creating volume {name}: {}",
                        engine_api::daemon_message(&e)
                    ))
                })?,
            Err(e) => {
                return Err(ExecutorError::System(format!(
                    "inspecting volume {name}: {}",
                    engine_api::daemon_message(&e)
                )))
            }
        };
        let mountpoint = PathBuf::from(&volume.mountpoint);
        if !mountpoint.is_dir() {
            return Err(ExecutorError::System(format!(
                "volume {name}'s mountpoint {} is not reachable from the runner, which performs sources, caches \
                 and artifacts itself: run runwright on the Docker host as root (remote Docker hosts are not \
                 supported yet)",
                volume.mountpoint
            )));
        }
        Ok(mountpoint)
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
            .ok_or_else(|| ExecutorError::System("the build container was not created".into()))?;
        let dirs = std::mem::take(&mut self.open_up);
        if !dirs.is_empty() {
            tokio::task::spawn_blocking(move || dirs.iter().for_each(|d| open_up(d)))
                .await
                .map_err(|e| ExecutorError::System(format!("opening up the project dir: {e}")))?;
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
    }

    fn host_path(&self, path: &Path) -> Option<PathBuf> {
        self.mounts.host_path(path)
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
