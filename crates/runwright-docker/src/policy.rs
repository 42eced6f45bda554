//! What a job may ask for: allowed images, services, privilege and pull policies (reference `protocol.md` §8.4,
//! §10; runner executors/docker `verifyAllowedImage`, helpers/pull_policies `ComputeEffectivePullPolicies`).

use crate::DockerError;
use runwright_config::PullPolicy;

/// GitLab's allow-lists are doublestar globs: `*` stays within a path segment, `**` crosses them.
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| {
        globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(false)
    })
}

/// `Ok` when the list is empty or `name` matches; else GitLab's message.
pub fn check_allowed(
    kind: &'static str,
    name: &str,
    allowed: &[String],
) -> Result<(), DockerError> {
    if allowed.is_empty() || matches_any(allowed, name) {
        return Ok(());
    }
    Err(DockerError::NotAllowed {
        kind,
        name: name.to_string(),
        allowed: allowed.to_vec(),
    })
}

/// Privilege applies only when configured and the image is on the allow-list (an empty list allows all).
pub fn privileged(configured: bool, image: &str, allowed: &[String]) -> bool {
    configured && (allowed.is_empty() || matches_any(allowed, image))
}

pub fn parse_policy(name: &str) -> Result<PullPolicy, DockerError> {
    match name.trim() {
        "always" => Ok(PullPolicy::Always),
        "if-not-present" => Ok(PullPolicy::IfNotPresent),
        "never" => Ok(PullPolicy::Never),
        other => Err(DockerError::UnsupportedPullPolicy {
            name: other.to_string(),
        }),
    }
}

pub fn policy_name(p: PullPolicy) -> &'static str {
    match p {
        PullPolicy::Always => "always",
        PullPolicy::IfNotPresent => "if-not-present",
        PullPolicy::Never => "never",
    }
}

fn list(ps: &[PullPolicy]) -> String {
    format!(
        "[{}]",
        ps.iter()
            .map(|p| policy_name(*p))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The policies to try, in order: the job's when it set some, else the runner's; each must be allowed.
pub fn effective_pull_policies(
    job: Option<&[String]>,
    configured: &[PullPolicy],
    allowed: &[PullPolicy],
) -> Result<Vec<PullPolicy>, DockerError> {
    let requested: Vec<PullPolicy> = match job.filter(|j| !j.is_empty()) {
        Some(names) => names
            .iter()
            .map(|n| parse_policy(n))
            .collect::<Result<_, _>>()?,
        None => configured.to_vec(),
    };
    let effective: Vec<PullPolicy> = requested
        .iter()
        .copied()
        .filter(|p| allowed.contains(p))
        .collect();
    if effective.is_empty() {
        return Err(DockerError::PullPolicyNotAllowed {
            requested,
            allowed: allowed.to_vec(),
        });
    }
    Ok(effective)
}

pub fn policies_text(ps: &[PullPolicy]) -> String {
    list(ps)
}

/// A job image's or service's `docker:` options (GitLab's `executor_opts.docker`; the service checks the keys).
#[derive(Debug, Default, PartialEq)]
pub struct DockerOpts {
    pub user: Option<String>,
    pub platform: Option<String>,
}

pub fn docker_opts(opts: Option<&serde_json::Value>) -> DockerOpts {
    let docker = opts.and_then(|o| o.get("docker"));
    let text = |key: &str| {
        docker
            .and_then(|d| d.get(key))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    DockerOpts {
        user: text("user"),
        platform: text("platform"),
    }
}

/// The container user: `[runners.docker] user` wins over the job's `docker:user`, which must be on
/// `allowed_users` when that list is set (GitLab runner MR !4550).
pub fn effective_user(
    configured: Option<&str>,
    job: Option<&str>,
    allowed: &[String],
) -> Result<Option<String>, DockerError> {
    if let Some(u) = configured.filter(|u| !u.is_empty()) {
        return Ok(Some(u.to_string()));
    }
    match job {
        Some(u) if !allowed.is_empty() && !allowed.iter().any(|a| a == u) => {
            Err(DockerError::UserNotAllowed {
                user: u.to_string(),
                allowed: allowed.to_vec(),
            })
        }
        other => Ok(other.map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PullPolicy::*;

    #[test]
    fn job_policies_must_be_allowed() {
        assert_eq!(
            effective_pull_policies(None, &[Always], &[Always]).unwrap(),
            vec![Always]
        );
        let job = vec!["if-not-present".to_string(), "always".to_string()];
        assert_eq!(
            effective_pull_policies(Some(&job), &[Always], &[Always, IfNotPresent]).unwrap(),
            vec![IfNotPresent, Always]
        );
        let err = effective_pull_policies(Some(&["never".to_string()]), &[Always], &[Always])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[never]") && err.contains("[always]"), "{err}");
        assert!(
            effective_pull_policies(Some(&["sometimes".to_string()]), &[Always], &[Always])
                .is_err()
        );
    }

    #[test]
    fn allow_lists_are_doublestar_globs() {
        let allowed = vec!["docker:*".to_string(), "registry.local/**".to_string()];
        assert!(matches_any(&allowed, "docker:24-dind"));
        assert!(matches_any(&allowed, "registry.local/a/b:1"));
        assert!(!matches_any(&allowed, "evil/docker:24"));
        assert!(check_allowed("image", "alpine", &allowed)
            .unwrap_err()
            .to_string()
            .contains("- docker:*"));
        assert!(privileged(true, "x", &[]));
        assert!(!privileged(true, "x", &allowed));
        assert!(!privileged(false, "docker:1", &[]));
    }

    #[test]
    fn job_user_is_limited_by_allowed_users_and_config_user_wins() {
        let allowed = vec!["1000".to_string(), "nobody".to_string()];
        assert_eq!(
            effective_user(Some("root"), Some("1000"), &allowed).unwrap(),
            Some("root".into())
        );
        assert_eq!(
            effective_user(None, Some("1000"), &allowed).unwrap(),
            Some("1000".into())
        );
        assert!(effective_user(None, Some("0"), &allowed)
            .unwrap_err()
            .to_string()
            .contains("is not an allowed user"));
        assert_eq!(
            effective_user(None, Some("0"), &[]).unwrap(),
            Some("0".into())
        );
        assert_eq!(effective_user(Some(""), None, &[]).unwrap(), None);
        let opts = serde_json::json!({"docker": {"user": 1000, "platform": "linux/amd64"}});
        assert_eq!(
            docker_opts(Some(&opts)),
            DockerOpts {
                user: Some("1000".into()),
                platform: Some("linux/amd64".into())
            }
        );
        assert_eq!(docker_opts(None), DockerOpts::default());
    }
}
