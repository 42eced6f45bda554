//! What a docker job gets before its first stage, in GitLab's order: the image checked against the policies,
//! the volumes, the pull, the job's network, the services, the helper container (when the job has predefined
//! work) and the build container.

mod mounts;

use crate::executor::DockerExecutor;
use crate::names::{self, LabelSource};
use crate::session::DockerSession;
use crate::{
    auth, engine_api, helper, helper_image, host_config, policy, services, warn, DockerError,
};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptions;
use runwright_config::{DockerConfig, PullPolicy};
use runwright_engine::PreparedJob;
use runwright_trace::TraceBuffer;
use std::collections::HashMap;

/// GitLab's shell detection for containers (runner shells/bash.go `BashDetectShellScript`): the first bash or
/// sh found runs the stage script it reads on stdin.
pub(crate) const DETECT_SHELL: &str = r#"if [ -x /usr/local/bin/bash ]; then
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

/// What every step of a job's preparation reads: the executor, its `[runners.docker]` settings, the job, and the
/// source of the labels every container, network and volume of the job carries.
struct Prep<'a> {
    exec: &'a DockerExecutor,
    cfg: &'a DockerConfig,
    job: &'a PreparedJob,
    labels: LabelSource<'a>,
    /// A network of the job's own (`FF_NETWORK_PER_BUILD` without `network_mode`).
    per_job_network: bool,
}

impl Prep<'_> {
    /// A value of the configuration with the job's variables expanded (file variables as their path).
    fn expand(&self, s: &str) -> String {
        let job = self.job;
        job.variables
            .expand_str(s, &|k| format!("{}/{k}", job.tmp_dir.display()))
    }

    /// `Err(Canceled)` once the job was canceled (or timed out) while preparing.
    fn check_canceled(&self) -> Result<(), DockerError> {
        if self.job.cancel.is_cancelled() {
            return Err(DockerError::Canceled);
        }
        Ok(())
    }
}

/// The job's image and how to run it, resolved from the job and `[runners.docker]` before anything is made.
struct JobImage {
    /// The job's image (variables expanded, on `allowed_images`), else the runner's default image.
    name: String,
    /// The pull policies to try, in order.
    policies: Vec<PullPolicy>,
    /// The job's `docker:` options (`platform`; `user` is resolved into `user`).
    opts: policy::DockerOpts,
    /// The build container's user.
    user: Option<String>,
    /// The job's `image:entrypoint`.
    entrypoint: Option<Vec<String>>,
}

impl JobImage {
    /// Checks the job's image, pull policies and user against the runner's allow-lists and says which image the
    /// job uses; a refusal is a configuration error.
    fn resolve(p: &Prep<'_>) -> Result<Self, DockerError> {
        let cfg = p.cfg;
        let job_image = p.job.job.image.as_ref().filter(|i| !i.name.is_empty());
        let name = match job_image {
            Some(i) => {
                let name = p.expand(&i.name);
                policy::check_allowed("image", &name, &cfg.allowed_images)?;
                name
            }
            None => cfg
                .image
                .clone()
                .filter(|i| !i.is_empty())
                .ok_or(DockerError::NoImage)?,
        };
        p.job
            .trace
            .write(format!("Using Docker executor with image {name} ...\n").as_bytes());
        let policies = policy::effective_pull_policies(
            job_image.and_then(|i| i.pull_policy.as_deref()),
            &cfg.pull_policies(),
            &cfg.allowed_pull_policies(),
        )?;
        let opts = policy::docker_opts(job_image.and_then(|i| i.executor_opts.as_ref()));
        let user = policy::effective_user(
            cfg.user.as_deref(),
            opts.user.as_deref(),
            &cfg.allowed_users,
        )?;
        Ok(Self {
            name,
            policies,
            opts,
            user,
            entrypoint: job_image.and_then(|i| i.entrypoint.clone()),
        })
    }
}

/// What every container of the job shares: the volumes' binds, the network mode and the job's environment.
struct Shared {
    binds: Vec<String>,
    network_mode: String,
    env: Vec<String>,
}

