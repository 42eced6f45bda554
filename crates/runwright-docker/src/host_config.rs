//! The `HostConfig` of build and service containers from `[runners.docker]` (reference `protocol.md` §8.4,
//! §10): what the daemon is asked for, kept apart from the talking so it is tested without a daemon — this is
//! where `privileged` is checked on machines whose kernel refuses privileged containers.

use crate::{policy, DockerError};
use bollard::models::HostConfig;
use runwright_config::DockerConfig;

/// The build container's host config: privilege only for allowed images, the runner's resources, capabilities,
/// security options, devices and network.
pub(crate) fn build(
    cfg: &DockerConfig,
    image: &str,
    binds: Vec<String>,
    extra_hosts: Vec<String>,
    network_mode: &str,
) -> Result<HostConfig, DockerError> {
    let privileged = policy::privileged(cfg.privileged, image, &cfg.allowed_privileged_images);
    let hc = HostConfig {
        binds: Some(binds),
        privileged: Some(privileged),
        cap_add: non_empty(&cfg.cap_add),
        cap_drop: non_empty(&cfg.cap_drop),
        devices: devices(&cfg.devices)?,
        device_requests: device_requests(&cfg.gpu_requests()),
        device_cgroup_rules: non_empty(&cfg.device_cgroup_rules),
        shm_size: (cfg.shm_size > 0).then_some(cfg.shm_size),
        oom_kill_disable: cfg.oom_kill_disable.then_some(true),
        oom_score_adj: (cfg.oom_score_adjust != 0).then_some(cfg.oom_score_adjust),
        memory: positive(cfg.memory_bytes()),
        memory_swap: positive(cfg.memory_swap_bytes()),
        memory_reservation: positive(cfg.memory_reservation_bytes()),
        nano_cpus: positive(cfg.nano_cpus()),
        cpuset_cpus: cfg.cpuset_cpus.clone(),
        cpuset_mems: cfg.cpuset_mems.clone(),
        cpu_shares: positive(cfg.cpu_shares),
        cgroup_parent: cfg.cgroup_parent.clone(),
        dns: non_empty(&cfg.dns),
        dns_search: non_empty(&cfg.dns_search),
        extra_hosts: non_empty(&extra_hosts),
        network_mode: Some(network_mode.to_string()).filter(|m| !m.is_empty()),
        sysctls: (!cfg.sysctls.is_empty()).then(|| cfg.sysctls.clone().into_iter().collect()),
        tmpfs: (!cfg.tmpfs.is_empty()).then(|| cfg.tmpfs.clone().into_iter().collect()),
        runtime: cfg.runtime.clone(),
        isolation: isolation(cfg),
        userns_mode: cfg.userns_mode.clone(),
        ipc_mode: cfg.ipcmode.clone(),
        group_add: non_empty(&cfg.group_add),
        volume_driver: cfg.volume_driver.clone(),
        volumes_from: non_empty(&cfg.volumes_from),
        links: non_empty(&cfg.links),
        ulimits: ulimits(&cfg.ulimit)?,
        log_config: (!cfg.log_options.is_empty()).then(|| bollard::models::HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: Some(cfg.log_options.clone().into_iter().collect()),
        }),
        ..Default::default()
    };
    Ok(with_security_options(hc, &cfg.security_opt))
}

/// The helper container's host config: the job's binds and network, the runner's DNS, hosts, user namespace,
/// runtime and security options, and nothing else: no privilege, capabilities, devices or GPUs (git, caches and
/// artifacts need none of them, and a privileged `docker:dind` build host must not hand them to the helper).
pub(crate) fn helper(cfg: &DockerConfig, binds: Vec<String>, network_mode: &str) -> HostConfig {
    let hc = HostConfig {
        binds: Some(binds),
        dns: non_empty(&cfg.dns),
        dns_search: non_empty(&cfg.dns_search),
        extra_hosts: non_empty(&cfg.extra_hosts),
        network_mode: Some(network_mode.to_string()).filter(|m| !m.is_empty()),
        runtime: cfg.runtime.clone(),
        isolation: isolation(cfg),
        userns_mode: cfg.userns_mode.clone(),
        cgroup_parent: cfg.cgroup_parent.clone(),
        volume_driver: cfg.volume_driver.clone(),
        volumes_from: non_empty(&cfg.volumes_from),
        log_config: (!cfg.log_options.is_empty()).then(|| bollard::models::HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: Some(cfg.log_options.clone().into_iter().collect()),
        }),
        ..Default::default()
    };
    with_security_options(hc, &cfg.security_opt)
}

