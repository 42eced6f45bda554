//! Writing `config.toml` without losing what a person wrote in it: comments, key order, spacing and unknown
//! keys stay as they are (`toml_edit`); only the keys a verb changes are touched.
//!
//! Every save keeps the file what it was (issue 17 item 7), as GitLab's runner does by writing in place (runner
//! common/config.go `defaultConfigSaver.Save`: `os.WriteFile(filePath, data, 0o600)`, which follows a symlink
//! and keeps an existing file's owner and mode; 0600 only for a new file). We write atomically instead — a
//! temporary file beside the real one, fsync, rename — so a failed or interrupted write never leaves a
//! half-written config: a symlinked `config.toml` has its target replaced (the link stays a link, and the old
//! token does not stay behind in the target), and the new file gets the old one's owner, group and mode. Where
//! that cannot be done without changing the file — its directory takes no new file (a service user that owns
//! `config.toml` in a root-owned `/etc/gitlab-runner`), its owner cannot be given back (not root), or it has
//! other hard links that a rename would leave holding the old token — the file is rewritten in place, as GitLab's
//! runner does.

use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use toml_edit::{DocumentMut, Item, Value};

/// What to do when the config file cannot be written.
const WRITE_ADVICE: &str = "run as the config's owner (often root) or give another path with -c";

