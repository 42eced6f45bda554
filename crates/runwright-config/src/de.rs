//! Serde helpers that read GitLab's value types and reject what GitLab's runner would reject.
//!
//! They run inside deserialization on purpose: the `toml` deserializer attaches the span of the
//! value being read to any error raised here, so a bad executor name or pull policy is reported
//! with its file, line and column like a type error. Each `expecting` text is written for a
//! person editing `config.toml` ("an integer", "a Go duration such as \"1h30m\""), not in Rust
//! type names.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::duration::parse_go_duration;

/// Executor names GitLab's runner registers (runner executors/*, `common.RegisterExecutorProvider`).
pub(crate) const EXECUTORS: &[&str] = &[
    "shell",
    "docker",
    "docker-windows",
    "docker+machine",
    "docker-autoscaler",
    "kubernetes",
    "custom",
    "ssh",
    "parallels",
    "virtualbox",
    "instance",
];

/// Shells GitLab's runner knows (runner common/config.go `RunnerSettings.Shell` jsonschema enum).
pub(crate) const SHELLS: &[&str] = &["bash", "sh", "pwsh", "powershell", "cmd"];

/// Log formats (runner log/configuration.go): `runner`, `text`, `json`.
pub(crate) const LOG_FORMATS: &[&str] = &["runner", "text", "json"];

/// Log levels accepted by logrus `ParseLevel` (case-insensitive), which runner log/configuration.go
/// `SetLevel` uses.
pub(crate) const LOG_LEVELS: &[&str] = &[
    "panic", "fatal", "error", "warn", "warning", "info", "debug", "trace",
];

fn one_of(allowed: &[&str]) -> String {
    format!("one of {}", allowed.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Integers

struct IntVisitor {
    non_negative: bool,
}

impl Visitor<'_> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if self.non_negative && v < 0 {
            return Err(E::invalid_value(
                Unexpected::Signed(v),
                &"a non-negative integer",
            ));
        }
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| {
            E::invalid_value(Unexpected::Unsigned(v), &"an integer that fits in 64 bits")
        })
    }
}

/// An integer (GitLab `int`/`int64`).
pub(crate) fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_i64(IntVisitor {
        non_negative: false,
    })
}

/// An optional integer (GitLab `*int`); only called when the key is present.
pub(crate) fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d).map(Some)
}

/// A non-negative integer stored as `usize`.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = d.deserialize_i64(IntVisitor { non_negative: true })?;
    usize::try_from(v)
        .map_err(|_| de::Error::invalid_value(Unexpected::Signed(v), &"a smaller integer"))
}

// ---------------------------------------------------------------------------------------------
// Durations

struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Go duration such as \"1h30m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_go_duration(v).map_err(E::custom)
    }

    /// GitLab's TOML decoder (BurntSushi/toml) reads an integer into a `time.Duration` as a
    /// number of nanoseconds; `load.rs` warns about it since it is rarely what was meant.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_nanos)
            .map_err(|_| E::custom(format!("negative duration {v} is not allowed")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_nanos(v))
    }
}

/// An optional Go `time.Duration` (`"1h30m"`; an integer counts nanoseconds, as in GitLab).
pub(crate) fn opt_go_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(GoDurationVisitor).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Datetimes

/// `token_obtained_at` / `token_expires_at`: a TOML datetime; Go's zero time
/// `0001-01-01T00:00:00Z` (what GitLab writes for "never") means unset.
///
/// A local date-time (no offset) is read as UTC; GitLab reads it in the host's time zone, but it
/// only ever writes UTC (`Z`) itself.
pub(crate) fn opt_datetime<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    let dt = toml::value::Datetime::deserialize(d)?;
    let Some(date) = dt.date else {
        return Err(de::Error::invalid_value(
            Unexpected::Other("a time of day without a date"),
            &"a date-time such as 2025-01-01T00:00:00Z",
        ));
    };
    let month = time::Month::try_from(date.month).map_err(de::Error::custom)?;
    let day = time::Date::from_calendar_date(i32::from(date.year), month, date.day)
        .map_err(de::Error::custom)?;
    let tod = match dt.time {
        Some(t) => time::Time::from_hms_nano(
            t.hour,
            t.minute,
            t.second.unwrap_or(0),
            t.nanosecond.unwrap_or(0),
        )
        .map_err(de::Error::custom)?,
        None => time::Time::MIDNIGHT,
    };
    let offset = match dt.offset {
        Some(toml::value::Offset::Custom { minutes }) => {
            time::UtcOffset::from_whole_seconds(i32::from(minutes) * 60)
                .map_err(de::Error::custom)?
        }
        Some(toml::value::Offset::Z) | None => time::UtcOffset::UTC,
    };
    let value = time::PrimitiveDateTime::new(day, tod).assume_offset(offset);
    if value == go_zero_time() {
        Ok(None)
    } else {
        Ok(Some(value))
    }
}

