//! An address of this host that containers reach: the gateway of a Docker network. Since the predefined stages
//! run in the helper container, git and the helper's transfers talk to GitLab from inside a container, so a
//! coordinator on this machine (`runwright exec`'s embedded one, the tests') must listen where containers get to:
//! 127.0.0.1 inside a container is the container itself. A bridge network's gateway is an address of this host's
//! own bridge interface, reachable from containers on any network of the daemon (packets to a local address are
//! delivered, not forwarded between bridges), and from this host's processes like any local address.

use crate::engine_api;
use crate::DockerError;
use bollard::models::NetworkCreateRequest;
use bollard::Docker;
use std::collections::HashMap;
use std::net::IpAddr;

/// The IPv4 gateway of the bridge network `name`, created (labelled `labels`) when missing.
pub async fn gateway(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<IpAddr, DockerError> {
    let network = match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(n) => n,
        Err(e) if engine_api::is_not_found(&e) => {
            let created = docker
                .create_network(NetworkCreateRequest {
                    name: name.to_string(),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await;
            // Another process may have made it in between: use theirs.
            if let Err(e) = created {
                tracing::debug!(
                    "creating network {name}: {}",
                    engine_api::daemon_message(&e)
                );
            }
            docker
                .inspect_network(
                    name,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .map_err(|e| DockerError::daemon(format!("inspecting network {name}"), e))?
        }
        Err(e) => return Err(DockerError::daemon(format!("inspecting network {name}"), e)),
    };
    network
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.gateway)
        .filter_map(|g| g.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| DockerError::NoGateway {
            network: name.to_string(),
        })
}