impl DockerSession {
    /// Prepares the job step by step, in GitLab's order. Each step records what it made on the session as soon
    /// as it exists, so that `cleanup` removes it whatever fails later.
    pub(crate) async fn prepare(
        &mut self,
        exec: &DockerExecutor,
        job: &PreparedJob,
    ) -> Result<(), DockerError> {
        let cfg = exec.config();
        let short = exec.runner.short_token();
        let p = Prep {
            exec,
            cfg,
            job,
            labels: LabelSource {
                job: &job.job,
                short_token: &short,
                system_id: &job.system_id,
                slot: job.concurrent_project_id,
                extra: &cfg.container_labels,
            },
            per_job_network: exec.network_per_job(&job.feature_flags),
        };
        let image = JobImage::resolve(&p)?;
        let auth = registry_auth(job);
        let binds = self.mount_volumes(&p).await?;
        p.check_canceled()?;
        let pull = engine_api::PullContext {
            auth: &auth,
            platform: image.opts.platform.as_deref(),
        };
        engine_api::ensure_image(
            &self.docker,
            &image.name,
            &pull,
            &image.policies,
            &job.trace,
            &job.cancel,
        )
        .await?;
        let network_mode = self.create_network(&p).await?;
        let shared = Shared {
            binds,
            network_mode,
            env: job_environment(job),
        };
        let started = self.start_services(&p, &shared, &auth).await?;
        if helper::job_needs_helper(job, image.user.as_deref()) {
            self.start_helper(&p, &shared, &auth).await?;
            p.check_canceled()?;
            let umask = self.helper.as_ref().is_some_and(|h| h.umask);
            if let (false, Some(owner)) = (umask, helper::numeric_owner(image.user.as_deref())) {
                let dirs = [&job.project_dir, &job.tmp_dir]
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .filter(|d| !d.contains('\''))
                    .collect();
                self.chown = Some((owner, dirs));
            }
        }
        self.create_build_container(&p, &image, shared, &started)
            .await
    }

    /// The helper container (GitLab's predefined container): from `helper_image` (variables not expanded, as
    /// GitLab's runner) pulled by the runner's pull policy, else runwright's own helper image, built here when the
    /// daemon lacks it and never pulled. It shares the job's binds, network (without an alias) and environment,
    /// and is started now, once, for all the predefined stages.
    async fn start_helper(
        &mut self,
        p: &Prep<'_>,
        shared: &Shared,
        auth: &auth::Resolver,
    ) -> Result<(), DockerError> {
        let cfg = p.cfg;
        let job = p.job;
        let image = match cfg.helper_image.as_deref().filter(|i| !i.is_empty()) {
            Some(configured) => {
                let pull = engine_api::PullContext {
                    auth,
                    platform: None,
                };
                engine_api::ensure_image(
                    &self.docker,
                    configured,
                    &pull,
                    &cfg.pull_policies(),
                    &job.trace,
                    &job.cancel,
                )
                .await?;
                configured.to_string()
            }
            None => helper_image::ensure(&self.docker, &job.trace).await?,
        };
        let name = self.names.helper_container();
        let body = ContainerCreateBody {
            image: Some(image),
            hostname: Some(
                cfg.hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| self.names.base.clone()),
            ),
            cmd: Some(vec![
                "sh".to_string(),
                "-c".to_string(),
                helper::KEEPALIVE.to_string(),
            ]),
            env: Some(shared.env.clone()),
            labels: Some(names::labels(&p.labels, "predefined", &[])),
            host_config: Some(host_config::helper(
                cfg,
                shared.binds.clone(),
                &shared.network_mode,
            )),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .map_err(|e| DockerError::daemon("creating the helper container", e))?;
        self.containers.push(name.clone());
        self.docker
            .start_container(&name, None)
            .await
            .map_err(|e| DockerError::daemon("starting the helper container", e))?;
        // runner executors/docker/docker_command.go `isUmaskDisabled`.
        let umask_disabled = job
            .feature_flags
            .is_on("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR");
        self.helper = Some(helper::Helper {
            name,
            umask: !umask_disabled,
            running: true,
        });
        Ok(())
    }

    /// The job's own network, or the configured network mode; returns the mode the job's containers get.
    async fn create_network(&mut self, p: &Prep<'_>) -> Result<String, DockerError> {
        if !p.per_job_network {
            return Ok(p.cfg.network_mode.clone().unwrap_or_default());
        }
        let name = self.names.network.clone();
        let request = network_request(p, &name);
        self.remove_networks_named(&name).await;
        self.docker
            .create_network(request)
            .await
            .map_err(|e| DockerError::daemon(format!("creating network {name}"), e))?;
        self.network = Some(name.clone());
        Ok(name)
    }

    /// Docker accepts two networks of one name; a left-over of an earlier run of this job id (a runner killed
    /// hard) would make the name ambiguous, so it goes first.
    async fn remove_networks_named(&self, name: &str) {
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
    }

    /// Starts the configured and the job's services, then waits for them (`wait_for_services_timeout`).
    async fn start_services(
        &mut self,
        p: &Prep<'_>,
        shared: &Shared,
        auth: &auth::Resolver,
    ) -> Result<Vec<services::Started>, DockerError> {
        let started = services::start_all(
            &services::ServiceContext {
                docker: &self.docker,
                cfg: p.cfg,
                job: p.job,
                names: &self.names,
                labels: &p.labels,
                binds: &shared.binds,
                network_mode: &shared.network_mode,
                per_job_network: p.per_job_network,
                env: &shared.env,
                auth,
                expand: &|s: &str| p.expand(s),
            },
            &mut self.containers,
        )
        .await?;
        p.check_canceled()?;
        if let Some(timeout) = p.cfg.wait_for_services_timeout() {
            services::wait_all(
                &self.docker,
                &started,
                &shared.network_mode,
                timeout,
                &p.job.trace,
                &p.job.cancel,
            )
            .await;
        }
        Ok(started)
    }