/// A service container's host config: `services_privileged` (default `privileged`) for allowed services, and
/// runwright's `services_cap_add`/`services_cap_drop` beside GitLab's `services_security_opt`.
pub(crate) fn service(
    cfg: &DockerConfig,
    image: &str,
    binds: Vec<String>,
    network_mode: &str,
) -> Result<HostConfig, DockerError> {
    let privileged = policy::privileged(
        cfg.services_privileged.unwrap_or(cfg.privileged),
        image,
        &cfg.allowed_privileged_services,
    );
    let service_devices: Vec<String> = cfg
        .services_devices
        .iter()
        .filter(|(glob, _)| policy::matches_any(std::slice::from_ref(*glob), image))
        .flat_map(|(_, d)| d.iter().cloned())
        .collect();
    let hc = HostConfig {
        binds: Some(binds),
        privileged: Some(privileged),
        cap_add: non_empty(&cfg.services_cap_add),
        cap_drop: non_empty(&cfg.services_cap_drop),
        devices: devices(&service_devices)?,
        device_requests: device_requests(&cfg.service_gpu_requests()),
        isolation: isolation(cfg),
        tmpfs: (!cfg.services_tmpfs.is_empty())
            .then(|| cfg.services_tmpfs.clone().into_iter().collect()),
        memory: positive(cfg.service_memory_bytes()),
        memory_swap: positive(cfg.service_memory_swap_bytes()),
        memory_reservation: positive(cfg.service_memory_reservation_bytes()),
        nano_cpus: positive(cfg.service_nano_cpus()),
        cpuset_cpus: cfg.service_cpuset_cpus.clone(),
        cpu_shares: positive(cfg.service_cpu_shares),
        cgroup_parent: cfg.service_cgroup_parent.clone(),
        network_mode: Some(network_mode.to_string()).filter(|m| !m.is_empty()),
        dns: non_empty(&cfg.dns),
        dns_search: non_empty(&cfg.dns_search),
        extra_hosts: non_empty(&cfg.extra_hosts),
        ..Default::default()
    };
    Ok(with_security_options(hc, &cfg.services_security_opt))
}

/// Security options as the daemon takes them: `systempaths=unconfined` is a docker CLI spelling for "mask and
/// make read-only no /proc or /sys paths", which the API expresses as empty `MaskedPaths`/`ReadonlyPaths`
/// (docker cli opts/parse.go `parseSystemPaths`). Returns the options left and whether paths are unconfined.
fn security_options(opts: &[String]) -> (Option<Vec<String>>, bool) {
    let unconfined = opts.iter().any(|o| o.trim() == "systempaths=unconfined");
    let rest: Vec<String> = opts
        .iter()
        .filter(|o| o.trim() != "systempaths=unconfined")
        .cloned()
        .collect();
    (non_empty(&rest), unconfined)
}

