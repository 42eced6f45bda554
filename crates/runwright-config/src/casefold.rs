//! Keys in the wrong case, read the way GitLab's runner reads them.
//!
//! GitLab's TOML decoder (BurntSushi/toml `unifyStruct`) matches a key to a struct field exactly
//! first and, failing that, case-insensitively (`strings.EqualFold`): `URL = "…"` or
//! `[runners.cache] type = "s3"` work in GitLab's runner. To stay a drop-in replacement, such
//! keys are renamed to their canonical spelling in the parsed document before deserialization,
//! and each rename is reported as a warning so the file can be fixed. Only keys of the typed
//! sections are touched; maps (labels, feature flags, …) and opaque executor sections keep
//! their keys as written, as in GitLab.
//!
//! The field names come from the serde derives themselves (a probe deserializer records the
//! `fields` list a struct asks for), so they cannot drift from `model.rs`.

use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::model::{
    ArtifactConfig, CacheAzureConfig, CacheConfig, CacheGcsConfig, CacheS3Config, Config,
    CustomBuildDir, CustomConfig, DockerConfig, DockerService, RunnerConfig, SessionServer,
};

/// A key that was renamed: where it is, as written, and its canonical spelling.
pub(crate) struct Renamed {
    /// Path of the table holding the key, as display segments (`runners`, `0`, `docker`).
    pub(crate) table: Vec<PathSeg>,
    pub(crate) written: String,
    pub(crate) canonical: &'static str,
    pub(crate) span: Range<usize>,
}

/// A step of a table path (kept separate from `load.rs`'s own type to keep this module alone).
#[derive(Clone)]
pub(crate) enum PathSeg {
    Key(&'static str),
    Index(usize),
}

/// Renames wrong-case keys of the typed sections of `root` in place.
pub(crate) fn normalize(root: &mut DeTable<'_>) -> Vec<Renamed> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    fold(root, fields_of::<Config>(), &path, &mut out);

    if let Some(t) = child_table(root, "session_server") {
        path.push(PathSeg::Key("session_server"));
        fold(t, fields_of::<SessionServer>(), &path, &mut out);
        path.pop();
    }
    if let Some(DeValue::Array(runners)) = root.get_mut("runners").map(|v| v.get_mut()) {
        for (i, runner) in runners.iter_mut().enumerate() {
            if let DeValue::Table(t) = runner.get_mut() {
                let path = vec![PathSeg::Key("runners"), PathSeg::Index(i)];
                fold_runner(t, path, &mut out);
            }
        }
    }
    out
}

fn fold_runner(runner: &mut DeTable<'_>, path: Vec<PathSeg>, out: &mut Vec<Renamed>) {
    fold(runner, fields_of::<RunnerConfig>(), &path, out);
    let sections: [(&'static str, &'static [&'static str]); 5] = [
        ("custom_build_dir", fields_of::<CustomBuildDir>()),
        ("artifact", fields_of::<ArtifactConfig>()),
        ("custom", fields_of::<CustomConfig>()),
        ("cache", fields_of::<CacheConfig>()),
        ("docker", fields_of::<DockerConfig>()),
    ];
    for (name, fields) in sections {
        let Some(t) = child_table(runner, name) else {
            continue;
        };
        let mut p = path.clone();
        p.push(PathSeg::Key(name));
        fold(t, fields, &p, out);
        match name {
            "cache" => {
                let backends: [(&'static str, &'static [&'static str]); 3] = [
                    ("s3", fields_of::<CacheS3Config>()),
                    ("gcs", fields_of::<CacheGcsConfig>()),
                    ("azure", fields_of::<CacheAzureConfig>()),
                ];
                for (backend, fields) in backends {
                    if let Some(b) = child_table(t, backend) {
                        let mut bp = p.clone();
                        bp.push(PathSeg::Key(backend));
                        fold(b, fields, &bp, out);
                    }
                }
            }
            "docker" => {
                if let Some(DeValue::Array(services)) = t.get_mut("services").map(|v| v.get_mut()) {
                    for (j, service) in services.iter_mut().enumerate() {
                        if let DeValue::Table(s) = service.get_mut() {
                            let mut sp = p.clone();
                            sp.push(PathSeg::Key("services"));
                            sp.push(PathSeg::Index(j));
                            fold(s, fields_of::<DockerService>(), &sp, out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn child_table<'t, 'i>(table: &'t mut DeTable<'i>, key: &str) -> Option<&'t mut DeTable<'i>> {
    match table.get_mut(key).map(|v| v.get_mut()) {
        Some(DeValue::Table(t)) => Some(t),
        _ => None,
    }
}

/// Renames the keys of one table that match a field only case-insensitively, unless the exact
/// spelling is also present (then the odd one stays and is reported as unknown).
fn fold(
    table: &mut DeTable<'_>,
    fields: &'static [&'static str],
    path: &[PathSeg],
    out: &mut Vec<Renamed>,
) {
    let keys: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
    for written in keys {
        if fields.contains(&written.as_str()) {
            continue;
        }
        let Some(canonical) = fields.iter().find(|f| f.eq_ignore_ascii_case(&written)) else {
            continue;
        };
        if table.contains_key(*canonical) {
            continue;
        }
        let Some((key, value)) = table.remove_entry(written.as_str()) else {
            continue;
        };
        let span = key.span();
        table.insert(Spanned::new(span.clone(), Cow::Borrowed(*canonical)), value);
        out.push(Renamed {
            table: path.to_vec(),
            written,
            canonical,
            span,
        });
    }
}

/// The TOML keys a derived struct reads, taken from the `fields` it passes to
/// `deserialize_struct`.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let cell = Cell::new(None);
    let _ = T::deserialize(FieldsProbe(&cell));
    cell.get().unwrap_or(&[])
}

struct FieldsProbe<'a>(&'a Cell<Option<&'static [&'static str]>>);

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(Some(fields));
        Err(de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_serde_field_names() {
        let fields = fields_of::<RunnerConfig>();
        assert!(fields.contains(&"url"));
        assert!(fields.contains(&"tls-ca-file"));
        assert!(fields_of::<CacheConfig>().contains(&"MaxUploadedArchiveSize"));
        assert!(fields_of::<CacheS3Config>().contains(&"ServerSideEncryptionKeyID"));
        assert!(fields_of::<Config>().contains(&"concurrent"));
    }
}