    /// Creates the build container, which each stage starts again with the stage script on stdin.
    async fn create_build_container(
        &mut self,
        p: &Prep<'_>,
        image: &JobImage,
        shared: Shared,
        started: &[services::Started],
    ) -> Result<(), DockerError> {
        let cfg = p.cfg;
        let extra_hosts = extra_hosts(cfg, p.per_job_network, started);
        let entrypoint = entrypoint(cfg, image, &p.job.trace);
        let host_config = host_config::build(
            cfg,
            &image.name,
            shared.binds,
            extra_hosts,
            &shared.network_mode,
        )?;
        let body = self.build_container_body(p, image, shared.env, host_config, entrypoint);
        let name = self.names.build_container();
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: image.opts.platform.clone().unwrap_or_default(),
                }),
                body,
            )
            .await
            .map_err(|e| DockerError::daemon("creating the build container", e))?;
        self.containers.push(name.clone());
        self.build_container = Some(name);
        Ok(())
    }

    /// The build container as the daemon is asked for it: the job's image and user, GitLab's shell detection as
    /// its command, stdin kept open for the stage script.
    fn build_container_body(
        &self,
        p: &Prep<'_>,
        image: &JobImage,
        env: Vec<String>,
        host_config: bollard::models::HostConfig,
        entrypoint: Option<Vec<String>>,
    ) -> ContainerCreateBody {
        let cfg = p.cfg;
        ContainerCreateBody {
            image: Some(image.name.clone()),
            hostname: Some(
                cfg.hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| self.names.base.clone()),
            ),
            user: image.user.clone(),
            cmd: Some(vec![
                "sh".to_string(),
                "-c".to_string(),
                DETECT_SHELL.to_string(),
            ]),
            entrypoint,
            env: Some(env),
            labels: Some(names::labels(&p.labels, "build", &[])),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            networking_config: self.network.as_ref().map(|n| build_endpoint(cfg, n)),
            ..Default::default()
        }
    }
}

/// Registry credentials from `DOCKER_AUTH_CONFIG` and the job's; what cannot be used is a warning in the trace.
fn registry_auth(job: &PreparedJob) -> auth::Resolver {
    let auth = auth::Resolver::new(
        job.variables.value("DOCKER_AUTH_CONFIG"),
        &job.job.credentials,
    );
    for problem in &auth.problems {
        warn(&job.trace, problem);
    }
    auth
}

/// The job's network as the daemon is asked for it: IPv6 and MTU as configured, GitLab's labels.
fn network_request(p: &Prep<'_>, name: &str) -> NetworkCreateRequest {
    let cfg = p.cfg;
    NetworkCreateRequest {
        name: name.to_string(),
        enable_ipv6: cfg.enable_ipv6.then_some(true),
        options: (cfg.network_mtu > 0).then(|| {
            HashMap::from([(
                "com.docker.network.driver.mtu".to_string(),
                cfg.network_mtu.to_string(),
            )])
        }),
        labels: Some(names::labels(&p.labels, "network", &[])),
        ..Default::default()
    }
}

/// The job's variables as a container environment (`KEY=value`; file variables are not passed).
fn job_environment(job: &PreparedJob) -> Vec<String> {
    job.variables
        .deduplicated()
        .into_iter()
        .filter(|v| !v.file)
        .map(|v| format!("{}={}", v.key, v.value))
        .collect()
}

/// The build container's `/etc/hosts` entries: the configured ones, and without a user network the services'
/// aliases (GitLab's link emulation).
fn extra_hosts(
    cfg: &DockerConfig,
    per_job_network: bool,
    started: &[services::Started],
) -> Vec<String> {
    let mut hosts = cfg.extra_hosts.clone();
    if !per_job_network {
        for s in started {
            if let Some(ip) = &s.ip {
                hosts.extend(s.aliases.iter().map(|a| format!("{a}:{ip}")));
            }
        }
    }
    hosts
}

/// The job's `image:entrypoint`, unless `disable_entrypoint_overwrite` (then a warning in the trace).
fn entrypoint(cfg: &DockerConfig, image: &JobImage, trace: &TraceBuffer) -> Option<Vec<String>> {
    match &image.entrypoint {
        Some(_) if cfg.disable_entrypoint_overwrite => {
            warn(
                trace,
                "Entrypoint override disabled ([runners.docker] disable_entrypoint_overwrite)",
            );
            None
        }
        other => other.clone(),
    }
}

/// The build container on the job's network, reachable as `build`.
fn build_endpoint(cfg: &DockerConfig, network: &str) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.to_string(),
            EndpointSettings {
                aliases: Some(vec!["build".to_string()]),
                mac_address: cfg.mac_address.clone(),
                ..Default::default()
            },
        )])),
    }
}
