//! `runwright helper-image build`: runwright's helper image (the docker executor's default `helper_image`),
//! assembled from this host's packages and built by the Docker daemon, local or remote (`--host`). The service
//! does the same by itself when a job needs the image and the daemon lacks it; this verb builds it ahead of time,
//! or under another name (`--tag`), or with GitLab's helper contract only (`--contract-only`).

use anyhow::Context;
use clap::{Args, Subcommand};
use runwright_docker::helper_image::{self, Binary, Layout};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum HelperImageCommand {
    /// Build the helper image (skipped when the daemon has it already, unless --force) and print its name.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The image's name (default: runwright/gitlab-runner-helper:<arch>-v<version>-<binary hash>, the name the
    /// service looks for).
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// The Docker daemon (default: DOCKER_HOST, else the local socket).
    #[arg(long, short = 'H')]
    pub host: Option<String>,
    /// The directory of the daemon's TLS client certificates (ca.pem, cert.pem, key.pem) for a tcp:// host.
    #[arg(long, value_name = "DIR")]
    pub tls_cert_path: Option<PathBuf>,
    /// Only what GitLab's helper contract promises: /usr/bin/gitlab-runner-helper (this binary), git and a
    /// shell with the file tools, no runwright path, no git-lfs, no CA bundle.
    #[arg(long)]
    pub contract_only: bool,
    /// The runwright binary to put in (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Build even when the daemon has an image of that name.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: HelperImageCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            HelperImageCommand::Build(a) => build(a).await,
        }
    })
}

async fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let docker = runwright_docker::connect(
        a.host.as_deref(),
        a.tls_cert_path.as_deref(),
        a.tls_cert_path.is_some(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.with_hint()))?;
    let binary = match a.binary {
        Some(p) => Binary::at(p),
        None => Binary::current(),
    }
    .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let tag = a.tag.unwrap_or_else(|| binary.default_tag());
    let layout = if a.contract_only {
        Layout::Contract
    } else {
        Layout::Full
    };
    if !a.force && docker.inspect_image(&tag).await.is_ok() {
        eprintln!("{tag}: already there (--force builds it again)");
    } else {
        helper_image::build(&docker, &binary, layout, &tag)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))
            .with_context(|| format!("building {tag}"))?;
        eprintln!("{tag}: built");
    }
    crate::history_cmd::write_stdout(format!("{tag}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
