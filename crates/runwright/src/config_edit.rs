//! Writing `config.toml` without losing what a person wrote in it: comments, key order, spacing and unknown
//! keys stay as they are (`toml_edit`); only the keys a verb changes are touched. Every save is atomic (a
//! temporary file in the same directory, fsync, rename) and leaves the file mode 0600, as GitLab's runner
//! writes it (runner common/config.go `defaultConfigSaver`: `os.WriteFile(…, 0o600)`), so a failed or
//! interrupted write never leaves a half-written config behind.

use anyhow::{anyhow, bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use toml_edit::{DocumentMut, Item, Value};

/// What a fresh config file starts with (GitLab's runner writes `concurrent = 1`, `check_interval = 0` and a
/// `[session_server]` table on first registration).
const NEW_FILE: &str =
    "concurrent = 1\ncheck_interval = 0\nshutdown_timeout = 0\n\n[session_server]\n  session_timeout = 1800\n";

/// A config file opened for editing.
pub struct ConfigDoc {
    pub path: PathBuf,
    doc: DocumentMut,
    /// The text as read (empty for a file that does not exist yet).
    original: String,
}

impl ConfigDoc {
    /// Reads `path`; a missing file becomes GitLab's starting content when `create` is set.
    pub fn open(path: &Path, create: bool) -> anyhow::Result<ConfigDoc> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => String::new(),
            Err(e) => {
                return Err(anyhow!(
                    "cannot read config file {}: {e} (give its path with -c/--config)",
                    path.display()
                ))
            }
        };
        let body = if text.trim().is_empty() {
            NEW_FILE
        } else {
            &text
        };
        let doc = body.parse::<DocumentMut>().map_err(|e| {
            anyhow!(
                "{}: not valid TOML, nothing changed: {}",
                path.display(),
                e.to_string().lines().next().unwrap_or("").trim()
            )
        })?;
        Ok(ConfigDoc {
            path: path.to_owned(),
            doc,
            original: text,
        })
    }

    /// Appends a `[[runners]]` entry rendered as GitLab's runner lays it out (two-space indentation).
    pub fn append_runner(&mut self, block: &str) -> anyhow::Result<()> {
        let mut text = self.doc.to_string();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(block);
        self.doc = text
            .parse::<DocumentMut>()
            .map_err(|e| anyhow!("the new runner entry is not valid TOML: {e}"))?;
        Ok(())
    }

    fn runners_mut(&mut self) -> Option<&mut toml_edit::ArrayOfTables> {
        self.doc
            .get_mut("runners")
            .and_then(Item::as_array_of_tables_mut)
    }

    /// The index of the `[[runners]]` entry holding `token`.
    pub fn runner_index_by_token(&self, token: &str) -> Option<usize> {
        self.doc
            .get("runners")
            .and_then(Item::as_array_of_tables)?
            .iter()
            .position(|t| t.get("token").and_then(Item::as_str) == Some(token))
    }

    /// Removes the `index`th `[[runners]]` entry (its sub-tables go with it).
    pub fn remove_runner(&mut self, index: usize) {
        if let Some(runners) = self.runners_mut() {
            if index < runners.len() {
                runners.remove(index);
            }
        }
    }

    /// Sets `token`, `token_obtained_at` and `token_expires_at` of the `index`th entry, keeping each value's
    /// surrounding comments; missing keys are added in GitLab's order (after `token`).
    pub fn set_token(
        &mut self,
        index: usize,
        token: &str,
        obtained_at: OffsetDateTime,
        expires_at: Option<OffsetDateTime>,
    ) -> anyhow::Result<()> {
        let table = self
            .runners_mut()
            .and_then(|r| r.get_mut(index))
            .ok_or_else(|| anyhow!("runner entry {index} not found in the config file"))?;
        set_value(table, "token", Value::from(token), "id");
        set_value(
            table,
            "token_obtained_at",
            datetime(Some(obtained_at))?,
            "token",
        );
        set_value(
            table,
            "token_expires_at",
            datetime(expires_at)?,
            "token_obtained_at",
        );
        Ok(())
    }

    /// Checks the new text loads as a config and writes it atomically (mode 0600). Nothing is written when the
    /// text did not change.
    pub fn save(&self) -> anyhow::Result<()> {
        let text = self.doc.to_string();
        let loaded = runwright_config::parse(&text, &self.path).map_err(|e| {
            anyhow!("the changed configuration does not load, nothing written: {e}")
        })?;
        if text == self.original {
            return Ok(());
        }
        // An invalid `[[runners]]` entry no longer rejects the file (it stops only that runner), so an edit is
        // refused when it leaves more invalid entries than the file had: it must not break a runner.
        let before = runwright_config::parse(&self.original, &self.path)
            .map(|l| l.invalid_runners.len())
            .unwrap_or(0);
        if loaded.invalid_runners.len() > before {
            let errors: Vec<&str> = loaded
                .invalid_runners
                .iter()
                .map(|r| r.error.as_str())
                .collect();
            bail!(
                "the changed configuration has a [[runners]] entry that does not load, nothing written: {}",
                errors.join("; ")
            );
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

/// `time` → TOML datetime; `None` is Go's zero time, as GitLab's runner writes "never".
fn datetime(t: Option<OffsetDateTime>) -> anyhow::Result<Value> {
    let s = match t {
        Some(t) => t
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(t)
            .format(&Rfc3339)
            .context("formatting a token time")?,
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    let dt: toml_edit::Datetime = s.parse().context("formatting a token time")?;
    Ok(Value::from(dt))
}

fn set_value(table: &mut toml_edit::Table, key: &str, mut value: Value, after: &str) {
    if let Some(item) = table.get_mut(key) {
        if let Some(old) = item.as_value() {
            *value.decor_mut() = old.decor().clone();
        }
        *item = Item::Value(value);
        return;
    }
    // A new key: indented like the entry's other keys, placed after `token` when there is one.
    let indent = table
        .iter()
        .next()
        .and_then(|(k, _)| table.key(k))
        .and_then(|k| k.leaf_decor().prefix())
        .and_then(|p| p.as_str())
        .map(|p| p.rsplit('\n').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "  ".into());
    let mut order: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    let at = order
        .iter()
        .position(|k| k == after)
        .map_or(order.len(), |p| p + 1);
    order.insert(at, key.to_string());
    table.insert(key, Item::Value(value));
    if let Some(mut k) = table.key_mut(key) {
        k.leaf_decor_mut().set_prefix(indent);
    }
    let rank = |k: &str| order.iter().position(|o| o == k).unwrap_or(usize::MAX);
    table.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
}

/// TOML string literal (quotes and escapes) for a rendered entry.
pub fn quote(s: &str) -> String {
    Value::from(s).to_string().trim().to_string()
}

/// Fails early, without touching anything, when `path` could not be written: its directory must take a new
/// file (the atomic rename) and an existing file must be writable.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    if !dir.exists() {
        return Ok(());
    }
    let probe = tempfile::Builder::new()
        .prefix(".runwright-probe")
        .tempfile_in(&dir)
        .map_err(|e| {
            anyhow!(
                "cannot write config file {}: its directory {} is not writable ({e}); run as the config's owner (often root) or give another path with -c",
                path.display(),
                dir.display()
            )
        })?;
    drop(probe);
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| {
                anyhow!(
                    "cannot write config file {}: {e}; run as the config's owner (often root) or give another path with -c",
                    path.display()
                )
            })?;
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename; mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow!("cannot create directory {}: {e}", dir.display()))?;
    }
    let fail = |e: std::io::Error| {
        anyhow!(
            "cannot write config file {}: {e}; the file was left unchanged",
            path.display()
        )
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .tempfile_in(&dir)
        .map_err(fail)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_COMMENTS: &str = r#"# global settings
concurrent = 4 # four at once
check_interval = 0

# the build host
[[runners]]
  name = "a"   # first
  url = "https://gitlab.example.com/"
  token = "glrt-aaaaaaaaaaaaaaaaaaaa" # keep secret
  token_obtained_at = 2025-01-01T00:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "shell"
  [runners.custom_build_dir]
    enabled = true

# second one
[[runners]]
  name = "b"
  url = "https://gitlab.example.com/"
  token = "glrtr-bbbbbbbbbbbbbbbbbbbb"
  executor = "shell"
"#;

    #[test]
    fn token_update_keeps_comments_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, WITH_COMMENTS).expect("write");
        let mut doc = ConfigDoc::open(&path, false).expect("open");
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        doc.set_token(
            0,
            "glrt-NEWNEWNEWNEWNEW",
            at,
            Some(at + time::Duration::days(30)),
        )
        .expect("set");
        doc.set_token(1, "glrtr-NEW2", at, None).expect("set");
        doc.save().expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        let expected = WITH_COMMENTS
            .replace(
                "token = \"glrt-aaaaaaaaaaaaaaaaaaaa\" # keep secret",
                "token = \"glrt-NEWNEWNEWNEWNEW\" # keep secret",
            )
            .replace(
                "token_obtained_at = 2025-01-01T00:00:00Z\n  token_expires_at = 0001-01-01T00:00:00Z",
                "token_obtained_at = 2027-01-15T08:00:00Z\n  token_expires_at = 2027-02-14T08:00:00Z",
            )
            .replace(
                "token = \"glrtr-bbbbbbbbbbbbbbbbbbbb\"\n",
                "token = \"glrtr-NEW2\"\n  token_obtained_at = 2027-01-15T08:00:00Z\n  token_expires_at = 0001-01-01T00:00:00Z\n",
            );
        assert_eq!(text, expected);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn remove_and_append_keep_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, WITH_COMMENTS).expect("write");
        let mut doc = ConfigDoc::open(&path, false).expect("open");
        doc.remove_runner(0);
        doc.append_runner("[[runners]]\n  name = \"c\"\n  url = \"https://x/\"\n  token = \"t\"\n  executor = \"shell\"\n")
            .expect("append");
        doc.save().expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# global settings\nconcurrent = 4 # four at once\n"));
        assert!(!text.contains("name = \"a\""));
        assert!(text.contains("# second one\n[[runners]]\n  name = \"b\""));
        assert!(text.ends_with("executor = \"shell\"\n\n[[runners]]\n  name = \"c\"\n  url = \"https://x/\"\n  token = \"t\"\n  executor = \"shell\"\n"));
    }

    #[test]
    fn invalid_result_is_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, WITH_COMMENTS).expect("write");
        let mut doc = ConfigDoc::open(&path, false).expect("open");
        // An entry without `executor` does not load: nothing is written.
        doc.append_runner("[[runners]]\n  name = \"c\"\n  url = \"https://x/\"\n  token = \"t\"\n")
            .expect("append");
        assert!(doc.save().is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), WITH_COMMENTS);
    }
}
