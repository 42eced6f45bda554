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
use crate::model::{CacheType, Config, RunnerConfig};
use crate::token::short_token;

/// A parsed and validated config file, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The configuration; `runners` holds the valid `[[runners]]` entries only, in file order.
    pub config: Config,
    /// Things GitLab's runner accepts but that are likely mistakes (unknown keys, …) or that
    /// runwright does not honour, in file order.
    pub warnings: Vec<ConfigWarning>,
    /// `[[runners]]` entries that failed validation, in file order: they are reported and not
    /// used, while the other entries are.
    pub invalid_runners: Vec<InvalidRunner>,
}

/// A `[[runners]]` entry that failed validation (a value of the wrong type, a missing `token`, an
/// unknown executor, a bad `memory`, …). One bad entry stops only that runner: the service logs it
/// and polls with the others, and `config check`, `list`, `status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvalidRunner {
    /// Its position among the file's `[[runners]]` entries (0-based).
    pub index: usize,
    /// `name` as written, empty when missing or not a string.
    pub name: String,
    /// `url` as written, empty when missing or not a string.
    pub url: String,
    /// `executor` as written, empty when missing or not a string.
    pub executor: String,
    /// The short form of `token` (never the token), empty when missing or not a string.
    pub short_token: String,
    /// 1-based line of the entry's `[[runners]]` header.
    pub line: usize,
    /// What is wrong, as one line: `<file>:<line>:<column>: <key>: <message>` (tokens shortened).
    pub error: String,
}

