//! Unix seconds to the calendar fields of a zip "DOS" timestamp, in UTC. Zip stores local time in those
//! fields; we store UTC so that the same tree gives the same bytes on every host, and also write the exact
//! Unix mtime in the extended-timestamp extra field, which is what Info-ZIP and GitLab's runner read back
//! (runner `helpers/archives/zip_extra.go`, `ZipTimestampFieldType`).

/// Converts Unix seconds to a zip `DateTime`, clamped to the DOS range 1980..=2107.
pub(crate) fn dos_datetime(unix: i64) -> zip::DateTime {
    let (y, mo, d, h, mi, s) = civil(unix);
    if y < 1980 {
        return zip::DateTime::default();
    }
    if y > 2107 {
        return zip::DateTime::from_date_and_time(2107, 12, 31, 23, 59, 58).unwrap_or_default();
    }
    zip::DateTime::from_date_and_time(y as u16, mo, d, h, mi, s).unwrap_or_default()
}

/// Calendar fields (UTC) of a Unix timestamp (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil(unix: i64) -> (i64, u8, u8, u8, u8, u8) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m as u8,
        d as u8,
        (secs / 3600) as u8,
        ((secs % 3600) / 60) as u8,
        (secs % 60) as u8,
    )
}

/// The inverse for DOS fields read back from an archive without an extended timestamp (UTC).
pub(crate) fn unix_from_dos(dt: &zip::DateTime) -> i64 {
    let (y, m, d) = (dt.year() as i64, dt.month() as i64, dt.day() as i64);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + dt.hour() as i64 * 3600 + dt.minute() as i64 * 60 + dt.second() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for t in [315_532_800i64, 1_700_000_000, 1_234_567_890, 4_102_444_800] {
            let dt = dos_datetime(t);
            // DOS time has a 2 second resolution.
            assert_eq!(unix_from_dos(&dt), t - t % 2, "{t}");
        }
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    }
}
