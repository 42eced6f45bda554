//! `register`: adds a `[[runners]]` entry (reference `protocol.md` §1.2, §1.3, §9.1; runner
//! commands/register.go). A legacy registration token (`-r`) creates the runner with `POST /runners`; a runner
//! authentication token (`-t`, or a `glrt-` token given with `-r`) is only verified, since the runner already
//! exists in GitLab. Flags and environment variables are GitLab's; on a terminal, missing answers are asked
//! for. The config is written only after GitLab said yes, and when that write fails the new runner is
//! unregistered again (unless `--leave-runner`), so neither side is left half-done.

use super::{client, failed, info, now, parse_expiry, runtime};
use crate::args::ConfigArg;
use anyhow::{anyhow, bail};
use clap::builder::BoolishValueParser;
use clap::Args;
use runwright_client::RegisterRequest;
use runwright_config::edit::{check_writable, quote, ConfigDoc};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// Executors GitLab's runner knows (runner executors/*); runwright runs `shell` and `docker`.
const EXECUTORS: &[&str] = &[
    "shell",
    "docker",
    "docker-windows",
    "docker+machine",
    "docker-autoscaler",
    "instance",
    "kubernetes",
    "custom",
    "ssh",
    "parallels",
    "virtualbox",
];

#[derive(Args, Debug, Default)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Run registration unattended (no prompts).
    #[arg(short = 'n', long, env = runwright_static::env_vars::REGISTER_NON_INTERACTIVE)]
    pub non_interactive: bool,
    /// Don't remove the runner from GitLab if writing the config fails.
    #[arg(long, env = runwright_static::env_vars::REGISTER_LEAVE_RUNNER)]
    pub leave_runner: bool,
    /// Legacy registration token (deprecated by GitLab; use --token with a glrt- token).
    #[arg(short = 'r', long, env = runwright_static::env_vars::REGISTRATION_TOKEN)]
    pub registration_token: Option<String>,
    /// Runner authentication token (glrt-…) of a runner created in GitLab.
    #[arg(short = 't', long, env = runwright_static::env_vars::CI_SERVER_TOKEN)]
    pub token: Option<String>,
    /// GitLab instance URL.
    #[arg(short = 'u', long, env = runwright_static::env_vars::CI_SERVER_URL)]
    pub url: Option<String>,
    /// Runner name (also --description).
    #[arg(long = "name", visible_alias = "description", env = runwright_static::env_vars::RUNNER_NAME)]
    pub name: Option<String>,
    /// Executor: shell, docker, …
    #[arg(long, env = runwright_static::env_vars::RUNNER_EXECUTOR)]
    pub executor: Option<String>,
    /// Comma-separated tags (legacy registration only).
    #[arg(long, env = runwright_static::env_vars::RUNNER_TAG_LIST)]
    pub tag_list: Option<String>,
    /// Run untagged jobs (legacy registration only; default: true when there are no tags).
    #[arg(long, env = runwright_static::env_vars::REGISTER_RUN_UNTAGGED, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub run_untagged: Option<bool>,
    /// Lock the runner to the current project (legacy registration only; default true).
    #[arg(long, env = runwright_static::env_vars::REGISTER_LOCKED, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub locked: Option<bool>,
    /// not_protected or ref_protected (legacy registration only).
    #[arg(long, env = runwright_static::env_vars::REGISTER_ACCESS_LEVEL)]
    pub access_level: Option<String>,
    /// Maximum job timeout in seconds (legacy registration only).
    #[arg(long, env = runwright_static::env_vars::REGISTER_MAXIMUM_TIMEOUT)]
    pub maximum_timeout: Option<i64>,
    /// Register the runner paused (legacy registration only).
    #[arg(long, env = runwright_static::env_vars::REGISTER_PAUSED, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub paused: Option<bool>,
    /// Maintenance note (legacy registration only).
    #[arg(long, env = runwright_static::env_vars::REGISTER_MAINTENANCE_NOTE)]
    pub maintenance_note: Option<String>,
    /// Default image of the docker executor.
    #[arg(long, env = runwright_static::env_vars::DOCKER_IMAGE)]
    pub docker_image: Option<String>,
    /// Privileged docker containers.
    #[arg(long, env = runwright_static::env_vars::DOCKER_PRIVILEGED, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub docker_privileged: Option<bool>,
    /// Docker volumes (repeatable); `/cache` is always added.
    #[arg(long, env = runwright_static::env_vars::DOCKER_VOLUMES, value_delimiter = ',')]
    pub docker_volumes: Vec<String>,
    /// Shell of the shell executor (bash, sh, …).
    #[arg(long, env = runwright_static::env_vars::RUNNER_SHELL)]
    pub shell: Option<String>,
    /// Maximum concurrent jobs of this runner (0 = only `concurrent` limits).
    #[arg(long, env = runwright_static::env_vars::RUNNER_LIMIT)]
    pub limit: Option<usize>,
    /// Maximum parallel job requests of this runner.
    #[arg(long, env = runwright_static::env_vars::RUNNER_REQUEST_CONCURRENCY)]
    pub request_concurrency: Option<usize>,
    /// Builds directory.
    #[arg(long, env = runwright_static::env_vars::RUNNER_BUILDS_DIR)]
    pub builds_dir: Option<String>,
    /// Cache directory.
    #[arg(long, env = runwright_static::env_vars::RUNNER_CACHE_DIR)]
    pub cache_dir: Option<String>,
    /// CA bundle for GitLab's certificate.
    #[arg(long = "tls-ca-file", env = runwright_static::env_vars::CI_SERVER_TLS_CA_FILE)]
    pub tls_ca_file: Option<String>,
}

