//! Talking to the Docker daemon: connecting as `host`/`tls_*` or `DOCKER_HOST` say, images by pull policy, and
//! running one stage in a container the way GitLab's runner feeds it (reference `protocol.md` §10 "Script
//! feeding": attach, start, script on stdin, output demultiplexed into the trace, exit code from wait).

use crate::DockerError;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, CreateImageOptions, KillContainerOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use runwright_config::PullPolicy;
use runwright_trace::timestamp::STREAM_WORK;
use runwright_trace::{StreamType, TraceBuffer};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Seconds to wait for the daemon on every call that is not a stream.
const API_TIMEOUT_SECS: u64 = 120;

/// Connects to the daemon the runner entry names, else `DOCKER_HOST`, else the local socket, and agrees on the
/// API version (Debian's dockerd speaks 1.41).
/// rustls needs one process-wide crypto provider, and the workspace's dependencies enable two (`ring` and
/// `aws-lc-rs`), so rustls cannot pick one by itself and panics on the first TLS client. The first call installs
/// aws-lc-rs (what hyper-rustls here is built with); later calls, or a provider installed elsewhere, win.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub async fn connect(
    host: Option<&str>,
    tls_cert_path: Option<&std::path::Path>,
    tls_verify: bool,
) -> Result<Docker, DockerError> {
    let from_env = std::env::var(runwright_static::env_vars::DOCKER_HOST).ok();
    let host = host
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .or(from_env);
    let docker = match host.as_deref() {
        None => Docker::connect_with_unix(
            "unix:///var/run/docker.sock",
            API_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        ),
        Some(h) if h.starts_with("unix://") => {
            Docker::connect_with_unix(h, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        Some(h)
            if h.starts_with("tcp://") || h.starts_with("https://") || h.starts_with("http://") =>
        {
            let certs = tls_cert_path.map(std::path::PathBuf::from).or_else(|| {
                std::env::var_os(runwright_static::env_vars::DOCKER_CERT_PATH).map(Into::into)
            });
            match certs {
                Some(dir) if tls_verify || h.starts_with("https://") => {
                    install_crypto_provider();
                    Docker::connect_with_ssl(
                        h,
                        &dir.join("key.pem"),
                        &dir.join("cert.pem"),
                        &dir.join("ca.pem"),
                        API_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
                _ => Docker::connect_with_http(h, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
            }
        }
        Some(other) => {
            return Err(DockerError::UnsupportedHost {
                host: other.to_string(),
            })
        }
    }
    .map_err(|source| DockerError::Connect { source })?;
    docker
        .negotiate_version()
        .await
        .map_err(|source| DockerError::NoAnswer {
            address: host
                .as_deref()
                .unwrap_or("unix:///var/run/docker.sock")
                .to_string(),
            source,
        })
}

/// The message of a daemon error without bollard's wrapping.
pub fn daemon_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => {
            format!("{message} (HTTP {status_code})")
        }
        other => other.to_string(),
    }
}

pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Makes `image` available by the policies in order (the first that yields it wins); the image ID.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    pull: &PullContext<'_>,
    policies: &[PullPolicy],
    trace: &TraceBuffer,
    cancel: &CancellationToken,
) -> Result<String, DockerError> {
    let mut errors = Vec::new();
    for policy in policies {
        let local = docker.inspect_image(image).await;
        match (policy, local) {
            (PullPolicy::Never | PullPolicy::IfNotPresent, Ok(found)) => {
                if *policy == PullPolicy::IfNotPresent {
                    trace.write(
                        b"Using locally found image version due to \"if-not-present\" pull policy\n",
                    );
                }
                let id = found.id.clone().unwrap_or_default();
                trace.write(format!("Using docker image {id} for {image} ...\n").as_bytes());
                return Ok(id);
            }
            (PullPolicy::Never, Err(source)) => {
                errors.push(DockerError::NotPresent { source });
                continue;
            }
            // An image referenced by ID is never pulled (`always` uses it when present).
            (PullPolicy::Always, Ok(found)) if image.starts_with("sha256:") => {
                return Ok(found.id.clone().unwrap_or_default())
            }
            _ => {}
        }
        let credentials = pull.auth.for_image(image).map(|(creds, source)| {
            trace.write(format!("Authenticating with credentials from {source}\n").as_bytes());
            creds
        });
        trace.write(format!("Pulling docker image {image} ...\n").as_bytes());
        match pull_image(docker, image, pull.platform, credentials, cancel).await {
            Ok(()) => match docker.inspect_image(image).await {
                Ok(found) => {
                    let id = found.id.unwrap_or_default();
                    trace.write(format!("Using docker image {id} for {image} ...\n").as_bytes());
                    return Ok(id);
                }
                Err(e) => errors.push(DockerError::Api(e)),
            },
            Err(e) if cancel.is_cancelled() => {
                let _ = e;
                return Err(DockerError::Canceled);
            }
            Err(e) => {
                crate::warn(
                    trace,
                    &format!(
                        "Failed to pull image with policy \"{}\": {}",
                        crate::policy::policy_name(*policy),
                        e.with_hint()
                    ),
                );
                errors.push(e);
            }
        }
    }
    Err(DockerError::Pull {
        image: image.to_string(),
        policies: policies.to_vec(),
        errors,
    })
}

/// What a pull needs besides the image: registry credentials and the job's platform.
pub struct PullContext<'a> {
    pub auth: &'a crate::auth::Resolver,
    pub platform: Option<&'a str>,
}

async fn pull_image(
    docker: &Docker,
    image: &str,
    platform: Option<&str>,
    credentials: Option<bollard::auth::DockerCredentials>,
    cancel: &CancellationToken,
) -> Result<(), DockerError> {
    let (from, tag) = split_tag(image);
    let options = CreateImageOptions {
        from_image: Some(from.to_string()),
        tag: Some(tag.to_string()),
        platform: platform.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, credentials);
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = cancel.cancelled() => return Err(DockerError::Canceled),
        };
        match next {
            None => return Ok(()),
            Some(Ok(info)) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(DockerError::Registry { message });
                }
            }
            Some(Err(e)) => return Err(DockerError::Api(e)),
        }
    }
}

