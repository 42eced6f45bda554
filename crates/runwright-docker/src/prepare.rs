//! What a docker job gets before its first stage, in GitLab's order: the image checked against the policies,
//! the volumes, the pull, the job's network, the services, the build container and the runner-side shell.

use crate::executor::DockerExecutor;
use crate::names::{self, LabelSource};
use crate::session::{is_root, DockerSession};
use crate::volumes::{self, VolumeSpec};
use crate::{admin, auth, config_error, engine_api, host_config, policy, services, warn};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptions;
use runwright_config::DockerConfig;
use runwright_engine::sources::GitStrategy;
use runwright_engine::{Executor, ExecutorError, PreparedJob};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
impl DockerSession {
    pub(crate) async fn prepare(
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
