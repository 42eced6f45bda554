//! Reading `config.toml`: parse, deserialize, validate, and turn every problem into a message
//! with file, line and column.
//!
//! The text is parsed twice: once by `toml`'s span-keeping parser into a `DeTable` (kept as the
//! "map" of the file, to find where a key or value is), and once by `toml`'s serde
//! deserializer into [`Config`], wrapped in `serde_ignored` to collect the keys no struct field
//! takes. Errors raised during deserialization carry the span of the value; the `DeTable` turns
//! that span back into a key path (`runners[0].limit`). Checks that need the whole entry
//! (required keys, executor-specific sections) run afterwards and look spans up by path.
//!
//! No message ever contains a runner token: values of `token` keys are replaced by their short
//! form before a message leaves this module.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::casefold::{self, PathSeg};
use crate::error::{ConfigError, ConfigWarning};
use crate::model::{Config, RunnerConfig};
use crate::token::short_token;

/// A parsed and validated config file, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// Things GitLab's runner accepts but that are likely mistakes (unknown keys, …), in file
    /// order.
    pub warnings: Vec<ConfigWarning>,
}

/// Reads and validates the config file at `path`.
///
/// A missing file is [`ConfigError::NotFound`] (GitLab's runner would start with an empty
/// configuration instead; runwright refuses, since that is almost always a wrong `-c`).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = fs::read_to_string(path).map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Read {
                path: path.to_owned(),
                error,
            }
        }
    })?;
    parse(&text, path)
}

/// Parses and validates `text`; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<LoadedConfig, ConfigError> {
    // A UTF-8 byte order mark is not TOML; editors on Windows add one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut root = DeTable::parse(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_col(text, span.start));
        let mut message = e.message().trim_end().to_owned();
        // The parser points at the repeated key without naming it.
        if message == "duplicate key" {
            if let Some(key) = e.span().and_then(|s| text.get(s)).filter(|k| !k.is_empty()) {
                message = format!("duplicate key `{key}`");
            }
        }
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })?;
    // `URL = …` works in GitLab's runner; see casefold.rs.
    let renamed = casefold::normalize(root.get_mut());
    let doc = Document {
        text,
        path,
        root: root.get_ref(),
    };

    let mut ignored: Vec<Vec<Seg>> = Vec::new();
    let deserializer = toml::de::Deserializer::from(root.clone());
    let config = serde_ignored::deserialize(deserializer, |p| ignored.push(segments(&p)))
        .map_err(|e| doc.deserialize_error(&e))?;

    doc.check_runners(&config)?;

    let mut warnings = Vec::new();
    for r in &renamed {
        let mut segs: Vec<Seg> = r
            .table
            .iter()
            .map(|s| match s {
                PathSeg::Key(k) => Seg::Key((*k).to_owned()),
                PathSeg::Index(i) => Seg::Index(*i),
            })
            .collect();
        segs.push(Seg::Key(r.written.clone()));
        warnings.push(doc.warning(
            &r.span,
            format!(
                "key '{}' is read as '{}' (GitLab's runner matches keys case-insensitively)",
                display_path(&segs),
                r.canonical
            ),
        ));
    }
    for key in &ignored {
        warnings.push(doc.unknown_key_warning(key));
    }
    doc.environment_warnings(&config, &mut warnings);
    doc.integer_duration_warnings(&config, &mut warnings);
    doc.helper_image_warnings(&config, &mut warnings);
    warnings.sort_by_key(|w| w.line);

    Ok(LoadedConfig { config, warnings })
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `runners[0].docker.volumes[2]`; keys that are not bare TOML keys are quoted.
fn display_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(k);
                } else {
                    let _ = write!(out, "{k:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Seg::Index(*index));
            v
        }
        P::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Seg::Key(key.clone()));
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments(parent)
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where something is in the file: the span to report, and the value found there.
struct Found<'a, 'i> {
    /// The key's span for table entries, the element's span for array elements.
    report_span: Range<usize>,
    value: &'a Spanned<DeValue<'i>>,
}

/// The parsed file, for span and path look-ups.
struct Document<'a, 'i> {
    text: &'i str,
    path: &'a Path,
    root: &'a DeTable<'i>,
}

impl<'a, 'i> Document<'a, 'i> {
    fn position(&self, span: &Range<usize>) -> (usize, usize) {
        line_col(self.text, span.start)
    }

