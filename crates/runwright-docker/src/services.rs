//! Service containers (reference `protocol.md` §10 "Services & aliases", "Wait for services"): the configured
//! services first, then the job's; each on the job's network under its aliases, with the job's variables plus
//! its own, the build container's volumes, and the service settings of `[runners.docker]`. Then the runner
//! waits until one exposed TCP port of each answers, or prints GitLab's warning block with the service's log.

use crate::engine_api::ensure_image;
use crate::names::{labels, service_aliases, JobNames, LabelSource};
use crate::{policy, warn, DockerError};
use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions};
use bollard::Docker;
use futures::StreamExt;
use runwright_config::DockerConfig;
use runwright_engine::PreparedJob;
use runwright_trace::TraceBuffer;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) struct ServiceContext<'a> {
    pub docker: &'a Docker,
    pub cfg: &'a DockerConfig,
    pub job: &'a PreparedJob,
    pub names: &'a JobNames,
    pub labels: &'a LabelSource<'a>,
    pub binds: &'a [String],
    pub network_mode: &'a str,
    pub per_job_network: bool,
    pub env: &'a [String],
    pub auth: &'a crate::auth::Resolver,
    pub expand: &'a (dyn Fn(&str) -> String + Sync),
}

/// A started service.
pub(crate) struct Started {
    pub container: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
    pub ports: Vec<u16>,
}

struct Wanted {
    image: String,
    aliases: Vec<String>,
    command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    variables: Vec<String>,
    pull_policy: Option<Vec<String>>,
    ports: Vec<u16>,
    opts: policy::DockerOpts,
}

/// Networks that carry aliases: the job's own and any user-defined one (not bridge/host/none/container:…).
fn user_network(mode: &str, per_job: bool) -> bool {
    per_job
        || !(mode.is_empty()
            || ["bridge", "host", "none", "default"].contains(&mode)
            || mode.starts_with("container:"))
}

/// Starts the configured services, then the job's, each under the aliases no earlier service took; returns them
/// for the wait.
pub(crate) async fn start_all(
    ctx: &ServiceContext<'_>,
    containers: &mut Vec<String>,
) -> Result<Vec<Started>, DockerError> {
    let wanted = wanted(ctx)?;
    let aliases_allowed = user_network(ctx.network_mode, ctx.per_job_network);
    let mut taken: Vec<String> = Vec::new();
    let mut started = Vec::new();
    for (index, w) in wanted.into_iter().enumerate() {
        let derived = service_aliases(&w.image);
        let aliases = free_aliases(&derived, &w.aliases, &mut taken, &ctx.job.trace);
        let name = ctx.names.service_container(&derived[0], index);
        let service = Service {
            wanted: &w,
            name,
            aliases,
            aliases_allowed,
        };
        started.push(start_one(ctx, service, containers).await?);
    }
    Ok(started)
}

/// The services to start: the configured ones (always allowed), then the job's (on `allowed_services`), at most
/// `services_limit`.
fn wanted(ctx: &ServiceContext<'_>) -> Result<Vec<Wanted>, DockerError> {
    let cfg = ctx.cfg;
    let mut wanted: Vec<Wanted> = Vec::new();
    for s in &cfg.services {
        let image = (ctx.expand)(&s.name);
        wanted.push(Wanted {
            aliases: s.aliases().iter().map(|a| a.to_string()).collect(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
            variables: s.environment.iter().map(|e| (ctx.expand)(e)).collect(),
            pull_policy: None,
            ports: Vec::new(),
            opts: policy::DockerOpts::default(),
            image,
        });
    }
    for s in &ctx.job.job.services {
        let image = (ctx.expand)(&s.name);
        // Services from the config are always allowed; the job's must be on the list.
        policy::check_allowed("service", &image, &cfg.allowed_services)?;
        wanted.push(Wanted {
            aliases: s
                .alias
                .split([' ', ','])
                .filter(|a| !a.is_empty())
                .map(|a| (ctx.expand)(a))
                .collect(),
            command: s.command.clone(),
            entrypoint: s.entrypoint.clone(),
            variables: s
                .variables
                .iter()
                .map(|v| format!("{}={}", v.key, (ctx.expand)(&v.value)))
                .collect(),
            pull_policy: s.pull_policy.clone(),
            opts: policy::docker_opts(s.executor_opts.as_ref()),
            ports: s
                .ports
                .iter()
                .filter_map(|p| u16::try_from(p.number).ok())
                .collect(),
            image,
        });
    }
    if let Some(limit) = cfg.services_limit() {
        if wanted.len() > limit {
            return Err(DockerError::ServicesLimit {
                needed: wanted.len(),
                limit,
            });
        }
    }
    Ok(wanted)
}

/// The image's own aliases, then the configured ones, less those an earlier service took (a warning each).
fn free_aliases(
    derived: &[String],
    configured: &[String],
    taken: &mut Vec<String>,
    trace: &TraceBuffer,
) -> Vec<String> {
    let mut aliases = Vec::new();
    for a in derived.iter().chain(configured.iter()) {
        if taken.contains(a) {
            warn(
                trace,
                &format!("Service alias {a:?} is already used by another service; skipped"),
            );
            continue;
        }
        if !aliases.contains(a) {
            aliases.push(a.clone());
        }
    }
    taken.extend(aliases.iter().cloned());
    aliases
}

/// One service about to start: what was asked for, its container name and the aliases it gets.
struct Service<'a> {
    wanted: &'a Wanted,
    name: String,
    aliases: Vec<String>,
    /// Whether the network carries aliases (else the build container reaches them through `/etc/hosts`).
    aliases_allowed: bool,
}

