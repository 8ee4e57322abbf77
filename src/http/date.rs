//! HTTP dates: the cached Date header value (formatted at most once a second), parsing of all
//! three HTTP date formats (RFC 9110 §5.6.7), and the access log's time format.
//!
//! Times outside what an HTTP-date can express are clamped rather than panicking: anything
//! before 1970 is formatted as the epoch, anything from the year 10000 on as the last second
//! of 9999 (the `httpdate` crate panics on both).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the epoch to 10000-01-01T00:00:00Z, the first instant an IMF-fixdate
/// (four-digit year) cannot express.
const YEAR_10000: u64 = 253_402_300_800;

/// The abbreviated month names used by both the HTTP and the access-log formats.
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The Date header value, formatted once a second.
#[derive(Debug, Clone)]
pub struct DateCache {
    /// The whole second (since the epoch, clamped) the strings below describe.
    secs: u64,
    /// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    http: String,
    /// Access-log time, e.g. "06/Nov/1994:08:49:37 +0000".
    clf: String,
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> Self {
        let mut cache = DateCache {
            secs: 0,
            http: String::with_capacity(29),
            clf: String::with_capacity(26),
        };
        cache.render(unix_secs_clamped(SystemTime::now()));
        cache
    }

    /// Reformats if the wall-clock second changed since the last call.
    pub fn refresh(&mut self, now: SystemTime) {
        let secs = unix_secs_clamped(now);
        if secs != self.secs {
            self.render(secs);
        }
    }

    /// The current IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    pub fn http(&self) -> &str {
        &self.http
    }

    /// The current time in the access log's format, e.g. "06/Nov/1994:08:49:37 +0000".
    pub fn clf(&self) -> &str {
        &self.clf
    }

    /// Rewrites both strings for `secs` in place (no allocation once the buffers exist).
    fn render(&mut self, secs: u64) {
        self.secs = secs;
        self.http.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            self.http,
            "{}",
            httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs))
        );
        self.clf.clear();
        write_clf(&mut self.clf, secs);
    }
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Formats `t` as an IMF-fixdate (clamped to 1970..=9999, see the module notes).
pub fn format(t: SystemTime) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs_clamped(t)))
}

/// Formats `t` in the access log's format, "06/Nov/1994:08:49:37 +0000" (UTC, clamped like
/// [`format`]).
pub fn format_clf(t: SystemTime) -> String {
    let mut s = String::with_capacity(26);
    write_clf(&mut s, unix_secs_clamped(t));
    s
}

/// Parses IMF-fixdate, RFC 850 and asctime dates; None when it is none of them.
///
/// Surrounding whitespace is ignored; bytes that are not ASCII make the value invalid. The
/// day of the week must agree with the date. Two-digit RFC 850 years 00–69 are read as
/// 2000–2069 and 70–99 as 1970–1999 (the `httpdate` rule).
pub fn parse(value: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(s.trim()).ok()
}

/// Whole seconds since the epoch, with the sub-second part dropped; None before the epoch.
pub fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whole seconds since the epoch, clamped to what a four-digit-year date can express.
fn unix_secs_clamped(t: SystemTime) -> u64 {
    unix_secs(t).unwrap_or(0).min(YEAR_10000 - 1)
}

/// Appends the access-log form of `secs` (UTC) to `out`.
fn write_clf(out: &mut String, secs: u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let month_name = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        day,
        month_name,
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of `days` days after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`, restricted to non-negative day counts: days are
/// shifted so that eras of 400 years start on 0000-03-01, making the leap day the last day
/// of the (March-based) year.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // 719_468 days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(format(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn format_clamps_instead_of_panicking() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format(at(YEAR_10000 + 5)), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(format_clf(before), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(format_clf(at(u64::MAX / 4)), "31/Dec/9999:23:59:59 +0000");
    }

    #[test]
    fn parses_all_three_formats() {
        let want = Some(at(784_111_777));
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse(b"  Sun, 06 Nov 1994 08:49:37 GMT \t"), want);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37",
            b"Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            b"Sun, 31 Feb 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT\xff",
            b"\xc3\xa9\xff\xfe",
            b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
            b"Wed, 31 Dec 1969 23:59:59 GMT",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn clf_known_dates() {
        let cases: &[(u64, &str)] = &[
            (0, "01/Jan/1970:00:00:00 +0000"),
            (784_111_777, "06/Nov/1994:08:49:37 +0000"),
            (951_782_400, "29/Feb/2000:00:00:00 +0000"), // leap year divisible by 400
            (951_868_800, "01/Mar/2000:00:00:00 +0000"),
            (1_078_012_799, "28/Feb/2004:23:59:59 +0000"),
            (1_078_099_199, "29/Feb/2004:23:59:59 +0000"),
            (1_709_164_800, "29/Feb/2024:00:00:00 +0000"),
            (1_704_067_199, "31/Dec/2023:23:59:59 +0000"),
            (1_735_603_200, "31/Dec/2024:00:00:00 +0000"), // day 366 of a leap year
            (4_107_542_400, "01/Mar/2100:00:00:00 +0000"), // 2100 is not a leap year
            (4_107_542_399, "28/Feb/2100:23:59:59 +0000"),
            (253_402_300_799, "31/Dec/9999:23:59:59 +0000"),
        ];
        for &(secs, want) in cases {
            assert_eq!(format_clf(at(secs)), want, "secs {secs}");
        }
    }

    #[test]
    fn clf_agrees_with_httpdate_on_many_days() {
        // Walk every day noon from 1970 to ~2110 and compare the calendar part with httpdate.
        let mut secs = 43_200u64;
        while secs < 4_400_000_000 {
            let http = format(at(secs)); // "Sun, 06 Nov 1994 12:00:00 GMT"
            let clf = format_clf(at(secs)); // "06/Nov/1994:12:00:00 +0000"
            let want = format!(
                "{}/{}/{}:12:00:00 +0000",
                &http[5..7],
                &http[8..11],
                &http[12..16]
            );
            assert_eq!(clf, want);
            secs += 86_400;
        }
    }

    #[test]
    fn cache_refreshes_only_on_second_change() {
        let mut c = DateCache::new();
        c.refresh(at(784_111_777));
        assert_eq!(c.http(), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(c.clf(), "06/Nov/1994:08:49:37 +0000");
        c.refresh(at(784_111_777) + Duration::from_millis(999));
        assert_eq!(c.http(), "Sun, 06 Nov 1994 08:49:37 GMT");
        c.refresh(at(784_111_778));
        assert_eq!(c.http(), "Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(c.clf(), "06/Nov/1994:08:49:38 +0000");
        c.refresh(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(c.http(), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn cache_new_is_current() {
        let c = DateCache::default();
        assert_eq!(c.http().len(), 29);
        assert_eq!(c.clf().len(), 26);
        assert!(c.http().ends_with(" GMT"));
    }
}
