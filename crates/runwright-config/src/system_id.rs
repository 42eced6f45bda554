//! The runner's `system_id`: which machine a runner manager runs on.
//!
//! GitLab tells runner managers sharing one token apart by this id (sent as `system_id` with
//! every job request, and shown in the UI), so it must be stable across restarts and, to be a
//! drop-in replacement, equal to what GitLab's own runner would use on the same host. It is kept
//! in `.runner_system_id` beside `config.toml` (runner
//! commands/internal/configfile/system_id_state.go):
//!
//! * a file whose trimmed content matches `^[sr]_[0-9a-zA-Z]{12}$` is reused as is;
//! * otherwise the id is `s_` + the first 12 hex digits of HMAC-SHA256(key = machine id,
//!   message = `"gitlab-runner"`), the machine id being read like Go's
//!   `denisbrodbeck/machineid` does (`/var/lib/dbus/machine-id`, then `/etc/machine-id`,
//!   trimmed) — so the same host yields the same id as GitLab's runner;
//! * without a machine id, `r_` + 12 random ASCII letters and digits;
//! * a new id is written to the file (mode 0600, no newline, parent directory created 0700).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::ConfigError;

/// File name of the system id state, beside `config.toml`.
pub const SYSTEM_ID_FILE_NAME: &str = ".runner_system_id";

/// Length of the id after the `s_`/`r_` prefix.
const ID_LEN: usize = 12;

/// Where GitLab's machine-id library looks on Linux, in order.
const MACHINE_ID_PATHS: [&str; 2] = ["/var/lib/dbus/machine-id", "/etc/machine-id"];

/// Path of the `.runner_system_id` file that belongs to `config_path`.
pub fn system_id_path(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(SYSTEM_ID_FILE_NAME)
}

/// Reads the runner system id stored beside `config_path`, creating it when it is missing or
/// malformed (see the module documentation for the rules, which are GitLab's).
///
/// Errors: an existing file that cannot be read gives [`ConfigError::SystemIdRead`]. When a new
/// id cannot be saved, [`ConfigError::SystemIdWrite`] carries the id anyway: GitLab's runner
/// logs a warning and goes on with it (a read-only config directory is common in containers),
/// and a caller that wants the same behaviour takes `id` from the error.
pub fn load_or_create_system_id(config_path: &Path) -> Result<String, ConfigError> {
    load_or_create_with(&system_id_path(config_path), read_machine_id())
}

/// The id GitLab's runner derives from a machine id: `s_` + 12 hex digits of
/// HMAC-SHA256(key = machine id, message = `"gitlab-runner"`).
pub fn system_id_from_machine_id(machine_id: &str) -> String {
    let mac = hmac_sha256(machine_id.as_bytes(), b"gitlab-runner");
    let hex = hex::encode(mac);
    format!("s_{}", &hex[..ID_LEN])
}

/// Whether `id` has the shape GitLab accepts from the state file.
pub fn is_valid_system_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 2 + ID_LEN
        && matches!(bytes[0], b's' | b'r')
        && bytes[1] == b'_'
        && bytes[2..].iter().all(u8::is_ascii_alphanumeric)
}

pub(crate) fn load_or_create_with(
    file: &Path,
    machine_id: Option<String>,
) -> Result<String, ConfigError> {
    match fs::read(file) {
        Ok(bytes) => {
            let content = String::from_utf8_lossy(&bytes);
            let id = content.trim();
            if is_valid_system_id(id) {
                return Ok(id.to_owned());
            }
            // Malformed content is replaced, as GitLab does.
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::SystemIdRead {
                path: file.to_owned(),
                error: e,
            })
        }
    }

    let id = match machine_id.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => system_id_from_machine_id(m),
        _ => random_system_id(),
    };
    save(file, &id).map_err(|error| ConfigError::SystemIdWrite {
        path: file.to_owned(),
        id: id.clone(),
        error,
    })?;
    Ok(id)
}

fn random_system_id() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(ID_LEN)
        .map(char::from)
        .collect();
    format!("r_{random}")
}

fn read_machine_id() -> Option<String> {
    MACHINE_ID_PATHS.iter().find_map(|p| {
        fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

fn save(file: &Path, id: &str) -> io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file)?;
    // The mode above only applies to a new file; an existing (malformed) one is tightened too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(id.as_bytes())?;
    f.sync_all()
}

/// HMAC-SHA256 (RFC 2104), small enough to not need another dependency.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_with_long_key_matches_rfc_4231_case_6() {
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn machine_derived_id_is_stable_and_well_formed() {
        let a = system_id_from_machine_id("0123456789abcdef0123456789abcdef");
        let b = system_id_from_machine_id("0123456789abcdef0123456789abcdef");
        assert_eq!(a, b);
        assert!(a.starts_with("s_"));
        assert!(is_valid_system_id(&a), "{a}");
        assert_ne!(a, system_id_from_machine_id("another machine"));
    }

    #[test]
    fn validity() {
        assert!(is_valid_system_id("s_0123456789ab"));
        assert!(is_valid_system_id("r_ABCDEFabcdef"));
        assert!(!is_valid_system_id("x_0123456789ab"));
        assert!(!is_valid_system_id("s_0123456789a"));
        assert!(!is_valid_system_id("s_0123456789abc"));
        assert!(!is_valid_system_id("s_0123456789a-"));
        assert!(!is_valid_system_id(""));
    }

    #[test]
    fn created_from_machine_id_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SYSTEM_ID_FILE_NAME);
        let id = load_or_create_with(&file, Some(" 0123abcd\n".into())).unwrap();
        assert_eq!(id, system_id_from_machine_id("0123abcd"));
        assert_eq!(fs::read_to_string(&file).unwrap(), id);
        // Present and valid: reused, whatever the machine id says now.
        assert_eq!(
            load_or_create_with(&file, Some("other".into())).unwrap(),
            id
        );
    }

    #[test]
    fn random_without_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SYSTEM_ID_FILE_NAME);
        let id = load_or_create_with(&file, None).unwrap();
        assert!(id.starts_with("r_") && is_valid_system_id(&id), "{id}");
        let blank = dir.path().join("blank");
        let id2 = load_or_create_with(&blank, Some("   ".into())).unwrap();
        assert!(id2.starts_with("r_"), "{id2}");
        assert_ne!(id, id2);
    }
}