/// Pulls a service's image by its policies, creates and starts its container, and finds its address and ports.
async fn start_one(
    ctx: &ServiceContext<'_>,
    service: Service<'_>,
    containers: &mut Vec<String>,
) -> Result<Started, DockerError> {
    let (cfg, w, trace) = (ctx.cfg, service.wanted, &ctx.job.trace);
    trace.write(format!("Starting service {} ...\n", w.image).as_bytes());
    let policies = policy::effective_pull_policies(
        w.pull_policy.as_deref(),
        &cfg.pull_policies(),
        &cfg.allowed_pull_policies(),
    )?;
    // `[runners.docker] user` is for the build container; a service runs as its image says unless its own
    // `docker:user` says otherwise (a dind service must stay root).
    let user = policy::effective_user(None, w.opts.user.as_deref(), &cfg.allowed_users)?;
    let pull = crate::engine_api::PullContext {
        auth: ctx.auth,
        platform: w.opts.platform.as_deref(),
    };
    let image_id = ensure_image(
        ctx.docker,
        &w.image,
        &pull,
        &policies,
        trace,
        &ctx.job.cancel,
    )
    .await?;
    let host_config =
        crate::host_config::service(cfg, &w.image, ctx.binds.to_vec(), ctx.network_mode)?;
    let body = service_body(ctx, &service, user, host_config);
    let name = service.name;
    ctx.docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: w.opts.platform.clone().unwrap_or_default(),
            }),
            body,
        )
        .await
        .map_err(|e| DockerError::daemon(format!("creating service {}", w.image), e))?;
    containers.push(name.clone());
    ctx.docker
        .start_container(&name, None)
        .await
        .map_err(|e| DockerError::daemon(format!("starting service {}", w.image), e))?;
    let ip = address(ctx, &name).await;
    let ports = exposed_ports(ctx, &image_id, &w.ports).await;
    Ok(Started {
        container: name,
        aliases: service.aliases,
        ip,
        ports,
    })
}

/// A service container as the daemon is asked for it: the job's environment and the service's own, GitLab's
/// labels, its aliases on a network that carries them.
fn service_body(
    ctx: &ServiceContext<'_>,
    service: &Service<'_>,
    user: Option<String>,
    host_config: bollard::models::HostConfig,
) -> ContainerCreateBody {
    let w = service.wanted;
    let mut env = ctx.env.to_vec();
    env.extend(w.variables.iter().cloned());
    let version = w
        .image
        .rsplit_once(':')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| "latest".into());
    ContainerCreateBody {
        image: Some(w.image.clone()),
        cmd: w.command.clone(),
        user,
        entrypoint: w.entrypoint.clone(),
        env: Some(env),
        labels: Some(labels(
            ctx.labels,
            "service",
            &[("service", w.image.clone()), ("service.version", version)],
        )),
        host_config: Some(host_config),
        networking_config: (service.aliases_allowed && !ctx.network_mode.is_empty()).then(|| {
            NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    ctx.network_mode.to_string(),
                    EndpointSettings {
                        aliases: Some(service.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }
        }),
        ..Default::default()
    }
}