/// Go's zero `time.Time`, `0001-01-01T00:00:00Z`.
fn go_zero_time() -> OffsetDateTime {
    time::macros::datetime!(0001-01-01 00:00:00 UTC)
}

// ---------------------------------------------------------------------------------------------
// Strings with a closed set of values

/// Reads a string and checks it inside the visitor, so that the `toml` deserializer attaches
/// the value's own span to the error (it does not for errors raised after `deserialize`
/// returns, e.g. for array elements).
pub(crate) fn checked_str<'de, D, T, F>(
    d: D,
    expecting: &'static str,
    check: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct V<F> {
        expecting: &'static str,
        check: F,
    }

    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for V<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v)
                .map_err(|allowed| E::invalid_value(Unexpected::Str(v), &allowed.as_str()))
        }
    }

    d.deserialize_str(V { expecting, check })
}

fn checked_string<'de, D: Deserializer<'de>>(
    d: D,
    allowed: &'static [&'static str],
    case_insensitive: bool,
) -> Result<String, D::Error> {
    checked_str(d, "a string", |s| {
        let ok = allowed.iter().any(|a| {
            if case_insensitive {
                a.eq_ignore_ascii_case(s)
            } else {
                *a == s
            }
        });
        if ok {
            Ok(s.to_owned())
        } else {
            Err(one_of(allowed))
        }
    })
}

/// `executor`: one of GitLab's executor names.
pub(crate) fn executor<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_string(d, EXECUTORS, false)
}

/// `shell`: one of GitLab's shells; an empty string means the executor's default.
pub(crate) fn opt_shell<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_str(d, "a string", |s| {
        if s.is_empty() {
            Ok(None)
        } else if SHELLS.contains(&s) {
            Ok(Some(s.to_owned()))
        } else {
            Err(one_of(SHELLS))
        }
    })
}

/// `log_level`: a logrus level.
pub(crate) fn opt_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_string(d, LOG_LEVELS, true).map(Some)
}

/// `log_format`: `runner`, `text` or `json`.
pub(crate) fn opt_log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_string(d, LOG_FORMATS, false).map(Some)
}

/// A string that must not be empty (`url`, `token`).
pub(crate) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, "a string", |s| {
        if s.trim().is_empty() {
            Err("a non-empty string".to_owned())
        } else {
            Ok(s.to_owned())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Docker value formats

/// `memory`, `memory_swap`, … : Docker's RAM size syntax (go-units `RAMInBytes`: a number, an
/// optional `k`/`m`/`g`/`t`/`p` with optional `i`/`b`). GitLab's runner aborts (`logrus.Fatalf`)
/// on a bad value when a job starts; here it is caught at load.
pub(crate) fn opt_ram_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_str(d, "a string", |s| {
        if s.is_empty() || crate::model::parse_ram_in_bytes(s).is_some() {
            Ok(Some(s.to_owned()))
        } else {
            Err("a memory size such as \"512m\" or \"2g\"".to_owned())
        }
    })
}

/// `cpus`, `service_cpus`: a decimal or fraction (Go `big.Rat.SetString`), e.g. `"1.5"`.
pub(crate) fn opt_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_str(d, "a string", |s| {
        if s.is_empty() || crate::model::parse_cpus(s).is_some() {
            Ok(Some(s.to_owned()))
        } else {
            Err("a number of CPUs such as \"1.5\"".to_owned())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// A string or an array of strings (GitLab `StringOrArray`)

/// Reads `T` from a single value or from an array of values, as GitLab's `StringOrArray` does
/// for `pull_policy`.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OneOrMany<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| vec![t])
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    d.deserialize_any(OneOrMany(PhantomData))
}
