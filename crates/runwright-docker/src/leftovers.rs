//! What a job left on Docker when the service that ran it died (SIGKILL, a crash): its containers, its network
//! and its temporary volumes, found by the labels every one of them carries (`names::labels`: job id, runner
//! short token and system id). The journal's recovery removes them after a restart (issue 6); cache volumes
//! stay, as they would after a job that ended.

use crate::engine_api::{daemon_message, is_not_found, remove_container};
use crate::names::LABEL_PREFIX;
use crate::DockerError;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use std::collections::HashMap;

/// The job whose leftovers to find.
#[derive(Debug, Clone)]
pub struct JobLabels {
    pub job_id: i64,
    pub short_token: String,
    pub system_id: String,
}

/// What was removed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}

fn filters(job: &JobLabels, more: &[String]) -> HashMap<String, Vec<String>> {
    let mut labels = vec![
        format!("{LABEL_PREFIX}.managed=true"),
        format!("{LABEL_PREFIX}.job.id={}", job.job_id),
        format!("{LABEL_PREFIX}.runner.id={}", job.short_token),
    ];
    if !job.system_id.is_empty() {
        labels.push(format!("{LABEL_PREFIX}.runner.system_id={}", job.system_id));
    }
    labels.extend(more.iter().cloned());
    HashMap::from([("label".to_string(), labels)])
}

/// Removes the job's containers (forced, with their anonymous volumes), then its network, then its temporary
/// volumes. Errors name what could not be listed; a single removal that fails is logged and skipped.
pub async fn remove_job_leftovers(
    docker: &Docker,
    job: &JobLabels,
) -> Result<Removed, DockerError> {
    let mut removed = Removed::default();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters(job, &[])),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::daemon("listing the job's containers", e))?;
    for c in containers {
        let Some(id) = c.id else { continue };
        remove_container(docker, &id).await;
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or(id);
        removed.containers.push(name);
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters(job, &[])),
        }))
        .await
        .map_err(|e| DockerError::daemon("listing the job's networks", e))?;
    for n in networks {
        let Some(id) = n.id else { continue };
        match docker.remove_network(&id).await {
            Ok(()) => removed.networks.push(n.name.unwrap_or(id)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(network = id, "removing network: {}", daemon_message(&e)),
        }
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters(job, &[format!("{LABEL_PREFIX}.type=temporary")])),
        }))
        .await
        .map_err(|e| DockerError::daemon("listing the job's volumes", e))?;
    for v in volumes.volumes.unwrap_or_default() {
        match docker
            .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => removed.volumes.push(v.name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(volume = v.name, "removing volume: {}", daemon_message(&e)),
        }
    }
    Ok(removed)
}