/// Asks for what is missing, on a terminal (runner commands/register.go `askRunner`, `askExecutor`).
pub struct Prompter<'a> {
    pub input: &'a mut dyn BufRead,
    pub output: &'a mut dyn Write,
}

impl Prompter<'_> {
    fn ask(&mut self, question: &str, default: Option<&str>) -> anyhow::Result<String> {
        loop {
            match default {
                Some(d) if !d.is_empty() => writeln!(self.output, "{question}\n[{d}]: ")?,
                _ => writeln!(self.output, "{question}")?,
            }
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                bail!("register: input ended before all answers were given; pass them as flags with --non-interactive");
            }
            let answer = line.trim();
            if !answer.is_empty() {
                return Ok(answer.to_string());
            }
            if let Some(d) = default {
                return Ok(d.to_string());
            }
        }
    }

    /// Fills the missing answers of `args`.
    pub fn fill(&mut self, args: &mut RegisterArgs) -> anyhow::Result<()> {
        if args.url.is_none() {
            args.url = Some(self.ask(
                "Enter the GitLab instance URL (for example, https://gitlab.com/):",
                None,
            )?);
        }
        if args.token.is_none() && args.registration_token.is_none() {
            let t = self.ask("Enter the registration token:", None)?;
            if t.starts_with("glrt-") {
                args.token = Some(t);
            } else {
                args.registration_token = Some(t);
            }
        }
        if args.name.is_none() {
            let host = hostname();
            args.name = Some(self.ask(
                "Enter a name for the runner. This is stored only in the local config.toml file:",
                Some(&host),
            )?);
        }
        let legacy = args.token.is_none();
        if legacy && args.tag_list.is_none() {
            args.tag_list =
                Some(self.ask("Enter tags for the runner (comma-separated):", Some(""))?);
        }
        if args.executor.is_none() {
            loop {
                let e = self.ask(
                    &format!("Enter an executor: {}:", EXECUTORS.join(", ")),
                    None,
                )?;
                if EXECUTORS.contains(&e.as_str()) {
                    args.executor = Some(e);
                    break;
                }
                writeln!(self.output, "Invalid executor specified")?;
            }
        }
        if args.executor.as_deref() == Some("docker") && args.docker_image.is_none() {
            args.docker_image = Some(self.ask(
                "Enter the default Docker image (for example, ruby:2.7):",
                None,
            )?);
        }
        Ok(())
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

pub fn run(mut args: RegisterArgs) -> anyhow::Result<ExitCode> {
    if !args.non_interactive && std::io::stdin().is_terminal() {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut output = std::io::stderr();
        Prompter {
            input: &mut input,
            output: &mut output,
        }
        .fill(&mut args)?;
    }
    let path = args.config.path();
    let url = args.url.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
        anyhow!("register: the GitLab URL is missing: give --url (or CI_SERVER_URL)")
    })?;
    let name = args.name.clone().unwrap_or_else(hostname);
    let executor = args.executor.clone().filter(|e| !e.is_empty()).ok_or_else(|| {
        anyhow!("register: the executor is missing: give --executor (shell or docker; or RUNNER_EXECUTOR)")
    })?;
    if !EXECUTORS.contains(&executor.as_str()) {
        bail!(
            "register: unknown executor {executor:?}: use one of {}",
            EXECUTORS.join(", ")
        );
    }
    if executor != "shell" && executor != "docker" {
        eprintln!("WARNING: runwright cannot run the {executor} executor yet; the entry is written but will not request jobs");
    }
    if executor == "docker" && args.docker_image.as_deref().unwrap_or("").is_empty() {
        bail!("register: the docker executor needs a default image: give --docker-image (or DOCKER_IMAGE)");
    }

    // Which flow: a runner authentication token is verified only (runner commands/register.go).
    let (token, via_registration_flag) = match (&args.token, &args.registration_token) {
        (Some(t), _) if !t.is_empty() => (t.clone(), false),
        (_, Some(t)) if !t.is_empty() => (t.clone(), true),
        _ => bail!("register: the token is missing: give --token glrt-… (a runner created in GitLab) or --registration-token (legacy)"),
    };
    let verify_only = !via_registration_flag || token.starts_with("glrt-");
    if verify_only {
        let server_side: Vec<&str> = [
            ("--locked", args.locked.is_some()),
            ("--access-level", args.access_level.is_some()),
            ("--run-untagged", args.run_untagged.is_some()),
            ("--maximum-timeout", args.maximum_timeout.is_some()),
            ("--paused", args.paused.is_some()),
            (
                "--tag-list",
                args.tag_list.as_deref().is_some_and(|t| !t.is_empty()),
            ),
            ("--maintenance-note", args.maintenance_note.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f)
        .collect();
        if !server_side.is_empty() {
            if via_registration_flag {
                eprintln!(
                    "WARNING: {} ignored: a runner authentication token's runner is configured in GitLab",
                    server_side.join(", ")
                );
            } else {
                bail!(
                    "register: {} cannot be used with a runner authentication token: the runner's settings live in GitLab (edit them there), remove these flags",
                    server_side.join(", ")
                );
            }
        }
    }

    // Everything that can fail locally is checked before GitLab is asked.
    if path.exists() {
        runwright_config::load(&path)
            .map_err(|e| anyhow!("register: {e}; fix the file first, nothing was changed"))?;
    }
    check_writable(&path)?;
    let mut doc = ConfigDoc::open(&path, true)?;

    let rt = runtime()?;
    let client = client(&url, None)?;
    let shown = client.base_url_redacted();
    let system_id = system_id_for(&path);
    let result = if verify_only {
        let mut i = info(&executor, args.shell.as_deref());
        i.name = "runwright".into();
        rt.block_on(client.verify_runner(&token, &system_id, &i))
            .map_err(|e| failed("verifying the runner token", &e, &url))?
    } else {
        let tags = args.tag_list.clone().unwrap_or_default();
        let req = RegisterRequest {
            token: token.clone(),
            description: name.clone(),
            maintenance_note: args.maintenance_note.clone().unwrap_or_default(),
            run_untagged: args.run_untagged.unwrap_or(tags.trim().is_empty()),
            tag_list: tags,
            locked: args.locked.unwrap_or(true),
            access_level: args.access_level.clone().unwrap_or_default(),
            maximum_timeout: args.maximum_timeout,
            paused: args.paused.unwrap_or(false),
            info: info("", None),
        };
        rt.block_on(client.register_runner(&req))
            .map_err(|e| failed(&format!("registering the runner at {shown}"), &e, &url))?
    };
    let runner_token = if result.token.is_empty() {
        token.clone()
    } else {
        result.token.clone()
    };
    eprintln!(
        "{:<50} runner={}",
        "Registering runner... succeeded",
        runwright_config::short_token(&runner_token)
    );

    let block = render_entry(
        &args,
        &name,
        &url,
        &executor,
        result.id,
        &runner_token,
        parse_expiry(result.token_expires_at.as_deref()),
    );
    let saved = doc.append_runner(&block).and_then(|_| doc.save());
    if let Err(e) = saved {
        if !args.leave_runner {
            let undo = if verify_only {
                rt.block_on(client.unregister_runner_manager(&runner_token, &system_id))
            } else {
                rt.block_on(client.unregister_runner(&runner_token))
            };
            if let Err(u) = undo {
                eprintln!("WARNING: could not remove the runner from GitLab again: {u}");
            }
        }
        return Err(anyhow!("register: {e:#}"));
    }
    eprintln!(
        "Runner registered successfully. Feel free to start it, but if it's running already the config should be automatically reloaded!"
    );
    eprintln!(
        "\nConfiguration (with the authentication token) was saved in {:?}",
        path.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}

/// The system ID of this host for this config (`.runner_system_id`), created when missing.
pub fn system_id_for(path: &std::path::Path) -> String {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match runwright_config::load_or_create_system_id(path) {
        Ok(id) => id,
        Err(runwright_config::ConfigError::SystemIdWrite { id, .. }) => id,
        Err(_) => runwright_config::system_id_from_machine_id(&hostname()),
    }
}

/// The new entry, laid out as GitLab's runner writes it.
#[allow(clippy::too_many_arguments)]
fn render_entry(
    args: &RegisterArgs,
    name: &str,
    url: &str,
    executor: &str,
    id: i64,
    token: &str,
    expires_at: Option<time::OffsetDateTime>,
) -> String {
    let mut b = String::from("[[runners]]\n");
    let mut line = |k: &str, v: String| b.push_str(&format!("  {k} = {v}\n"));
    line("name", quote(name));
    line("url", quote(url));
    line("id", id.to_string());
    line("token", quote(token));
    line("token_obtained_at", super::fmt_time(now()));
    line(
        "token_expires_at",
        expires_at
            .map(super::fmt_time)
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
    );
    if let Some(ca) = &args.tls_ca_file {
        line("tls-ca-file", quote(ca));
    }
    if let Some(l) = args.limit {
        line("limit", l.to_string());
    }
    if let Some(rc) = args.request_concurrency {
        line("request_concurrency", rc.to_string());
    }
    line("executor", quote(executor));
    if let Some(s) = &args.shell {
        line("shell", quote(s));
    }
    if let Some(d) = &args.builds_dir {
        line("builds_dir", quote(d));
    }
    if let Some(d) = &args.cache_dir {
        line("cache_dir", quote(d));
    }
    b.push_str("  [runners.cache]\n    MaxUploadedArchiveSize = 0\n");
    if executor == "docker" {
        let mut volumes = args.docker_volumes.clone();
        if !volumes.iter().any(|v| v == "/cache") {
            volumes.push("/cache".into());
        }
        let volumes: Vec<String> = volumes.iter().map(|v| quote(v)).collect();
        b.push_str(&format!(
            "  [runners.docker]\n    image = {}\n    privileged = {}\n    volumes = [{}]\n    shm_size = 0\n",
            quote(args.docker_image.as_deref().unwrap_or("")),
            args.docker_privileged.unwrap_or(false),
            volumes.join(", ")
        ));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_fill_what_is_missing() {
        let mut input: &[u8] =
            b"https://gitlab.example.com/\nGR1348941abc\n\nci,linux\nbogus\ndocker\nalpine:3\n";
        let mut output = Vec::new();
        let mut args = RegisterArgs::default();
        Prompter {
            input: &mut input,
            output: &mut output,
        }
        .fill(&mut args)
        .expect("answers");
        assert_eq!(args.url.as_deref(), Some("https://gitlab.example.com/"));
        assert_eq!(args.registration_token.as_deref(), Some("GR1348941abc"));
        assert_eq!(args.name.as_deref(), Some(hostname().as_str()));
        assert_eq!(args.tag_list.as_deref(), Some("ci,linux"));
        assert_eq!(args.executor.as_deref(), Some("docker"));
        assert_eq!(args.docker_image.as_deref(), Some("alpine:3"));
        let shown = String::from_utf8(output).expect("utf8");
        assert!(shown.contains("Invalid executor specified"));
    }

    #[test]
    fn glrt_answer_skips_tags() {
        let mut input: &[u8] = b"https://g/\nglrt-xyz\nhost\nshell\n";
        let mut output = Vec::new();
        let mut args = RegisterArgs::default();
        Prompter {
            input: &mut input,
            output: &mut output,
        }
        .fill(&mut args)
        .expect("answers");
        assert_eq!(args.token.as_deref(), Some("glrt-xyz"));
        assert!(args.tag_list.is_none());
        assert_eq!(args.executor.as_deref(), Some("shell"));
    }
}
