//! The dashboard's token when `config.toml` sets none (issue 17 item 4): without one every local user — and
//! every job on the host — could read every job's trace on a loopback `listen_address`. The service generates a
//! token on its first start and keeps it in `.runwright_dashboard_token` beside `config.toml` (where
//! `.runner_system_id` lives), a regular file of the service's user, mode 0600; later starts reuse it. A file
//! that others could have read or written (wrong owner, group or other bits, a symlink, not a token) is
//! replaced by a new token: the old one may be known.
//!
//! State owned: that file.

use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Beside `config.toml`.
pub const TOKEN_FILE: &str = ".runwright_dashboard_token";

/// Bytes of randomness in a generated token (64 hex digits).
const TOKEN_BYTES: usize = 32;

/// Where the dashboard's token comes from.
#[derive(Debug)]
pub enum Source {
    /// `[dashboard] token`.
    Configured(String),
    /// The token file; `created` on the start that generated it.
    Stored {
        token: String,
        path: PathBuf,
        created: bool,
    },
    /// `[dashboard] require_token = false`.
    Off,
}

impl Source {
    pub fn token(&self) -> Option<&str> {
        match self {
            Source::Configured(t) | Source::Stored { token: t, .. } => Some(t),
            Source::Off => None,
        }
    }
}

/// The token file that belongs to `config_path`.
pub fn token_path(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(TOKEN_FILE)
}

/// The dashboard's token as `[dashboard]` and the token file decide; a generated one is written now.
pub fn resolve(
    section: &runwright_config::DashboardConfig,
    config_path: &Path,
) -> anyhow::Result<Source> {
    if let Some(t) = section.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Source::Configured(t.to_string()));
    }
    if section.require_token == Some(false) {
        return Ok(Source::Off);
    }
    let path = token_path(config_path);
    let (token, created) = load_or_create(&path)?;
    Ok(Source::Stored {
        token,
        path,
        created,
    })
}

/// The token in `path` when only this user could have read or written it; else a new one, stored there.
fn load_or_create(path: &Path) -> anyhow::Result<(String, bool)> {
    match load(path) {
        Ok(Some(token)) => return Ok((token, false)),
        Ok(None) => {}
        Err(why) => tracing::warn!(
            "{}: {why}; it is replaced by a new dashboard token (browsers must open the dashboard's URL with \
             the new ?token= once)",
            path.display()
        ),
    }
    let token = generate();
    store(path, &token).with_context(|| {
        format!(
            "cannot store the dashboard's token in {}; set [dashboard] token in config.toml, or make its \
             directory writable for the service",
            path.display()
        )
    })?;
    Ok((token, true))
}

/// `Ok(None)`: no file. `Err`: a file that cannot be trusted (why).
fn load(path: &Path) -> Result<Option<String>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A symlink here could point at another user's file, or let another user point it anywhere.
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read ({e}), or is a symlink")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let uid = nix::unistd::Uid::effective().as_raw();
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != uid {
        return Err(format!(
            "owned by uid {}, not the service's {uid}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o}: others could read or change it",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    file.take(1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let token = text.trim();
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("does not hold a token".into());
    }
    Ok(Some(token.to_string()))
}

fn generate() -> String {
    use rand::Rng;
    let bytes: [u8; TOKEN_BYTES] = rand::rng().random();
    hex::encode(bytes)
}

/// Atomically: a 0600 temporary file beside it, renamed over it (a symlink or another user's file in its place
/// is replaced, not written through).
fn store(path: &Path, token: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".runwright_dashboard_token.")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(token.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What the operator opens: `http://<addr>/` with the token once (a wildcard address as loopback).
pub fn url(local: std::net::SocketAddr, token: Option<&str>) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let base = format!("http://{}/", std::net::SocketAddr::new(ip, local.port()));
    match token {
        Some(t) => format!(
            "{base}?token={}",
            percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn section(token: Option<&str>, require: Option<bool>) -> runwright_config::DashboardConfig {
        runwright_config::DashboardConfig {
            token: token.map(str::to_string),
            require_token: require,
            ..Default::default()
        }
    }

    #[test]
    fn a_token_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let Source::Stored {
            token,
            path,
            created,
        } = resolve(&section(None, None), &config).expect("token")
        else {
            panic!("not stored")
        };
        assert!(created);
        assert_eq!(token.len(), 64);
        assert_eq!(path, dir.path().join(TOKEN_FILE));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let Source::Stored {
            token: again,
            created,
            ..
        } = resolve(&section(None, None), &config).expect("token")
        else {
            panic!("not stored")
        };
        assert!(!created);
        assert_eq!(again, token);
    }

    #[test]
    fn a_token_file_others_could_read_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let path = token_path(&config);
        let known = "a".repeat(64);
        std::fs::write(&path, &known).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let Source::Stored { token, created, .. } =
            resolve(&section(None, None), &config).expect("token")
        else {
            panic!("not stored")
        };
        assert!(created);
        assert_ne!(token, known);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A symlink in its place is replaced, its target left alone.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "x").expect("write");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("link");
        let Source::Stored { created, .. } = resolve(&section(None, None), &config).expect("token")
        else {
            panic!("not stored")
        };
        assert!(created);
        assert!(!std::fs::symlink_metadata(&path)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), "x");
    }

    #[test]
    fn a_configured_token_or_none_writes_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        assert!(matches!(
            resolve(&section(Some("t"), None), &config),
            Ok(Source::Configured(t)) if t == "t"
        ));
        assert!(matches!(
            resolve(&section(None, Some(false)), &config),
            Ok(Source::Off)
        ));
        assert!(!token_path(&config).exists());
    }

    #[test]
    fn the_url_opens_on_loopback_for_a_wildcard_address() {
        let a: std::net::SocketAddr = "0.0.0.0:9252".parse().expect("addr");
        assert_eq!(url(a, Some("ab12")), "http://127.0.0.1:9252/?token=ab12");
        let b: std::net::SocketAddr = "[::1]:80".parse().expect("addr");
        assert_eq!(url(b, None), "http://[::1]:80/");
    }
}
