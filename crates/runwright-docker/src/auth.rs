//! Registry credentials for pulls, found as GitLab's runner finds them (helpers/docker/auth): the job's
//! `DOCKER_AUTH_CONFIG` variable first, then the runner user's Docker client config (`$DOCKER_CONFIG/config.json`
//! or `~/.docker/config.json`, credential helpers included), then the credentials GitLab sends with the job
//! (the project's registry with the job token). Secrets stay in here: errors and trace lines name only the
//! registry and where its credentials came from.

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use runwright_api::types::Credentials;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The registry host an image is pulled from, normalised so Docker Hub has one name (`docker.io`).
pub fn registry_of(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            normalise(first)
        }
        _ => "docker.io".to_string(),
    }
}

/// `https://host[:port]/path` or `host` → `host[:port]`, lower-case; Docker Hub's aliases → `docker.io`.
fn normalise(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_string();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// One `config.json`-style document (`auths`, `credsStore`, `credHelpers`).
#[derive(Deserialize, Default, Debug)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

// Never print secrets, even in debug logs.
impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry([MASKED])")
    }
}

/// Where credentials came from, as the trace names it.
#[derive(Debug)]
struct Source {
    name: String,
    config: ConfigFile,
}

/// The credential sources of one job, in GitLab's order of precedence.
#[derive(Debug, Default)]
pub struct Resolver {
    sources: Vec<Source>,
    job: Vec<(String, String, String)>,
    /// Sources that could not be read: reported once in the trace, never fatal (GitLab logs and goes on).
    pub problems: Vec<String>,
}

