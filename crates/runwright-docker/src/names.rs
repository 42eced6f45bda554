//! GitLab's names and labels for what a job makes on Docker (reference `protocol.md` §10; runner
//! executors/docker/docker.go `makeContainerName`, helpers/dns `MakeRFC1123Compatible`, labels/labels.go,
//! internal/volumes/manager.go), so a host's cleanup scripts keep finding them.

use md5::{Digest as _, Md5};
use sha2::Sha256;
use std::collections::HashMap;

/// Label prefix GitLab's runner uses for everything it makes.
pub const LABEL_PREFIX: &str = "com.gitlab.gitlab-runner";

/// Lower-case, `[a-z0-9-]` only, no leading/trailing `-`, at most 63 characters (RFC 1123 labels).
pub fn rfc1123(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = mapped.trim_matches('-').to_string();
    out.truncate(63);
    out.trim_end_matches('-').to_string()
}

/// Characters Docker accepts in container names (`[a-zA-Z0-9][a-zA-Z0-9_.-]`).
fn container_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The names of one job's containers, network and volumes.
#[derive(Debug, Clone)]
pub struct JobNames {
    /// `runner-<short token>-project-<id>-concurrent-<slot>`, also the containers' host name.
    pub base: String,
    /// 16 hex characters, new for every job.
    pub random: String,
    /// `runner-<32 hex>`: the prefix of the runner-managed volumes of this (runner, project, slot).
    pub volume_prefix: String,
    pub network: String,
}

impl JobNames {
    pub fn new(
        token: &str,
        short_token: &str,
        system_id: &str,
        project_id: i64,
        slot: usize,
        job_id: i64,
    ) -> Self {
        let random: [u8; 8] = rand::random();
        Self::with_random(
            token,
            short_token,
            system_id,
            project_id,
            slot,
            job_id,
            &hex::encode(random),
        )
    }

    pub fn with_random(
        token: &str,
        short_token: &str,
        system_id: &str,
        project_id: i64,
        slot: usize,
        job_id: i64,
        random: &str,
    ) -> Self {
        Self {
            base: rfc1123(&format!(
                "runner-{short_token}-project-{project_id}-concurrent-{slot}"
            )),
            random: random.to_string(),
            volume_prefix: volume_prefix(token, system_id, project_id, slot),
            network: network_name(short_token, project_id, slot, job_id),
        }
    }

    pub fn build_container(&self) -> String {
        format!("{}-{}-build", self.base, self.random)
    }

    /// GitLab's predefined (helper) container: `<base>-<random>-predefined` (executors/docker/docker.go
    /// `makeContainerName`).
    pub fn helper_container(&self) -> String {
        format!("{}-{}-predefined", self.base, self.random)
    }

    pub fn service_container(&self, service_slug: &str, index: usize) -> String {
        container_safe(&format!(
            "{}-{}-{service_slug}-{index}",
            self.base, self.random
        ))
    }

    /// `<prefix>-cache-<md5 of the container path>[-protected]` (runner ≥ 18.4 naming).
    pub fn cache_volume(&self, destination: &str, protected: bool) -> String {
        let mut name = format!("{}-cache-{}", self.volume_prefix, md5_hex(destination));
        if protected {
            name.push_str("-protected");
        }
        name
    }

    /// A volume that lives for this job only.
    pub fn temporary_volume(&self, destination: &str) -> String {
        format!(
            "{}-{}-tmp-{}",
            self.volume_prefix,
            self.random,
            md5_hex(destination)
        )
    }
}

/// The per-job network `runner-<short>-<project>-<slot>-<job id>` (`CI_BUILD_NETWORK_NAME`).
pub fn network_name(short_token: &str, project_id: i64, slot: usize, job_id: i64) -> String {
    format!("runner-{short_token}-{project_id}-{slot}-{job_id}")
}

/// `runner-` + the first 16 bytes of sha256(`<token>-<system id>-<project id>-<slot>`), hex.
pub fn volume_prefix(token: &str, system_id: &str, project_id: i64, slot: usize) -> String {
    let digest = Sha256::digest(format!("{token}-{system_id}-{project_id}-{slot}").as_bytes());
    format!("runner-{}", hex::encode(&digest[..16]))
}

pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// A service image's derived aliases: the image path without registry port, tag or digest, with `/` → `__`,
/// plus the `/` → `-` spelling when it differs (runner executors/docker/services.go `splitServiceAndVersion`).
pub fn service_aliases(image: &str) -> Vec<String> {
    let path = service_path(image);
    let mut out = vec![path.replace('/', "__")];
    let alt = path.replace('/', "-");
    if alt != out[0] {
        out.push(alt);
    }
    out
}

