//! Calendar arithmetic and the date formats opush writes or reads, all UTC
//! and all from Unix time: the EAS date-time of `DateReceived`
//! ([MS-ASDTYPE] 2.3), the IMAP `date` and `date-time` (RFC 3501 9), the
//! RFC 5322 `Date:` header and the Apache access-log time.
//!
//! Exists so the proleptic Gregorian conversion (H. Hinnant's
//! days-from-civil algorithms) is written once. Pure: no clock, no I/O;
//! malformed input gives `None`, never a panic.

/// English month abbreviations, as IMAP, RFC 5322 and Apache write them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Weekday abbreviations from Thursday, the weekday of 1970-01-01.
const WEEKDAYS_FROM_EPOCH: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
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

/// Date and time of day of Unix seconds: `((y, m, d), (h, min, s))`.
fn split(unix: i64) -> ((i64, u32, u32), (i64, i64, i64)) {
    let secs = unix.rem_euclid(86_400);
    (
        civil_from_days(unix.div_euclid(86_400)),
        (secs / 3600, secs % 3600 / 60, secs % 60),
    )
}

fn month_name(m: u32) -> &'static str {
    MONTHS[(m.clamp(1, 12) - 1) as usize]
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` ([MS-ASDTYPE] 2.3) for Unix seconds.
pub fn eas_date(unix: i64) -> String {
    let ((y, m, d), (h, mi, s)) = split(unix);
    // Every message of a Sync carries one: years 0–9999 are written digit
    // by digit into one allocation, the rest (never seen in mail) formatted.
    let Ok(year) = u16::try_from(y) else {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z");
    };
    if year > 9999 {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z");
    }
    let digit = |v: u32| char::from(b'0' + (v % 10) as u8);
    let two = |out: &mut String, v: u32| {
        out.push(digit(v / 10));
        out.push(digit(v));
    };
    let mut out = String::with_capacity(24);
    two(&mut out, u32::from(year) / 100);
    two(&mut out, u32::from(year));
    out.push('-');
    two(&mut out, m);
    out.push('-');
    two(&mut out, d);
    out.push('T');
    // split() gives 0..24, 0..60 and 0..60.
    two(&mut out, h as u32);
    out.push(':');
    two(&mut out, mi as u32);
    out.push(':');
    two(&mut out, s as u32);
    out.push_str(".000Z");
    out
}

/// `dd/Mon/yyyy:HH:MM:SS +0000` (Apache access log) of Unix milliseconds.
pub fn apache_time(unix_ms: u64) -> String {
    let ((y, m, d), (h, mi, s)) = split(i64::try_from(unix_ms / 1000).unwrap_or(0));
    format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        month_name(m)
    )
}

/// An IMAP `date` (`1-Feb-2026`) for SEARCH SINCE/BEFORE.
pub fn imap_date(unix: i64) -> String {
    let ((y, m, d), _) = split(unix);
    format!("{d}-{}-{y}", month_name(m))
}

/// An IMAP `date-time` in UTC (`01-Feb-2026 10:00:00 +0000`), for APPEND.
pub fn imap_date_time(unix: i64) -> String {
    let ((y, m, d), (h, mi, s)) = split(unix);
    format!(
        "{d:02}-{}-{y:04} {h:02}:{mi:02}:{s:02} +0000",
        month_name(m)
    )
}

/// An RFC 5322 date (`Sun, 29 Nov 2026 01:02:03 +0000`) in UTC.
pub fn rfc5322_date(unix: i64) -> String {
    let ((y, m, d), (h, mi, s)) = split(unix);
    let weekday = WEEKDAYS_FROM_EPOCH[unix.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {d} {} {y:04} {h:02}:{mi:02}:{s:02} +0000",
        month_name(m)
    )
}

/// Parses an EAS date-time (MS-ASDTYPE 2.3: `2026-11-28T21:15:56.000Z`,
/// the fraction optional) into Unix seconds (UTC); `None` for anything else.
pub fn parse_eas_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let time = time.split_once('.').map_or(time, |(whole, fraction)| {
        if fraction.bytes().all(|c| c.is_ascii_digit()) {
            whole
        } else {
            ""
        }
    });
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let se: i64 = t.next()?.parse().ok()?;
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Parses an IMAP `date-time` (`"28-Nov-2026 21:15:56 +0100"`, day may be
/// space-padded) into Unix seconds (UTC).
pub fn parse_imap_date_time(s: &str) -> Option<i64> {
    parse_canonical_date_time(s.as_bytes()).or_else(|| parse_general_date_time(s))
}

/// [`parse_imap_date_time`] for any spacing.
fn parse_general_date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim_start().split_once(' ')?;
    let mut dparts = date.split('-');
    let day: u32 = dparts.next()?.trim().parse().ok()?;
    let mon = dparts.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let year: i64 = dparts.next()?.parse().ok()?;
    let mut tparts = time.split(':');
    let h: i64 = tparts.next()?.parse().ok()?;
    let mi: i64 = tparts.next()?.parse().ok()?;
    let se: i64 = tparts.next()?.parse().ok()?;
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let zone = zone.trim();
    if zone.len() != 5 {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone.get(1..3)?.parse().ok()?;
    let zm: i64 = zone.get(3..5)?.parse().ok()?;
    let offset = sign * (zh * 3600 + zm * 60);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// The form servers send for every INTERNALDATE (`DD-Mon-YYYY HH:MM:SS