impl Resolver {
    /// `docker_auth_config` is the job's `DOCKER_AUTH_CONFIG` value, if any.
    pub fn new(docker_auth_config: Option<&str>, job_credentials: &[Credentials]) -> Self {
        let mut r = Resolver::default();
        if let Some(text) = docker_auth_config.filter(|t| !t.trim().is_empty()) {
            match serde_json::from_str::<ConfigFile>(text) {
                Ok(config) => r.sources.push(Source {
                    name: "$DOCKER_AUTH_CONFIG".into(),
                    config,
                }),
                // serde's message may quote the input: keep only its position.
                Err(e) => r.problems.push(format!(
                    "$DOCKER_AUTH_CONFIG is not valid JSON (line {}, column {}): ignored",
                    e.line(),
                    e.column()
                )),
            }
        }
        if let Some(path) = client_config_path() {
            match std::fs::read_to_string(&path) {
                Ok(text) => match serde_json::from_str::<ConfigFile>(&text) {
                    Ok(config) => r.sources.push(Source {
                        name: path.display().to_string(),
                        config,
                    }),
                    Err(e) => r.problems.push(format!(
                        "{} is not valid JSON (line {}, column {}): ignored",
                        path.display(),
                        e.line(),
                        e.column()
                    )),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => r
                    .problems
                    .push(format!("reading {}: {e}: ignored", path.display())),
            }
        }
        r.job = job_credentials
            .iter()
            .filter(|c| c.kind.eq_ignore_ascii_case("registry"))
            .map(|c| (normalise(&c.url), c.username.clone(), c.password.clone()))
            .collect();
        r
    }

    /// Credentials for pulling `image` and the name of their source, or `None` to pull anonymously.
    pub fn for_image(&self, image: &str) -> Option<(DockerCredentials, String)> {
        let registry = registry_of(image);
        for source in &self.sources {
            let config = &source.config;
            if let Some(entry) = config
                .auths
                .iter()
                .find(|(k, _)| normalise(k) == registry)
                .map(|(_, v)| v)
            {
                if let Some(creds) = entry_credentials(entry, &registry) {
                    return Some((creds, source.name.clone()));
                }
            }
            let helper = config
                .cred_helpers
                .iter()
                .find(|(k, _)| normalise(k) == registry)
                .map(|(_, v)| v.clone())
                .or_else(|| config.creds_store.clone());
            if let Some(helper) = helper {
                if let Some(creds) = from_helper(&helper, &registry) {
                    return Some((
                        creds,
                        format!("{} (docker-credential-{helper})", source.name),
                    ));
                }
            }
        }
        self.job
            .iter()
            .find(|(host, _, _)| *host == registry)
            .map(|(host, user, pass)| {
                (
                    DockerCredentials {
                        username: Some(user.clone()),
                        password: Some(pass.clone()),
                        serveraddress: Some(host.clone()),
                        ..Default::default()
                    },
                    "job payload (GitLab Registry)".to_string(),
                )
            })
    }
}

fn client_config_path() -> Option<PathBuf> {
    if let Some(dir) =
        std::env::var_os(runwright_static::env_vars::DOCKER_CONFIG).filter(|d| !d.is_empty())
    {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os(runwright_static::env_vars::HOME)
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn entry_credentials(entry: &AuthEntry, registry: &str) -> Option<DockerCredentials> {
    let (username, password) = match (&entry.username, &entry.password, &entry.auth) {
        (Some(u), Some(p), _) if !u.is_empty() => (u.clone(), p.clone()),
        (_, _, Some(auth)) if !auth.is_empty() => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (u, p) = text.split_once(':')?;
            (u.to_string(), p.to_string())
        }
        _ if entry.identity_token.is_some() => {
            return Some(DockerCredentials {
                identitytoken: entry.identity_token.clone(),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            })
        }
        _ => return None,
    };
    Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

/// `docker-credential-<helper> get` with the registry on stdin, as Docker's client calls it.
fn from_helper(helper: &str, registry: &str) -> Option<DockerCredentials> {
    use std::io::Write;
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(registry.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).ok()?;
    // Docker's convention: the user name `<token>` means the secret is an identity token.
    Some(if answer.username == "<token>" {
        DockerCredentials {
            identitytoken: Some(answer.secret),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }
    } else {
        DockerCredentials {
            username: Some(answer.username),
            password: Some(answer.secret),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_images() {
        assert_eq!(registry_of("alpine"), "docker.io");
        assert_eq!(registry_of("library/alpine:3"), "docker.io");
        assert_eq!(
            registry_of("git.gfz.de:5050/icdp/mdis:1@sha256:ab"),
            "git.gfz.de:5050"
        );
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("127.0.0.1:5999/a/b:1"), "127.0.0.1:5999");
        assert_eq!(normalise("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise("HTTPS://Git.GFZ.de:5050/"), "git.gfz.de:5050");
    }

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            kind: "registry".into(),
            url: "git.gfz.de:5050".into(),
            username: user.into(),
            password: pass.into(),
        }
    }

    #[test]
    fn docker_auth_config_wins_over_job_credentials() {
        // "alice:s3cret"
        let cfg = r#"{"auths":{"https://git.gfz.de:5050":{"auth":"YWxpY2U6czNjcmV0"}}}"#;
        let r = Resolver::new(Some(cfg), &[creds("gitlab-ci-token", "job-token")]);
        let (c, source) = r.for_image("git.gfz.de:5050/icdp/mdis:1").expect("found");
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(source, "$DOCKER_AUTH_CONFIG");
        assert!(r.for_image("alpine").is_none());
        assert!(!format!("{r:?}").contains("YWxp"));
    }

    #[test]
    fn job_credentials_apply_to_their_registry_only() {
        let r = Resolver::new(None, &[creds("gitlab-ci-token", "job-token")]);
        let (c, source) = r.for_image("git.gfz.de:5050/icdp/mdis").expect("found");
        assert_eq!(c.password.as_deref(), Some("job-token"));
        assert_eq!(source, "job payload (GitLab Registry)");
        assert!(r.for_image("other.example:5050/x").is_none());
    }

    #[test]
    fn bad_docker_auth_config_is_reported_without_its_content() {
        let r = Resolver::new(Some("{\"auths\": secret-value"), &[]);
        assert_eq!(r.problems.len(), 1);
        assert!(!r.problems[0].contains("secret-value"), "{:?}", r.problems);
    }
}