/// `registry:port/group/image:tag@digest` → `registry/group/image`.
fn service_path(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // The tag is a `:` after the last `/`.
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let no_tag = match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    // A registry port is a `:<digits>` in the first component.
    match no_tag.split_once('/') {
        Some((first, rest)) => match first.split_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                format!("{host}/{rest}")
            }
            _ => no_tag.to_string(),
        },
        None => no_tag.to_string(),
    }
}

/// What the labels describe.
pub struct LabelSource<'a> {
    pub job: &'a runwright_api::types::JobResponse,
    pub short_token: &'a str,
    pub system_id: &'a str,
    pub slot: usize,
    pub extra: &'a std::collections::BTreeMap<String, String>,
}

/// GitLab's labels for a container or volume of `kind` (`build`, `service`, `cache`, `network`, …), plus the
/// configured `container_labels`.
pub fn labels(
    src: &LabelSource<'_>,
    kind: &str,
    more: &[(&str, String)],
) -> HashMap<String, String> {
    let job = src.job;
    let mut l: HashMap<String, String> = [
        ("job.id", job.id.to_string()),
        ("job.url", job_url(job)),
        ("job.sha", job.git_info.sha.clone()),
        ("job.before_sha", job.git_info.before_sha.clone()),
        ("job.ref", job.git_info.ref_name.clone()),
        ("job.timeout", job.runner_info.timeout.to_string()),
        ("project.id", job.job_info.project_id.to_string()),
        ("project.runner_id", src.slot.to_string()),
        ("pipeline.id", pipeline_id(job)),
        ("runner.id", src.short_token.to_string()),
        ("runner.local_id", "0".to_string()),
        ("runner.system_id", src.system_id.to_string()),
        ("managed", "true".to_string()),
        ("type", kind.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{LABEL_PREFIX}.{k}"), v))
    .collect();
    for (k, v) in more {
        l.insert(format!("{LABEL_PREFIX}.{k}"), v.clone());
    }
    for (k, v) in src.extra {
        l.insert(k.clone(), v.clone());
    }
    l
}

fn job_url(job: &runwright_api::types::JobResponse) -> String {
    let project = job
        .variables
        .iter()
        .find(|v| v.key == "CI_PROJECT_URL")
        .map(|v| v.value.clone())
        .unwrap_or_default();
    if project.is_empty() {
        String::new()
    } else {
        format!("{project}/-/jobs/{}", job.id)
    }
}

fn pipeline_id(job: &runwright_api::types::JobResponse) -> String {
    job.variables
        .iter()
        .find(|v| v.key == "CI_PIPELINE_ID")
        .map(|v| v.value.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gitlab() {
        let n = JobNames::with_random(
            "glrt-abcdefghijklmnop",
            "abcdefghi",
            "s_0123",
            42,
            1,
            7,
            "0011223344556677",
        );
        assert_eq!(n.base, "runner-abcdefghi-project-42-concurrent-1");
        assert_eq!(
            n.build_container(),
            "runner-abcdefghi-project-42-concurrent-1-0011223344556677-build"
        );
        assert_eq!(
            n.helper_container(),
            "runner-abcdefghi-project-42-concurrent-1-0011223344556677-predefined"
        );
        assert_eq!(n.network, "runner-abcdefghi-42-1-7");
        // md5("/cache") = 3c3f060a0374fc8bc39395164f415a70 (checked with md5sum)
        assert_eq!(
            n.cache_volume("/cache", false),
            format!("{}-cache-3c3f060a0374fc8bc39395164f415a70", n.volume_prefix)
        );
        assert!(n.cache_volume("/cache", true).ends_with("-protected"));
        assert_eq!(n.volume_prefix.len(), "runner-".len() + 32);
        assert_eq!(rfc1123("Runner_AB--x-"), "runner-ab--x");
    }

    #[test]
    fn service_aliases_follow_gitlab() {
        assert_eq!(service_aliases("docker:24-dind"), vec!["docker"]);
        assert_eq!(service_aliases("postgres"), vec!["postgres"]);
        assert_eq!(
            service_aliases("registry.example.com:5000/group/tools/db:1.2"),
            vec![
                "registry.example.com__group__tools__db",
                "registry.example.com-group-tools-db"
            ]
        );
        assert_eq!(
            service_aliases("tutum/wordpress@sha256:abc"),
            vec!["tutum__wordpress", "tutum-wordpress"]
        );
    }
}
