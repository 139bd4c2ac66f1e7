//! Civil (calendar) time from seconds since the epoch, in UTC or local time, and its digits:
//! what output names and snapshot names carry.

/// Broken-down time: (year, month, day, hour, minute, second).
pub type Civil = (i64, u32, u32, u32, u32, u32);

/// UTC.
pub fn utc(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rest / 3600, rest / 60 % 60, rest % 60)
}

/// Local time, from the C library (TZ and /etc/localtime); UTC if it cannot say.
pub fn local(secs: i64) -> Civil {
    let t: nix::libc::time_t = secs as nix::libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !nix::libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return utc(secs);
    }
    (
        i64::from(tm.tm_year) + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
    )
}

/// `t` as digits: `format(t, "-", "T")` is `2006-01-02T150405`, `format(t, "", "")`
/// `20060102150405`.
pub fn format(t: &Civil, date_sep: &str, time_sep: &str) -> String {
    let (y, mo, d, h, mi, s) = *t;
    format!("{y:04}{date_sep}{mo:02}{date_sep}{d:02}{time_sep}{h:02}{mi:02}{s:02}")
}

/// Days since 1970-01-01 to a date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