/// `name[:tag][@digest]` → (name, tag or digest); `latest` when neither is given.
fn split_tag(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// A container's or exec's output as the daemon streams it.
pub(crate) type Output = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// Writes a stage script to a container's or exec's stdin and closes it, in a task of its own. A script that
/// exits before reading all of stdin must not fail the stage: EPIPE is ignored.
pub(crate) fn feed_stdin(
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    script: &str,
) -> tokio::task::JoinHandle<()> {
    let script = script.as_bytes().to_vec();
    tokio::spawn(async move {
        let _ = input.write_all(&script).await;
        let _ = input.shutdown().await;
    })
}

/// Copies the output frames into the job's work streams, stdout and stderr, and closes them when the output
/// ends (runner executors/docker/docker.go `startAndWatchContainer`).
pub(crate) async fn pump_output(mut output: Output, trace: &TraceBuffer) {
    let stdout = trace.stream(STREAM_WORK, StreamType::Stdout);
    let stderr = trace.stream(STREAM_WORK, StreamType::Stderr);
    while let Some(frame) = output.next().await {
        match frame {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                stdout.write(&message)
            }
            Ok(LogOutput::StdErr { message }) => stderr.write(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(_) => break,
        }
    }
    stdout.close();
    stderr.close();
}

/// Runs one stage: attach to the (created or stopped) container, start it, feed `script` on stdin, copy the
/// output into the trace and return the exit code. On cancel: SIGTERM to the container's processes, then
/// SIGKILL after `grace`.
pub async fn run_stage(
    docker: &Docker,
    container: &str,
    script: &str,
    trace: &TraceBuffer,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<i32, DockerError> {
    let attach = docker
        .attach_container(
            container,
            Some(AttachContainerOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| DockerError::daemon(format!("attaching to {container}"), e))?;
    if let Err(e) = docker.start_container(container, None).await {
        return Err(start_error(container, e));
    }
    let feeder = feed_stdin(attach.input, script);
    let trace_for_pump = trace.clone();
    let output = attach.output;
    let pump = tokio::spawn(async move { pump_output(output, &trace_for_pump).await });
    let waited = tokio::select! {
        w = wait_exit(docker, container) => Some(w),
        _ = cancel.cancelled() => None,
    };
    let result = match waited {
        Some(r) => r,
        None => {
            terminate(docker, container, grace).await;
            Err(DockerError::Canceled)
        }
    };
    feeder.abort();
    if tokio::time::timeout(Duration::from_secs(5), pump)
        .await
        .is_err()
    {
        tracing::warn!(
            container,
            "stage output still open 5 s after the stage ended"
        );
    }
    result
}

async fn wait_exit(docker: &Docker, container: &str) -> Result<i32, DockerError> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(r)) => Ok(r.status_code as i32),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(DockerError::daemon(format!("waiting for {container}"), e)),
        None => Err(DockerError::NoExitCode {
            container: container.to_string(),
        }),
    }
}

/// What a failed start means for the user: most often an image without a shell.
fn start_error(container: &str, e: bollard::errors::Error) -> DockerError {
    let msg = daemon_message(&e);
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        DockerError::NoShell { source: e }
    } else {
        DockerError::daemon(format!("starting {container}"), e)
    }
}

/// SIGTERM to the container's main process (the stage shell, which passes it on), SIGKILL after `grace`.
pub async fn terminate(docker: &Docker, container: &str, grace: Duration) {
    let kill = |signal: &str| KillContainerOptions {
        signal: signal.to_string(),
    };
    let _ = docker
        .kill_container(container, Some(kill("SIGTERM")))
        .await;
    if tokio::time::timeout(grace, wait_exit(docker, container))
        .await
        .is_err()
    {
        let _ = docker
            .kill_container(container, Some(kill("SIGKILL")))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), wait_exit(docker, container)).await;
    }
}

/// Removes a container and its anonymous volumes, whatever state it is in.
pub async fn remove_container(docker: &Docker, container: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(container, Some(options)).await {
        if !is_not_found(&e) {
            tracing::warn!(container, "removing container: {}", daemon_message(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_and_digests() {
        assert_eq!(split_tag("alpine"), ("alpine", "latest"));
        assert_eq!(
            split_tag("127.0.0.1:5999/a/b:1"),
            ("127.0.0.1:5999/a/b", "1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5999/a/b"),
            ("127.0.0.1:5999/a/b", "latest")
        );
        assert_eq!(split_tag("a@sha256:00"), ("a", "sha256:00"));
    }
}