impl std::fmt::Display for InvalidRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; runner {:?} (runners[{}]) is skipped, the other runners are not affected",
            self.error, self.name, self.index
        )
    }
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
///
/// What cannot be read (TOML syntax) or concerns every runner (a global key) is an error for
/// the whole file. A problem inside one `[[runners]]` entry makes only that entry an
/// [`InvalidRunner`]. GitLab's runner is stricter about types (a value of the wrong type anywhere
/// fails its TOML decoder, and the whole file with it) and later about values (a missing token
/// skips the runner at poll time, a bad `memory` stops the process when a job starts, an unknown
/// executor or shell fails every request or job); runwright checks those at load, per entry, so
/// the entry never takes a job it would fail and the others go on.
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

    // The file without its `[[runners]]` entries first: a problem there concerns every runner.
    // A `runners` that is not an array stays in, so that its error is reported as before.
    let mut global = root.get_ref().clone();
    let entries: Vec<Spanned<DeValue<'_>>> = match global.get("runners").map(Spanned::get_ref) {
        Some(DeValue::Array(a)) => {
            let entries = a.iter().cloned().collect();
            global.remove("runners");
            entries
        }
        _ => Vec::new(),
    };
    let mut ignored: Vec<Vec<Seg>> = Vec::new();
    let deserializer = toml::de::Deserializer::from(Spanned::new(root.span(), global));
    let mut config: Config =
        serde_ignored::deserialize(deserializer, |p| ignored.push(segments(&p)))
            .map_err(|e| doc.deserialize_error(&e))?;
    doc.check_global(&config)?;

    // Then each entry on its own.
    let mut valid: Vec<usize> = Vec::new();
    let mut invalid_runners = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let prefix = [Seg::Key("runners".into()), Seg::Index(i)];
        let result =
            serde_ignored::deserialize(toml::de::ValueDeserializer::from(entry.clone()), |p| {
                let mut segs = prefix.to_vec();
                segs.extend(segments(&p));
                ignored.push(segs);
            })
            .map_err(|e| doc.deserialize_error(&e))
            .and_then(|mut runner: RunnerConfig| {
                doc.check_runner(i, &mut runner, &config)?;
                Ok(runner)
            });
        match result {
            Ok(runner) => {
                valid.push(i);
                config.runners.push(runner);
            }
            Err(error) => invalid_runners.push(doc.invalid_runner(i, entry, &error)),
        }
    }
    let runners: Vec<(usize, &RunnerConfig)> = valid.iter().copied().zip(&config.runners).collect();

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
    doc.environment_warnings(&runners, &mut warnings);
    doc.integer_duration_warnings(entries.len(), &mut warnings);
    doc.helper_image_warnings(&runners, &mut warnings);
    doc.unsupported_warnings(&config, &runners, &mut warnings);
    doc.slot_template_warnings(&runners, &mut warnings);
    warnings.sort_by_key(|w| w.line);

    Ok(LoadedConfig {
        config,
        warnings,
        invalid_runners,
    })
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

    /// Checks of the global keys that need more than their type: `labels` (runner common/config.go
    /// `Config.Validate`, which refuses the whole file for bad global labels).
    fn check_global(&self, config: &Config) -> Result<(), ConfigError> {
        crate::labels::check_patterns(&config.labels).map_err(|(key, msg)| {
            self.label_error(vec![Seg::Key("labels".into()), Seg::Key(key)], msg)
        })
    }

    /// Checks that need a whole `[[runners]]` entry (the `index`th of the file); computes its labels.
    fn check_runner(
        &self,
        index: usize,
        runner: &mut RunnerConfig,
        config: &Config,
    ) -> Result<(), ConfigError> {
        let entry = vec![Seg::Key("runners".into()), Seg::Index(index)];
        let at = |key: &[&str]| {
            let mut p = entry.clone();
            p.extend(key.iter().map(|k| Seg::Key((*k).to_owned())));
            p
        };
        // Required keys (runner common/config.go `RunnerCredentials.URL`/`Token` and
        // `RunnerSettings.Executor` are `required:"true"`; GitLab's runner skips an entry without a
        // token when polling, commands/multi.go `feedRunner`).
        for key in ["url", "token", "executor"] {
            if self.find(&at(&[key])).is_none() {
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
        // The custom executor cannot run without `[runners.custom] run_exec` (GitLab fails every
        // job with "custom executor is missing RunExec"; runner executors/custom/custom.go).
        if runner.executor == "custom"
            && runner
                .custom
                .as_ref()
                .is_none_or(|c| c.run_exec.trim().is_empty())
        {
            return Err(self.invalid_at(
                &at(&["executor"]),
                "executor \"custom\" needs [runners.custom] run_exec".to_owned(),
            ));
        }
        // runner common/config.go `RunnerConfig.Validate`: the entry's labels, then the merge.
        crate::labels::check_patterns(&runner.labels)
            .map_err(|(key, msg)| self.label_error(at(&["labels", &key]), msg))?;
        let computed = crate::labels::compute(&config.labels, &runner.labels);
        crate::labels::check_count(&computed).map_err(|msg| {
            let key = if runner.labels.is_empty() {
                vec![Seg::Key("labels".into())]
            } else {
                at(&["labels"])
            };
            self.invalid_at(&key, msg)
        })?;
        runner.computed_labels = computed;
        // GitLab's runner fails every job at prepare with "parsing gpus string" or "the isolation value
        // … is not valid" (runner executors/docker/docker.go `bindContainerDeviceRequests`,
        // `createHostConfig`).
        if let Some(docker) = &runner.docker {
            if let Some(isolation) = docker.isolation.as_deref() {
                if !matches!(
                    isolation.to_ascii_lowercase().as_str(),
                    "" | "default" | "process" | "hyperv"
                ) {
                    return Err(self.invalid_at(
                        &at(&["docker", "isolation"]),
                        format!(
                            "the isolation value {isolation:?} is not valid: the valid values are 'process', \
                             'hyperv', 'default' and an empty string"
                        ),
                    ));
                }
            }
            for (key, value) in [
                ("gpus", &docker.gpus),
                ("service_gpus", &docker.service_gpus),
            ] {
                if let Err(msg) = crate::gpus::parse_gpus(value.as_deref().unwrap_or("")) {
                    return Err(self.invalid_at(
                        &at(&["docker", key]),
                        format!(
                            "parsing gpus string {:?}: {msg} (Docker's --gpus syntax: \"all\", a count, or \
                             '\"device=0,1\"')",
                            value.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A refused label: reported at its key (the value is fine, or the key would not be named).
    fn label_error(&self, segs: Vec<Seg>, message: String) -> ConfigError {
        let (line, column) = self
            .find(&segs)
            .map_or((1, 1), |f| self.position(&f.report_span));
        let mut table = segs;
        table.pop();
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: display_path(&table),
            message: self.redact(&message, None),
        }
    }

    /// The report of the `index`th `[[runners]]` entry, which failed with `error`.
    fn invalid_runner(
        &self,
        index: usize,
        entry: &Spanned<DeValue<'_>>,
        error: &ConfigError,
    ) -> InvalidRunner {
        let string = |key: &str| match entry.get_ref() {
            DeValue::Table(t) => t
                .get(key)
                .and_then(|v| v.get_ref().as_str())
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        let token = string("token");
        InvalidRunner {
            index,
            name: string("name"),
            url: string("url"),
            executor: string("executor"),
            short_token: if token.is_empty() {
                String::new()
            } else {
                short_token(&token)
            },
            line: self.position(&entry.span()).0,
            error: self.redact(&error.to_string(), None),
        }
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

    /// runner common/config.go `validateSlotCgroups`: with `use_slot_cgroups`, a template without the slot
    /// placeholder puts every job in the same cgroup; the runner warns, as does this.
    fn slot_template_warnings(
        &self,
        runners: &[(usize, &RunnerConfig)],
        out: &mut Vec<ConfigWarning>,
    ) {
        for &(i, runner) in runners {
            let template = runner.slot_cgroup_template.as_deref().unwrap_or_default();
            if !runner.use_slot_cgroups
                || template.is_empty()
                || template.contains("${slot}")
                || template.contains("$slot")
            {
                continue;
            }
            let segs = [
                Seg::Key("runners".into()),
                Seg::Index(i),
                Seg::Key("slot_cgroup_template".into()),
            ];
            let span = self.find(&segs).map_or(0..0, |f| f.report_span);
            out.push(self.warning(
                &span,
                format!(
                    "{}: {template:?} does not contain the ${{slot}} placeholder: all jobs use the same cgroup, \
                     defeating the purpose of slot-based isolation (e.g. \"gitlab-runner/slot-${{slot}}\")",
                    display_path(&segs)
                ),
            ));
        }
    }

    /// GitLab's runner silently skips `environment` entries without `=`
    /// (runner common/config.go `parseVariable`).
    fn environment_warnings(
        &self,
        runners: &[(usize, &RunnerConfig)],
        out: &mut Vec<ConfigWarning>,
    ) {
        for &(i, runner) in runners {
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

    /// `helper_image` takes effect (the docker executor's helper container); `helper_image_flavor` picks one of
    /// GitLab's registry images, which runwright never pulls by itself (its default helper image is built
    /// locally), so that key is read but has no effect.
    fn helper_image_warnings(
        &self,
        runners: &[(usize, &RunnerConfig)],
        out: &mut Vec<ConfigWarning>,
    ) {
        for &(i, runner) in runners {
            let Some(docker) = runner.docker.as_ref() else {
                continue;
            };
            for (key, value) in [("helper_image_flavor", &docker.helper_image_flavor)] {
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
                        "{}: runwright's default helper image is built locally from its own binary, so this key has \
                         no effect; set helper_image to use another image (GitLab's too)",
                        display_path(&segs)
                    ),
                ));
            }
        }
    }

    /// Keys runwright reads but does not honour: each one is said to be ignored, with what that
    /// means, like an unknown key, so that no setting is silently without effect.
    fn unsupported_warnings(
        &self,
        config: &Config,
        runners: &[(usize, &RunnerConfig)],
        out: &mut Vec<ConfigWarning>,
    ) {
        let mut warn = |segs: Vec<Seg>, consequence: &str| {
            let Some(found) = self.find(&segs) else {
                return;
            };
            out.push(self.warning(
                &found.report_span,
                format!(
                    "{} is not supported by runwright and is ignored: {consequence}",
                    display_path(&segs)
                ),
            ));
        };
        let key = |k: &str| vec![Seg::Key(k.to_owned())];

        // GitLab's runner starts its session server only with a `listen_address`
        // (commands/multi.go `setupSessionServer`); `gitlab-runner register` writes the section with
        // just `session_timeout`, which does nothing there either.
        let session_listen = config
            .session_server
            .as_ref()
            .is_some_and(|s| s.listen_address.as_deref().is_some_and(|a| !a.is_empty()));
        if session_listen {
            warn(
                vec![
                    Seg::Key("session_server".into()),
                    Seg::Key("listen_address".into()),
                ],
                "runwright has no session server, so jobs get no interactive web terminal (the job page's \
                 Debug button) and no proxy to their services; it does not offer the session feature, so \
                 GitLab runs jobs without one",
            );
        }
        if config
            .sentry_dsn
            .as_deref()
            .is_some_and(|d| !d.trim().is_empty())
        {
            warn(
                key("sentry_dsn"),
                "errors are not sent to Sentry; they are in the service's log",
            );
        }
        if config
            .connection_max_age
            .is_some_and(|age| age != crate::model::DEFAULT_CONNECTION_MAX_AGE)
        {
            warn(
                key("connection_max_age"),
                "connections to GitLab are not renewed by age; an idle connection is closed after 90 s, \
                 and every new request after that opens a new one",
            );
        }
        if config.experimental.is_some() {
            warn(
                key("experimental"),
                "none of GitLab's experimental features (the usage logger) is implemented",
            );
        }

        for &(i, r) in runners {
            let at = |path: &[&str]| {
                let mut p = vec![Seg::Key("runners".into()), Seg::Index(i)];
                p.extend(path.iter().map(|k| Seg::Key((*k).to_owned())));
                p
            };
            // runner shells/bash.go: GitLab's docker executor runs bash or sh in the container for both of
            // those; runwright's does that for every shell (the shell executor refuses the others when the
            // entry starts).
            if r.executor == "docker"
                && r.shell.as_deref().is_some_and(|s| s != "bash" && s != "sh")
            {
                warn(
                    at(&["shell"]),
                    "runwright's docker executor runs job scripts with bash, or sh where the image has no bash",
                );
            }
            if r.proxy_exec == Some(true) {
                warn(
                    at(&["proxy_exec"]),
                    "stage scripts are run directly, not through GitLab's proxy-exec helper",
                );
            }
            // runner common/config.go `GetSlotCgroupPath`: slots exist only for the autoscaling
            // executors (docker-autoscaler, instance); GitLab's runner ignores these with docker and
            // shell. runwright's shell executor gives every job a cgroup and places it with them
            // (runwright-shell cgroup.rs), so there they take effect.
            let slots = "slot cgroups apply only to the autoscaling executors (docker-autoscaler, instance), \
                         which runwright does not implement, and to runwright's shell executor; containers use \
                         cgroup_parent as usual";
            if r.executor != "shell" {
                if r.use_slot_cgroups {
                    warn(at(&["use_slot_cgroups"]), slots);
                }
                if r.slot_cgroup_template
                    .as_deref()
                    .is_some_and(|t| !t.is_empty())
                {
                    warn(at(&["slot_cgroup_template"]), slots);
                }
            }
            if r.step_runner_image
                .as_deref()
                .is_some_and(|t| !t.is_empty())
            {
                warn(
                    at(&["step_runner_image"]),
                    "runwright does not run CI Steps (`run:` jobs), so no step-runner image is used",
                );
            }
            if r.referees.is_some() {
                warn(
                    at(&["referees"]),
                    "no referee (metrics) data is collected or uploaded with the job's artifacts",
                );
            }
            if r.monitoring.is_some() {
                warn(
                    at(&["monitoring"]),
                    "no per-runner job monitoring is set up",
                );
            }
            if let Some(d) = &r.docker {
                if d.service_slot_cgroup_template
                    .as_deref()
                    .is_some_and(|t| !t.is_empty())
                {
                    warn(at(&["docker", "service_slot_cgroup_template"]), slots);
                }
            }
            let Some(cache) = &r.cache else { continue };
            let local = "caches of this runner stay local (each job says so in its log)";
            if let Some(t @ (CacheType::Gcs | CacheType::Azure)) = cache.cache_type {
                warn(
                    at(&["cache", "Type"]),
                    &format!(
                        "the {} distributed cache is not implemented, {local}",
                        t.as_str()
                    ),
                );
            }
            let Some(s3) = &cache.s3 else { continue };
            let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
            for (k, v) in [
                ("RoleARN", &s3.role_arn),
                ("UploadRoleARN", &s3.upload_role_arn),
            ] {
                if set(v) {
                    warn(
                        at(&["cache", "s3", k]),
                        &format!("runwright cannot assume IAM roles for the cache, {local}"),
                    );
                }
            }
            if set(&s3.server_side_encryption) {
                warn(
                    at(&["cache", "s3", "ServerSideEncryption"]),
                    &format!("runwright cannot have S3 encrypt cache archives, {local}"),
                );
            }
            if set(&s3.server_side_encryption_key_id) {
                warn(
                    at(&["cache", "s3", "ServerSideEncryptionKeyID"]),
                    "it belongs to ServerSideEncryption, which runwright does not implement",
                );
            }
            if s3.assume_role_max_concurrency.is_some() {
                warn(
                    at(&["cache", "s3", "AssumeRoleMaxConcurrency"]),
                    "it belongs to RoleARN/UploadRoleARN, which runwright does not implement",
                );
            }
        }
    }

    /// An integer where GitLab expects a Go duration is read as nanoseconds by GitLab's TOML
    /// decoder (BurntSushi/toml); it is read the same way here, but it is rarely meant.
    fn integer_duration_warnings(&self, entries: usize, out: &mut Vec<ConfigWarning>) {
        let mut paths: Vec<Vec<Seg>> = vec![vec![Seg::Key("connection_max_age".into())]];
        for i in 0..entries {
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
    } else if let Some(home) =
        std::env::var_os(runwright_static::env_vars::HOME).filter(|h| !h.is_empty())
    {
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