    /// Finds the entry at `segs`.
    fn find(&self, segs: &[Seg]) -> Option<Found<'a, 'i>> {
        let (first, rest) = segs.split_first()?;
        let Seg::Key(k) = first else { return None };
        let (key, value) = self.root.get_key_value(k.as_str())?;
        let mut found = Found {
            report_span: key.span(),
            value,
        };
        for seg in rest {
            found = match (seg, found.value.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => {
                    let (key, value) = t.get_key_value(k.as_str())?;
                    Found {
                        report_span: key.span(),
                        value,
                    }
                }
                (Seg::Index(i), DeValue::Array(a)) => {
                    let value = a.get(*i)?;
                    Found {
                        report_span: value.span(),
                        value,
                    }
                }
                _ => return None,
            };
        }
        Some(found)
    }

    /// The deepest key path whose key or value span contains `span`.
    fn path_at(&self, span: &Range<usize>) -> Vec<Seg> {
        fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
            !outer.is_empty() && outer.start <= inner.start && inner.end <= outer.end
        }
        fn walk_value(
            value: &Spanned<DeValue<'_>>,
            span: &Range<usize>,
            prefix: &mut Vec<Seg>,
            best: &mut Vec<Seg>,
        ) {
            match value.get_ref() {
                DeValue::Table(t) => walk_table(t, span, prefix, best),
                DeValue::Array(a) => {
                    for (i, elem) in a.iter().enumerate() {
                        prefix.push(Seg::Index(i));
                        if contains(&elem.span(), span) && prefix.len() > best.len() {
                            *best = prefix.clone();
                        }
                        walk_value(elem, span, prefix, best);
                        prefix.pop();
                    }
                }
                _ => {}
            }
        }
        fn walk_table(
            table: &DeTable<'_>,
            span: &Range<usize>,
            prefix: &mut Vec<Seg>,
            best: &mut Vec<Seg>,
        ) {
            for (key, value) in table.iter() {
                prefix.push(Seg::Key(key.get_ref().to_string()));
                if (contains(&key.span(), span) || contains(&value.span(), span))
                    && prefix.len() > best.len()
                {
                    *best = prefix.clone();
                }
                walk_value(value, span, prefix, best);
                prefix.pop();
            }
        }
        let mut best = Vec::new();
        walk_table(self.root, span, &mut Vec::new(), &mut best);
        best
    }

    /// Every token in the file, longest first, with its short form.
    fn secrets(&self) -> Vec<(String, String)> {
        fn walk(value: &DeValue<'_>, key: Option<&str>, out: &mut Vec<(String, String)>) {
            match value {
                DeValue::String(s) if key == Some("token") && !s.is_empty() => {
                    out.push((s.to_string(), short_token(s)));
                }
                DeValue::Table(t) => {
                    for (k, v) in t.iter() {
                        walk(v.get_ref(), Some(k.get_ref()), out);
                    }
                }
                DeValue::Array(a) => {
                    for v in a.iter() {
                        walk(v.get_ref(), key, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (k, v) in self.root.iter() {
            walk(v.get_ref(), Some(k.get_ref()), &mut out);
        }
        out.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        out
    }

    /// Replaces every token (and `raw`, the source text of a bad `token` value) by its short
    /// form.
    fn redact(&self, message: &str, raw_token: Option<&str>) -> String {
        let mut out = message.to_owned();
        let mut secrets = self.secrets();
        if let Some(raw) = raw_token {
            let raw = raw.trim().trim_matches(['"', '\'']);
            if !raw.is_empty() {
                secrets.insert(0, (raw.to_owned(), short_token(raw)));
            }
        }
        for (token, short) in secrets {
            if token != short {
                out = out.replace(&token, &short);
            }
        }
        out
    }

    fn deserialize_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let segs = self.path_at(&span);
        let found = self.find(&segs);
        let (line, column) = self.position(&span);
        let mut message = humanize(e.message());
        if let Some(f) = &found {
            if matches!(f.value.get_ref(), DeValue::Datetime(_)) {
                message = message.replace("invalid type: table", "invalid type: datetime");
            }
        }
        // `[runners]` instead of `[[runners]]` is a classic.
        if segs == [Seg::Key("runners".into())] && message.starts_with("invalid type: table") {
            message.push_str(" (write [[runners]] for each runner)");
        }
        let raw_token = match (segs.last(), &found) {
            (Some(Seg::Key(k)), Some(f)) if k == "token" => self.text.get(f.value.span()),
            _ => None,
        };
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: if segs.is_empty() {
                "(top level)".to_owned()
            } else {
                display_path(&segs)
            },
            message: self.redact(&message, raw_token),
        }
    }

    fn invalid_at(&self, segs: &[Seg], message: String) -> ConfigError {
        let (line, column) = self
            .find(segs)
            .map_or((1, 1), |f| self.position(&f.value.span()));
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: display_path(segs),
            message: self.redact(&message, None),
        }
    }

    /// Checks that need a whole `[[runners]]` entry.
    fn check_runners(&self, config: &Config) -> Result<(), ConfigError> {
        for (i, runner) in config.runners.iter().enumerate() {
            let entry = vec![Seg::Key("runners".into()), Seg::Index(i)];
            // Required keys (runner common/config.go `RunnerCredentials.URL`/`Token` and
            // `RunnerSettings.Executor` are `required:"true"`).
            for key in ["url", "token", "executor"] {
                let mut p = entry.clone();
                p.push(Seg::Key(key.into()));
                if self.find(&p).is_none() {
                    let (line, column) = self
                        .find(&entry)
                        .map_or((1, 1), |f| self.position(&f.value.span()));
                    return Err(ConfigError::MissingKey {
                        path: self.path.to_owned(),
                        line,
                        column,
                        table: display_path(&entry),
                        key: key.to_owned(),
                    });
                }
            }
            self.check_executor_section(&entry, runner)?;
        }
        Ok(())
    }

    /// The custom executor cannot run without `[runners.custom] run_exec` (GitLab fails every
    /// job with "custom executor is missing RunExec"; runner executors/custom/custom.go).
    fn check_executor_section(
        &self,
        entry: &[Seg],
        runner: &RunnerConfig,
    ) -> Result<(), ConfigError> {
        if runner.executor == "custom"
            && runner
                .custom
                .as_ref()
                .is_none_or(|c| c.run_exec.trim().is_empty())
        {
            let mut p = entry.to_vec();
            p.push(Seg::Key("executor".into()));
            return Err(self.invalid_at(
                &p,
                "executor \"custom\" needs [runners.custom] run_exec".to_owned(),
            ));
        }
        Ok(())
    }

    fn warning(&self, span: &Range<usize>, message: String) -> ConfigWarning {
        ConfigWarning {
            path: self.path.to_owned(),
            line: self.position(span).0,
            message: self.redact(&message, None),
        }
    }

    fn unknown_key_warning(&self, segs: &[Seg]) -> ConfigWarning {
        let span = self.find(segs).map_or(0..0, |f| f.report_span);
        let name = display_path(segs);
        let hint = match segs.last() {
            // Removed in GitLab Runner 17.0 (runner git 668f609f7).
            Some(Seg::Key(k)) if k == "pre_clone_script" => {
                "; removed in GitLab Runner 17.0, use pre_get_sources_script"
            }
            Some(Seg::Key(k)) if k == "post_clone_script" => {
                "; removed in GitLab Runner 17.0, use post_get_sources_script"
            }
            _ => "",
        };
        self.warning(&span, format!("unknown key '{name}' (ignored{hint})"))
    }

    /// GitLab's runner silently skips `environment` entries without `=`
    /// (runner common/config.go `parseVariable`).
    fn environment_warnings(&self, config: &Config, out: &mut Vec<ConfigWarning>) {
        for (i, runner) in config.runners.iter().enumerate() {
            for (j, entry) in runner.environment.iter().enumerate() {
                if entry.contains('=') {
                    continue;
                }
                let segs = [
                    Seg::Key("runners".into()),
                    Seg::Index(i),
                    Seg::Key("environment".into()),
                    Seg::Index(j),
                ];
                let span = self.find(&segs).map_or(0..0, |f| f.report_span);
                out.push(self.warning(
                    &span,
                    format!(
                        "{}: {entry:?} has no '=' and is ignored, as GitLab's runner does",
                        display_path(&segs)
                    ),
                ));
            }
        }
    }

    /// runwright's docker executor has no helper container (it performs sources, caches and artifacts on the
    /// runner host), so the helper image keys are read but have no effect.
    fn helper_image_warnings(&self, config: &Config, out: &mut Vec<ConfigWarning>) {
        for (i, runner) in config.runners.iter().enumerate() {
            let Some(docker) = runner.docker.as_ref() else {
                continue;
            };
            for (key, value) in [
                ("helper_image", &docker.helper_image),
                ("helper_image_flavor", &docker.helper_image_flavor),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    continue;
                }
                let segs = [
                    Seg::Key("runners".into()),
                    Seg::Index(i),
                    Seg::Key("docker".into()),
                    Seg::Key(key.into()),
                ];
                let span = self.find(&segs).map_or(0..0, |f| f.report_span);
                out.push(self.warning(
                    &span,
                    format!(
                        "{}: runwright has no helper container (the runner itself fetches sources and handles \
                         caches and artifacts on the job's volumes), so this key has no effect",
                        display_path(&segs)
                    ),
                ));
            }
        }
    }

    /// An integer where GitLab expects a Go duration is read as nanoseconds by GitLab's TOML
    /// decoder (BurntSushi/toml); it is read the same way here, but it is rarely meant.
    fn integer_duration_warnings(&self, config: &Config, out: &mut Vec<ConfigWarning>) {
        let mut paths: Vec<Vec<Seg>> = vec![vec![Seg::Key("connection_max_age".into())]];
        for i in 0..config.runners.len() {
            let entry = [Seg::Key("runners".into()), Seg::Index(i)];
            for key in [
                "unhealthy_interval",
                "prepare_timeout",
                "get_sources_timeout",
            ] {
                let mut p = entry.to_vec();
                p.push(Seg::Key(key.into()));
                paths.push(p);
            }
            for key in ["upload_timeout", "response_header_timeout"] {
                let mut p = entry.to_vec();
                p.push(Seg::Key("artifact".into()));
                p.push(Seg::Key(key.into()));
                paths.push(p);
            }
        }
        for p in paths {
            let Some(found) = self.find(&p) else { continue };
            let DeValue::Integer(n) = found.value.get_ref() else {
                continue;
            };
            if n.as_str()
                .trim_start_matches(['+', '-'])
                .trim_start_matches('0')
                .is_empty()
            {
                continue;
            }
            out.push(self.warning(
                &found.report_span,
                format!(
                    "{}: integer {n} is read as nanoseconds, as GitLab's runner does; \
                     write \"{n}s\" for seconds",
                    display_path(&p)
                ),
            ));
        }
    }
}