/// Applies [`security_options`] to a host config.
fn with_security_options(mut hc: HostConfig, opts: &[String]) -> HostConfig {
    let (rest, unconfined) = security_options(opts);
    hc.security_opt = rest;
    if unconfined {
        hc.masked_paths = Some(Vec::new());
        hc.readonly_paths = Some(Vec::new());
    }
    hc
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn positive(n: i64) -> Option<i64> {
    (n > 0).then_some(n)
}

/// `host[:container[:permissions]]` (Docker's `--device` syntax).
fn devices(specs: &[String]) -> Result<Option<Vec<bollard::models::DeviceMapping>>, DockerError> {
    if specs.is_empty() {
        return Ok(None);
    }
    specs
        .iter()
        .map(|s| {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [host] => Ok((host.to_string(), host.to_string(), "rwm".to_string())),
                [host, cont] => Ok((host.to_string(), cont.to_string(), "rwm".to_string())),
                [host, cont, perm] => Ok((host.to_string(), cont.to_string(), perm.to_string())),
                _ => Err(DockerError::Device { entry: s.clone() }),
            }
            .map(|(h, c, p)| bollard::models::DeviceMapping {
                path_on_host: Some(h),
                path_in_container: Some(c),
                cgroup_permissions: Some(p),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `isolation` for build and service containers (runner executors/docker/docker.go `createHostConfig`,
/// `createHostConfigForService`); the value was checked at load, and the daemon decides what it supports.
fn isolation(cfg: &DockerConfig) -> Option<bollard::models::HostConfigIsolationEnum> {
    use bollard::models::HostConfigIsolationEnum as I;
    match cfg.isolation.as_deref()?.to_ascii_lowercase().as_str() {
        "default" => Some(I::DEFAULT),
        "process" => Some(I::PROCESS),
        "hyperv" => Some(I::HYPERV),
        _ => None,
    }
}

/// `gpus` / `service_gpus` as Docker `DeviceRequests` (runner executors/docker/docker.go
/// `bindContainerDeviceRequests`: docker/cli's `GpuOpts` values, every field sent as Go sends it).
fn device_requests(
    requests: &[runwright_config::GpuRequest],
) -> Option<Vec<bollard::models::DeviceRequest>> {
    if requests.is_empty() {
        return None;
    }
    Some(
        requests
            .iter()
            .map(|r| bollard::models::DeviceRequest {
                driver: Some(r.driver.clone()),
                count: Some(r.count),
                device_ids: r.device_ids.clone(),
                capabilities: Some(r.capabilities.clone()),
                options: Some(r.options.clone().into_iter().collect()),
            })
            .collect(),
    )
}

/// `ulimit = { nofile = "1024:2048" }`.
fn ulimits(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Vec<bollard::models::ResourcesUlimits>>, DockerError> {
    if map.is_empty() {
        return Ok(None);
    }
    map.iter()
        .map(|(name, v)| {
            let (soft, hard) = v.split_once(':').unwrap_or((v, v));
            match (soft.trim().parse::<i64>(), hard.trim().parse::<i64>()) {
                (Ok(s), Ok(h)) => Ok(bollard::models::ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(s),
                    hard: Some(h),
                }),
                _ => Err(DockerError::Ulimit {
                    name: name.clone(),
                    value: v.clone(),
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> DockerConfig {
        let text = format!(
            "[[runners]]\nname = \"r\"\nurl = \"https://x/\"\ntoken = \"t\"\nexecutor = \"docker\"\n[runners.docker]\n{toml_text}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = runwright_config::load(&path).unwrap();
        loaded.config.runners[0].docker.clone().unwrap()
    }

    #[test]
    fn privileged_only_for_allowed_images() {
        let c = cfg("privileged = true\nallowed_privileged_images = [\"docker:*\"]");
        assert_eq!(
            build(&c, "docker:24", vec![], vec![], "")
                .unwrap()
                .privileged,
            Some(true)
        );
        assert_eq!(
            build(&c, "alpine:3", vec![], vec![], "")
                .unwrap()
                .privileged,
            Some(false)
        );
        // Services follow `privileged` unless `services_privileged` says otherwise.
        assert_eq!(
            service(&c, "docker:24-dind", vec![], "")
                .unwrap()
                .privileged,
            Some(true)
        );
        let c = cfg("privileged = true\nservices_privileged = false");
        assert_eq!(
            service(&c, "docker:24-dind", vec![], "")
                .unwrap()
                .privileged,
            Some(false)
        );
        let c = cfg("privileged = true\nallowed_privileged_services = [\"docker:*-dind\"]");
        assert_eq!(
            service(&c, "postgres:16", vec![], "").unwrap().privileged,
            Some(false)
        );
        assert_eq!(
            service(&c, "docker:24-dind", vec![], "")
                .unwrap()
                .privileged,
            Some(true)
        );
    }

    #[test]
    fn the_build_hosts_runner_and_least_privilege_services() {
        let c = cfg(
            "privileged = true\nshm_size = 0\noom_kill_disable = false\nmemory = \"512m\"\ncpus = \"1.5\"\n\
             cap_add = [\"NET_ADMIN\"]\ncap_drop = [\"MKNOD\"]\ndevices = [\"/dev/fuse\"]\n\
             extra_hosts = [\"h:10.0.0.1\"]\ndns = [\"10.0.0.53\"]\nsecurity_opt = [\"no-new-privileges\"]\n\
             services_cap_add = [\"ALL\"]\nservices_cap_drop = [\"SYS_RESOURCE\"]\n\
             services_security_opt = [\"seccomp=unconfined\", \"systempaths=unconfined\"]\n\
             ulimit = { nofile = \"1024:2048\" }",
        );
        let b = build(
            &c,
            "docker:24",
            vec!["v:/cache".into()],
            vec!["svc:1.2.3.4".into()],
            "net",
        )
        .unwrap();
        assert_eq!(b.shm_size, None);
        assert_eq!(b.oom_kill_disable, None);
        assert_eq!(b.memory, Some(512 * 1024 * 1024));
        assert_eq!(b.nano_cpus, Some(1_500_000_000));
        assert_eq!(b.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(b.cap_drop, Some(vec!["MKNOD".to_string()]));
        assert_eq!(b.extra_hosts, Some(vec!["svc:1.2.3.4".to_string()]));
        assert_eq!(b.network_mode.as_deref(), Some("net"));
        assert_eq!(b.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(b.masked_paths, None);
        let d = &b.devices.as_ref().unwrap()[0];
        assert_eq!(d.path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(b.ulimits.as_ref().unwrap()[0].hard, Some(2048));

        let s = service(&c, "docker:24-dind", vec!["v:/certs/client".into()], "net").unwrap();
        assert_eq!(s.cap_add, Some(vec!["ALL".to_string()]));
        assert_eq!(s.cap_drop, Some(vec!["SYS_RESOURCE".to_string()]));
        assert_eq!(s.security_opt, Some(vec!["seccomp=unconfined".to_string()]));
        assert_eq!(s.masked_paths, Some(vec![]));
        assert_eq!(s.readonly_paths, Some(vec![]));
        assert_eq!(s.binds, Some(vec!["v:/certs/client".to_string()]));
    }

    #[test]
    fn gpus_become_device_requests_as_docker_run_gpus_makes_them() {
        let c = cfg("gpus = \"all\"\nservice_gpus = '\"device=0,1\",driver=nvidia'");
        let b = build(&c, "cuda:12", vec![], vec![], "").unwrap();
        let req = &b.device_requests.expect("build container requests GPUs")[0];
        assert_eq!(req.count, Some(-1));
        assert_eq!(req.driver.as_deref(), Some(""));
        assert_eq!(req.device_ids, None);
        assert_eq!(req.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(req.options, Some(Default::default()));
        let s = service(&c, "tritonserver:24", vec![], "").unwrap();
        let req = &s.device_requests.as_ref().expect("service requests GPUs")[0];
        assert_eq!(req.count, Some(0));
        assert_eq!(req.driver.as_deref(), Some("nvidia"));
        assert_eq!(req.device_ids, Some(vec!["0".to_string(), "1".to_string()]));
        // The JSON the Engine API receives, field for field.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["DeviceRequests"],
            serde_json::json!([{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]], "Options": {}}])
        );
        // `isolation` goes to every container.
        let c = cfg("isolation = \"Default\"");
        let json = serde_json::to_value(build(&c, "a", vec![], vec![], "").unwrap()).unwrap();
        assert_eq!(json["Isolation"], "default");
        let json = serde_json::to_value(service(&c, "a", vec![], "").unwrap()).unwrap();
        assert_eq!(json["Isolation"], "default");
        // Nothing requested without the keys.
        let c = cfg("");
        assert_eq!(
            build(&c, "a", vec![], vec![], "").unwrap().device_requests,
            None
        );
        assert_eq!(service(&c, "a", vec![], "").unwrap().device_requests, None);
    }

    #[test]
    fn bad_devices_and_ulimits_are_configuration_errors() {
        assert!(devices(&["a:b:c:d".into()]).is_err());
        let mut m = std::collections::BTreeMap::new();
        m.insert("nofile".to_string(), "lots".to_string());
        assert!(ulimits(&m).is_err());
    }
}
