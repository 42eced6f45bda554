//! Go duration strings (`"60m"`, `"1h30m"`, `"300ms"`, `"1.5h"`).
//!
//! GitLab's runner stores some settings as Go `time.Duration` (`unhealthy_interval`,
//! `connection_max_age`, `prepare_timeout`, …) and its TOML decoder parses a string value with
//! Go's `time.ParseDuration`. This module is a faithful port of that function's grammar
//! (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a bare `0`), so every value GitLab accepts is accepted
//! here with the same meaning. `std::time::Duration` cannot be negative, so negative durations
//! (legal in Go) are rejected: no GitLab setting gives them a meaning.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected; `Display` is a complete sentence fragment that names the
/// input, e.g. `invalid duration "1x": unknown unit "x"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    reason: &'static str,
    unit: Option<String>,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: {}", self.input, self.reason)?;
        if let Some(unit) = &self.unit {
            write!(f, " {unit:?} (valid units are ns, us, ms, s, m, h)")?;
        }
        Ok(())
    }
}

impl std::error::Error for DurationError {}

/// Nanoseconds per unit, as in Go's `time` package `unitMap`.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the micro sign (U+00B5) and the Greek small letter mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string (Go `time.ParseDuration`).
///
/// ```
/// use std::time::Duration;
/// use runwright_config::parse_go_duration;
/// assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_go_duration("300ms").unwrap(), Duration::from_millis(300));
/// assert!(parse_go_duration("60").is_err()); // Go requires a unit
/// ```
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason: &'static str| DurationError {
        input: input.to_owned(),
        reason,
        unit: None,
    };

    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // Special case in Go: a bare "0" needs no unit.
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty duration"));
    }

    // Accumulated in nanoseconds; u128 cannot overflow before the final range check for any
    // input of sane length, and we cap at Go's own limit (i64::MAX nanoseconds).
    let mut total: u128 = 0;
    let limit = i64::MAX as u128;
    while !s.is_empty() {
        // Integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        // Fraction.
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (digits, rest) = rest.split_at(frac_len);
            frac_digits = digits;
            s = rest;
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            // No digits (e.g. ".s" or "h").
            return Err(err("expected a number"));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = s
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(s.len(), |(i, _)| i);
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(err("missing unit"));
        }
        let Some(per_unit) = unit_nanos(unit) else {
            return Err(DurationError {
                input: input.to_owned(),
                reason: "unknown unit",
                unit: Some(unit.to_owned()),
            });
        };

        let mut value: u128 = 0;
        for b in int_digits.bytes() {
            value = value * 10 + u128::from(b - b'0');
            if value > limit {
                return Err(err("out of range"));
            }
        }
        let mut nanos = value * per_unit;
        // Fraction: like Go, digits beyond what can matter are dropped.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for b in frac_digits.bytes() {
            if scale > limit {
                break;
            }
            frac = frac * 10 + u128::from(b - b'0');
            scale *= 10;
        }
        nanos += frac * per_unit / scale;
        total += nanos;
        if total > limit {
            return Err(err("out of range"));
        }
    }

    if negative && total != 0 {
        return Err(err("negative durations are not allowed"));
    }
    let secs = (total / 1_000_000_000) as u64;
    let sub = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way Go's `Duration.String()` does (`"1h30m0s"`, `"300ms"`), for
/// messages that echo a setting back in the syntax the user writes.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = d.as_secs();
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let secs_nanos = u128::from(total_secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos());
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(secs_nanos, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_go_syntax() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("60m"), Duration::from_secs(3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("15m0s"), Duration::from_secs(900));
        assert_eq!(ok("2h45m30.5s"), Duration::from_millis(9_930_500));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("1μs"), Duration::from_micros(1));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
        assert_eq!(ok("1.0000000001s"), Duration::from_nanos(1_000_000_000));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "60", "1x", "h", ".s", "1h30", "-", "1.5", "3 s", "1hh"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn rejects_negative_and_overflow() {
        assert_eq!(
            parse_go_duration("-1s").unwrap_err().to_string(),
            r#"invalid duration "-1s": negative durations are not allowed"#
        );
        assert!(parse_go_duration("9999999999999h").is_err());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            parse_go_duration("1x").unwrap_err().to_string(),
            r#"invalid duration "1x": unknown unit "x" (valid units are ns, us, ms, s, m, h)"#
        );
        assert_eq!(
            parse_go_duration("60").unwrap_err().to_string(),
            r#"invalid duration "60": missing unit"#
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::from_secs(900)), "15m0s");
        assert_eq!(format_go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_nanos(42)), "42ns");
    }
}