/// Serde's words for TOML's: arrays and tables, not sequences and maps.
fn humanize(message: &str) -> String {
    let mut out = message
        .trim_end()
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    out
}

/// The default config path as GitLab's runner computes it (runner commands/config_unix.go
/// `getDefaultConfigDirectory`): `/etc/gitlab-runner/config.toml` as root, else
/// `~/.gitlab-runner/config.toml`, else `./config.toml` in the current directory.
pub fn default_config_path() -> PathBuf {
    default_config_dir().join("config.toml")
}

/// Where GitLab's runner looks for `<host>.crt`, `<host>.auth.crt` and `<host>.auth.key` for a GitLab URL
/// whose `tls-*` files are unset: `certs/` in the default config directory, whatever `--config` says
/// (runner commands/config.go `GetDefaultCertificateDirectory`).
pub fn default_certs_dir() -> PathBuf {
    default_config_dir().join("certs")
}

fn default_config_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/gitlab-runner")
    } else if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        PathBuf::from(home).join(".gitlab-runner")
    } else {
        std::env::current_dir().unwrap_or_default()
    }
}

/// Whether the real user is root, as Go's `os.Getuid() == 0` in runner commands/config_unix.go.
#[cfg(unix)]
fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // After "bé = " (é is two bytes): column 6.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn paths_display_like_toml() {
        let segs = vec![
            Seg::Key("runners".into()),
            Seg::Index(0),
            Seg::Key("docker".into()),
            Seg::Key("a.b".into()),
        ];
        assert_eq!(display_path(&segs), "runners[0].docker.\"a.b\"");
    }

    #[test]
    fn humanize_uses_toml_words() {
        assert_eq!(
            humanize("invalid type: string \"x\", expected a sequence"),
            "invalid type: string \"x\", expected an array"
        );
        assert_eq!(
            humanize("invalid type: integer `1`, expected struct DockerConfig"),
            "invalid type: integer `1`, expected a table"
        );
    }
}