/// +HHMM`, 26 bytes, the day zero- or space-padded) read byte by byte: the
/// metadata of every message goes through here. `None` for anything else
/// (the general parser then decides).
fn parse_canonical_date_time(b: &[u8]) -> Option<i64> {
    let &[d1, d2, b'-', m1, m2, m3, b'-', y1, y2, y3, y4, b' ', h1, h2, b':', i1, i2, b':', s1, s2, b' ', zs, z1, z2, z3, z4] =
        b
    else {
        return None;
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
    let two = |a: u8, b: u8| Some(digit(a)? * 10 + digit(b)?);
    let day = if d1 == b' ' { digit(d2)? } else { two(d1, d2)? };
    let month = MONTHS
        .iter()
        .position(|m| m.as_bytes().eq_ignore_ascii_case(&[m1, m2, m3]))? as u32
        + 1;
    let year = two(y1, y2)? * 100 + two(y3, y4)?;
    let (h, mi, se) = (two(h1, h2)?, two(i1, i2)?, two(s1, s2)?);
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let sign = match zs {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * (two(z1, z2)? * 3600 + two(z3, z4)? * 60);
    Some(days_from_civil(year, month, day as u32) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eas_dates_parse() {
        assert_eq!(parse_eas_date("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_eas_date("2026-11-28T21:15:56Z"), Some(1_795_900_556));
        assert_eq!(
            parse_eas_date(&eas_date(1_795_900_556)),
            Some(1_795_900_556)
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T21:15:56",
            "2026-13-28T21:15:56Z",
            "2026-11-28T24:15:56Z",
            "2026-11-28T21:15Z",
            "2026-11-28T21:15:56.x1Z",
        ] {
            assert_eq!(parse_eas_date(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// The digit-by-digit EAS date is the formatted one, across and
        /// beyond years 0–9999.
        #[test]
        fn eas_date_is_the_formatted_date(unix in prop_oneof![
            -62_200_000_000i64..253_500_000_000,
            -1_000_000_000_000i64..1_000_000_000_000,
        ]) {
            let ((y, m, d), (h, mi, s)) = split(unix);
            prop_assert_eq!(
                eas_date(unix),
                format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
            );
        }

        /// The fast path answers as the general parser for dates of the
        /// canonical shape (valid or not) and for near misses.
        #[test]
        fn canonical_fast_path_agrees(
            day in "[ 0-3][0-9]",
            mon in "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec|jan|DEC|Foo)",
            year in "[0-9]{4}",
            h in "[0-2][0-9]", mi in "[0-6][0-9]", se in "[0-6][0-9]",
            sign in "[-+x]", zone in "[0-9]{4}",
            noise in "( ?)",
        ) {
            let s = format!("{day}-{mon}-{year} {h}:{mi}:{se} {sign}{zone}{noise}");
            prop_assert_eq!(parse_imap_date_time(&s), parse_general_date_time(&s), "{}", s);
            if let Some(t) = parse_canonical_date_time(s.as_bytes()) {
                prop_assert_eq!(Some(t), parse_general_date_time(&s), "{}", s);
            }
        }
    }

    #[test]
    fn civil_round_trips_across_eras() {
        for days in [-800_000, -1, 0, 59, 60, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn every_format_of_one_instant() {
        let t = 1_795_914_123; // 2026-11-29T01:02:03Z, a Sunday
        assert_eq!(eas_date(t), "2026-11-29T01:02:03.000Z");
        assert_eq!(
            apache_time(t as u64 * 1000 + 999),
            "29/Nov/2026:01:02:03 +0000"
        );
        assert_eq!(imap_date(t), "29-Nov-2026");
        assert_eq!(imap_date_time(t), "29-Nov-2026 01:02:03 +0000");
        assert_eq!(rfc5322_date(t), "Sun, 29 Nov 2026 01:02:03 +0000");
        assert_eq!(parse_imap_date_time("29-Nov-2026 02:02:03 +0100"), Some(t));
        assert_eq!(
            parse_imap_date_time(" 9-Nov-2026 01:02:03 +0000"),
            Some(t - 20 * 86_400)
        );
        assert_eq!(parse_imap_date_time("29-Nox-2026 01:02:03 +0000"), None);
    }
}