/// The started container's address on the job's network (or the default bridge), if it has one.
async fn address(ctx: &ServiceContext<'_>, container: &str) -> Option<String> {
    let inspect = ctx.docker.inspect_container(container, None).await.ok();
    let network_key = if ctx.network_mode.is_empty() {
        "bridge"
    } else {
        ctx.network_mode
    };
    inspect
        .and_then(|i| i.network_settings)
        .and_then(|n| n.networks)
        .and_then(|n| n.get(network_key).cloned())
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty())
}

/// The ports to wait for: the job's `ports:`, then the TCP ports the image exposes.
async fn exposed_ports(ctx: &ServiceContext<'_>, image_id: &str, listed: &[u16]) -> Vec<u16> {
    let mut ports = listed.to_vec();
    if let Ok(img) = ctx.docker.inspect_image(image_id).await {
        for p in img.config.and_then(|c| c.exposed_ports).unwrap_or_default() {
            if let Some(n) = p.strip_suffix("/tcp").and_then(|n| n.parse::<u16>().ok()) {
                if !ports.contains(&n) {
                    ports.push(n);
                }
            }
        }
    }
    ports
}

/// Waits until one exposed TCP port of every service accepts a connection; a service that does not come up
/// in time gets GitLab's warning block with its log, and the job goes on.
pub(crate) async fn wait_all(
    docker: &Docker,
    services: &[Started],
    _network_mode: &str,
    timeout: Duration,
    trace: &TraceBuffer,
    cancel: &CancellationToken,
) {
    let deadline = Instant::now() + timeout;
    let checks = services.iter().map(|s| async move {
        if s.ports.is_empty() {
            return None;
        }
        let Some(ip) = s.ip.as_deref() else {
            // Most often it has already exited (a stopped container has no address).
            let why = exit_status(docker, &s.container).await;
            return Some((
                s,
                why.unwrap_or_else(|| "the service has no address on the job's network".into()),
            ));
        };
        // The first port to answer will do, as GitLab's health check (`docker:dind` exposes 2375 and 2376 and
        // listens on only one of them).
        let attempts = s
            .ports
            .iter()
            .map(|port| Box::pin(wait_port(ip, *port, deadline, cancel)));
        // A service that exits gets its warning at once instead of after the whole timeout.
        tokio::select! {
            r = futures::future::select_ok(attempts) => match r {
                Ok(_) => None,
                Err(e) => Some((s, e)),
            },
            e = exited(docker, &s.container, deadline) => Some((s, e)),
        }
    });
    let failures: Vec<_> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if cancel.is_cancelled() {
        return;
    }
    for (s, error) in failures {
        let logs = service_logs(docker, &s.container).await;
        // On the runner's stderr stream (runner executors/docker/services.go: `Stream(StreamExecutorLevel,
        // Stderr)`).
        trace
            .stream(
                runwright_trace::timestamp::STREAM_EXECUTOR,
                runwright_trace::StreamType::Stderr,
            )
            .write(
            format!(
                "\x1b[0;33m*** WARNING:\x1b[0;m Service {} probably didn't start properly.\n\nHealth check error:\n{error}\n\nService container logs:\n{logs}\n\x1b[0;33m*********\x1b[0;m\n\n",
                s.container
            )
            .as_bytes(),
        );
    }
}

/// How the container stopped, if it has.
async fn exit_status(docker: &Docker, container: &str) -> Option<String> {
    let state = docker
        .inspect_container(container, None)
        .await
        .ok()?
        .state?;
    (state.running == Some(false)).then(|| {
        format!(
            "service container exited with code {} before its port answered",
            state.exit_code.unwrap_or_default()
        )
    })
}

/// Resolves when the container has stopped (with how), and never before `deadline` otherwise.
async fn exited(docker: &Docker, container: &str, deadline: Instant) -> String {
    loop {
        if let Some(status) = exit_status(docker, container).await {
            return status;
        }
        if Instant::now() >= deadline {
            // The port checks report the timeout.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_port(
    ip: &str,
    port: u16,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let addr = format!("{ip}:{port}");
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(&addr),
        );
        let last = tokio::select! {
            r = attempt => match r {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".to_string(),
            },
            _ = cancel.cancelled() => return Err("canceled".into()),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "service port {port}/tcp did not answer at {addr} in time: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn service_logs(docker: &Docker, container: &str) -> String {
    let mut stream = docker.logs(
        container,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: "200".to_string(),
            ..Default::default()
        }),
    );
    let mut out = String::new();
    while let Some(Ok(frame)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&frame.into_bytes()));
    }
    out
}