/// Why `config.toml` was left as it was: one line saying what failed and what to do (the file, the key, the
/// advice), printed as is by the verbs.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source} (give its path with -c/--config)", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}: not valid TOML, nothing changed: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The first line of the parser's message.
        message: String,
    },
    /// The rendered runner entry does not parse (a bug, or a value that escapes its quoting).
    #[error("the new runner entry is not valid TOML: {0}")]
    NewEntry(#[source] toml_edit::TomlError),
    /// The entry to change is not in the file.
    #[error("runner entry {index} not found in the config file")]
    NoEntry {
        /// Its position among the `[[runners]]`.
        index: usize,
    },
    /// The changed file would not load.
    #[error("the changed configuration does not load, nothing written: {0}")]
    DoesNotLoad(#[source] crate::ConfigError),
    /// The change would break a `[[runners]]` entry.
    #[error("the changed configuration has a [[runners]] entry that does not load, nothing written: {errors}")]
    BreaksEntry {
        /// Each broken entry's error, `; `-separated.
        errors: String,
    },
    /// A token time cannot be written as a TOML datetime.
    #[error("formatting a token time: {0}")]
    TokenTime(String),
    /// The file cannot be opened for writing.
    #[error("cannot write config file {shown}: {source}; {WRITE_ADVICE}")]
    NotWritable {
        /// The file (and its symlink's target).
        shown: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A new file cannot be made in the file's directory.
    #[error("cannot write config file {shown}: its directory {} is not writable ({source}); {WRITE_ADVICE}", dir.display())]
    DirNotWritable {
        /// The file (and its symlink's target).
        shown: String,
        /// Its directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A symlink on the way cannot be read.
    #[error("cannot read the symlink {}: {source}", path.display())]
    ReadLink {
        /// The symlink.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Too many symlinks to follow.
    #[error("cannot write config file {}: more than {max} symlinks to follow (a loop?)", path.display())]
    SymlinkLoop {
        /// The config file as given.
        path: PathBuf,
        /// How many were followed.
        max: usize,
    },
    /// The file's directory cannot be made.
    #[error("cannot create directory {}: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing the new file failed; the old one is as it was.
    #[error("cannot write config file {shown}: {source}; the file was left unchanged")]
    Write {
        /// The file (and its symlink's target).
        shown: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing in place failed part-way.
    #[error("cannot write config file {shown} in place: {source}; check it is complete (`runwright config check`)")]
    InPlace {
        /// The file (and its symlink's target).
        shown: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, EditError>;

/// What a fresh config file starts with (GitLab's runner writes `concurrent = 1`, `check_interval = 0` and a
/// `[session_server]` table on first registration).
const NEW_FILE: &str =
    "concurrent = 1\ncheck_interval = 0\nshutdown_timeout = 0\n\n[session_server]\n  session_timeout = 1800\n";

/// A config file opened for editing.
pub struct ConfigDoc {
    /// The file as given (a symlink stays one: saves write its target).
    pub path: PathBuf,
    doc: DocumentMut,
    /// The text as read (empty for a file that does not exist yet).
    original: String,
}

impl ConfigDoc {
    /// Reads `path`; a missing file becomes GitLab's starting content when `create` is set.
    pub fn open(path: &Path, create: bool) -> Result<ConfigDoc> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => String::new(),
            Err(source) => {
                return Err(EditError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let body = if text.trim().is_empty() {
            NEW_FILE
        } else {
            &text
        };
        let doc = body.parse::<DocumentMut>().map_err(|e| EditError::Syntax {
            path: path.to_owned(),
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        })?;
        Ok(ConfigDoc {
            path: path.to_owned(),
            doc,
            original: text,
        })
    }

    /// Appends a `[[runners]]` entry rendered as GitLab's runner lays it out (two-space indentation).
    pub fn append_runner(&mut self, block: &str) -> Result<()> {
        let mut text = self.doc.to_string();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(block);
        self.doc = text.parse::<DocumentMut>().map_err(EditError::NewEntry)?;
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
    ) -> Result<()> {
        let table = self
            .runners_mut()
            .and_then(|r| r.get_mut(index))
            .ok_or(EditError::NoEntry { index })?;
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
    pub fn save(&self) -> Result<()> {
        let text = self.doc.to_string();
        let loaded = crate::parse(&text, &self.path).map_err(EditError::DoesNotLoad)?;
        if text == self.original {
            return Ok(());
        }
        // An invalid `[[runners]]` entry no longer rejects the file (it stops only that runner), so an edit is
        // refused when it leaves more invalid entries than the file had: it must not break a runner.
        let before = crate::parse(&self.original, &self.path)
            .map(|l| l.invalid_runners.len())
            .unwrap_or(0);
        if loaded.invalid_runners.len() > before {
            let errors: Vec<&str> = loaded
                .invalid_runners
                .iter()
                .map(|r| r.error.as_str())
                .collect();
            return Err(EditError::BreaksEntry {
                errors: errors.join("; "),
            });
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

/// `time` → TOML datetime; `None` is Go's zero time, as GitLab's runner writes "never".
fn datetime(t: Option<OffsetDateTime>) -> Result<Value> {
    let s = match t {
        Some(t) => t
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(t)
            .format(&Rfc3339)
            .map_err(|e| EditError::TokenTime(e.to_string()))?,
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    let dt: toml_edit::Datetime = s
        .parse()
        .map_err(|e: toml_edit::DatetimeParseError| EditError::TokenTime(e.to_string()))?;
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

/// Fails early, without touching anything, when `path` could not be written: an existing file (a symlink's
/// target) must be writable, a new one needs a directory that takes it.
pub fn check_writable(path: &Path) -> Result<()> {
    let target = resolve_symlinks(path)?;
    if target.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .map_err(|source| EditError::NotWritable {
                shown: shown(path, &target),
                source,
            })?;
        return Ok(());
    }
    let dir = parent_dir(&target);
    if !dir.exists() {
        return Ok(());
    }
    let probe = tempfile::Builder::new()
        .prefix(".runwright-probe")
        .tempfile_in(&dir)
        .map_err(|source| EditError::DirNotWritable {
            shown: shown(path, &target),
            dir: dir.clone(),
            source,
        })?;
    drop(probe);
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `path`, and the file it stands for when that is another (a symlink).
fn shown(path: &Path, target: &Path) -> String {
    if path == target {
        path.display().to_string()
    } else {
        format!("{} (-> {})", path.display(), target.display())
    }
}

/// The file `path` names once its symlinks are followed (it may not exist yet: a dangling link names the file
/// to create). Only the last component is followed link by link; the directories on the way stay as given.
fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    // Linux's own limit on links followed in one lookup (MAXSYMLINKS).
    const MAX_LINKS: usize = 40;
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&current).map_err(|source| EditError::ReadLink {
                    path: current.clone(),
                    source,
                })?;
                current = if link.is_absolute() {
                    link
                } else {
                    parent_dir(&current).join(link)
                };
            }
            _ => return Ok(current),
        }
    }
    Err(EditError::SymlinkLoop {
        path: path.to_owned(),
        max: MAX_LINKS,
    })
}

/// Writes `bytes` to `path` — the file at the end of its symlinks — keeping that file's owner, group and mode
/// (0600 for a new file, its directory created 0700 as GitLab's runner does): atomically where it can, in place
/// where a rename would change the file (see the module documentation).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = resolve_symlinks(path)?;
    let dir = parent_dir(&target);
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| EditError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
    }
    let fail = |source: std::io::Error| EditError::Write {
        shown: shown(path, &target),
        source,
    };
    let existing = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(e)),
    };
    if existing.as_ref().is_some_and(|m| m.nlink() > 1) {
        // A rename would leave the other names holding the old content (and token).
        return write_in_place(&target, bytes).map_err(|e| in_place_failed(path, &target, e));
    }
    let mut tmp = match tempfile::Builder::new()
        .prefix(".config.toml.")
        // Created 0600: nobody else reads the new token while it is written, whatever the final mode.
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
    {
        Ok(t) => t,
        // The directory takes no new file, the file itself may still be writable (GitLab's runner writes it so).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && existing.is_some() => {
            return write_in_place(&target, bytes).map_err(|e| in_place_failed(path, &target, e));
        }
        Err(e) => return Err(fail(e)),
    };
    if let Some(m) = &existing {
        // The owner first (chown clears set-id bits), then the mode.
        let owned = std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()));
        if let Err(e) = owned {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                // Not root and not the owner of a file we may write: only writing in place keeps its owner.
                drop(tmp);
                return write_in_place(&target, bytes)
                    .map_err(|e| in_place_failed(path, &target, e));
            }
            return Err(fail(e));
        }
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(fail)?;
    }
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(&target).map_err(|e| fail(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rewrites an existing file in place: truncated, written, synced (runner common/config.go
/// `defaultConfigSaver.Save`). Owner, mode and other hard links stay.
fn write_in_place(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(target)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn in_place_failed(path: &Path, target: &Path, source: std::io::Error) -> EditError {
    EditError::InPlace {
        shown: shown(path, target),
        source,
    }
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
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

    /// Every file under `dir` (recursively) whose bytes hold `needle`.
    fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                found.extend(files_holding(&p, needle));
            } else if ft.is_file()
                && String::from_utf8_lossy(&std::fs::read(&p).expect("read")).contains(needle)
            {
                found.push(p);
            }
        }
        found
    }

    fn rotate_first(path: &Path, new: &str) {
        let mut doc = ConfigDoc::open(path, false).expect("open");
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        doc.set_token(0, new, at, None).expect("set");
        doc.save().expect("save");
    }

    #[test]
    fn a_symlinked_config_is_written_in_its_target_and_stays_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).expect("dir");
        let real = real_dir.join("runner.toml");
        std::fs::write(&real, WITH_COMMENTS).expect("write");
        let link_dir = dir.path().join("etc");
        std::fs::create_dir(&link_dir).expect("dir");
        let link = link_dir.join("config.toml");
        // A relative link, through a second link.
        std::os::unix::fs::symlink("../real/runner.toml", link_dir.join("middle.toml"))
            .expect("link");
        std::os::unix::fs::symlink("middle.toml", &link).expect("link");
        check_writable(&link).expect("writable");
        rotate_first(&link, "glrt-NEWTOKEN-after-rotation");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("middle.toml")
        );
        let text = std::fs::read_to_string(&real).expect("read");
        assert!(text.contains("glrt-NEWTOKEN-after-rotation"), "{text}");
        assert_eq!(
            files_holding(dir.path(), "glrt-aaaaaaaaaaaaaaaaaaaa"),
            Vec::<PathBuf>::new(),
            "the old token stayed"
        );
    }

    #[test]
    fn a_dangling_symlink_gets_its_target_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(dir.path().join("state/real.toml"), &link).expect("link");
        let mut doc = ConfigDoc::open(&link, true).expect("open");
        doc.append_runner("[[runners]]\n  name = \"c\"\n  url = \"https://x/\"\n  token = \"t\"\n  executor = \"shell\"\n")
            .expect("append");
        doc.save().expect("save");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        let real = dir.path().join("state/real.toml");
        assert!(std::fs::read_to_string(&real)
            .expect("read")
            .contains("name = \"c\""));
        assert_eq!(
            std::fs::metadata(&real).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_symlink_loop_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.toml");
        std::os::unix::fs::symlink("b.toml", &a).expect("link");
        std::os::unix::fs::symlink("a.toml", dir.path().join("b.toml")).expect("link");
        let err = write_atomic(&a, b"x").expect_err("refused");
        assert!(err.to_string().contains("symlinks to follow"), "{err}");
    }

    #[test]
    fn owner_group_and_mode_survive_a_save() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, WITH_COMMENTS).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let root = nix::unistd::Uid::effective().is_root();
        if root {
            std::os::unix::fs::chown(&path, Some(4242), Some(4243)).expect("chown");
        } else {
            #[allow(clippy::print_stderr)] // a skipped check must say so
            {
                eprintln!("owner not checked: needs root to give the file to another user");
            }
        }
        rotate_first(&path, "glrt-NEWTOKEN-after-rotation");
        let m = std::fs::metadata(&path).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        if root {
            assert_eq!((m.uid(), m.gid()), (4242, 4243));
        }
        assert_eq!(
            files_holding(dir.path(), "glrt-aaaaaaaaaaaaaaaaaaaa"),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn a_hard_linked_config_is_rewritten_in_place_so_no_name_keeps_the_old_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, WITH_COMMENTS).expect("write");
        let other = dir.path().join("copy.toml");
        std::fs::hard_link(&path, &other).expect("hard link");
        rotate_first(&path, "glrt-NEWTOKEN-after-rotation");
        for p in [&path, &other] {
            assert!(std::fs::read_to_string(p)
                .expect("read")
                .contains("glrt-NEWTOKEN-after-rotation"));
        }
        assert_eq!(
            files_holding(dir.path(), "glrt-aaaaaaaaaaaaaaaaaaaa"),
            Vec::<PathBuf>::new()
        );
    }
}
