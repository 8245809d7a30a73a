//! Timestamps as patronictl handles them: `parse_scheduled` (dateutil-style lenient
//! parsing, naive times get the local zone), Python `isoformat()` / `str()` of the
//! result, and `timestamp(precision)`.

use chrono::{FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// A timezone-aware point in time as Python's `datetime` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// Wall-clock time in `offset`.
    pub local: NaiveDateTime,
    /// UTC offset in seconds.
    pub offset: i32,
}

impl Scheduled {
    fn fmt_with(&self, sep: char) -> String {
        let mut s = self.local.format("%Y-%m-%d").to_string();
        s.push(sep);
        s.push_str(&self.local.format("%H:%M:%S").to_string());
        let us = self.local.and_utc().timestamp_subsec_micros();
        if us != 0 {
            s.push_str(&format!(".{us:06}"));
        }
        let sign = if self.offset < 0 { '-' } else { '+' };
        let off = self.offset.unsigned_abs();
        s.push_str(&format!("{sign}{:02}:{:02}", off / 3600, off % 3600 / 60));
        if !off.is_multiple_of(60) {
            s.push_str(&format!(":{:02}", off % 60));
        }
        s
    }

    /// `datetime.isoformat()`: `2024-01-01T10:00:00+02:00`.
    pub fn isoformat(&self) -> String {
        self.fmt_with('T')
    }

    /// `str(datetime)`: `2024-01-01 10:00:00+02:00`.
    pub fn to_py_str(&self) -> String {
        self.fmt_with(' ')
    }
}

/// The error patronictl raises for an unparsable `--scheduled`.
pub fn parse_error(s: &str) -> String {
    format!(
        "Unable to parse scheduled timestamp ({s}). It should be in an unambiguous format (e.g. ISO 8601)"
    )
}

fn parse_tz(tz: &str) -> Option<i32> {
    let tz = tz.trim();
    if tz.is_empty() {
        return None;
    }
    if matches!(tz.to_ascii_uppercase().as_str(), "Z" | "UTC" | "GMT") {
        return Some(0);
    }
    let (sign, rest) = match tz.as_bytes()[0] {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

fn parse_time(t: &str) -> Option<NaiveTime> {
    let (hms, frac) = match t.split_once(['.', ',']) {
        Some((a, f)) => (a, Some(f)),
        None => (t, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (h, m, s) = match parts.as_slice() {
        [h] if h.len() == 4 => (num(&h[..2])?, num(&h[2..])?, 0),
        [h] => (num(h)?, 0, 0),
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return None,
    };
    let micros = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let mut f6: String = f.chars().take(6).collect();
            while f6.len() < 6 {
                f6.push('0');
            }
            f6.parse().ok()?
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_micro_opt(h, m, s, micros)
}

/// `parse_scheduled`: `None` for absent, empty or `now`; naive timestamps get the local
/// time zone. Accepts ISO 8601 forms (`T` or space separator, optional seconds and
/// fraction, zone `Z`/`UTC`/`±H`/`±HH`/`±HHMM`/`±HH:MM`).
pub fn parse_scheduled(s: Option<&str>) -> Result<Option<Scheduled>, String> {
    let Some(raw) = s else { return Ok(None) };
    if raw.is_empty() || raw == "now" {
        return Ok(None);
    }
    parse_timestamp(raw)
        .map(Some)
        .ok_or_else(|| parse_error(raw))
}

fn parse_timestamp(raw: &str) -> Option<Scheduled> {
    let t = raw.trim();
    let (date_part, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], t[i + 1..].trim_start()),
        None => (t, ""),
    };
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date_part, "%Y%m%d"))
        .ok()?;
    let (time_str, tz_str) = match rest.find(['+', '-', 'Z', 'z', ' ']) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (time_str, tz_str) = if rest.is_empty() {
        ("", "")
    } else if time_str.is_empty() && !tz_str.is_empty() && !rest.starts_with(['+', '-']) {
        return None;
    } else {
        (time_str, tz_str)
    };
    let time = if time_str.is_empty() {
        NaiveTime::from_hms_opt(0, 0, 0)?
    } else {
        parse_time(time_str)?
    };
    let local = NaiveDateTime::new(date, time);
    let offset = if tz_str.is_empty() {
        Local
            .from_local_datetime(&local)
            .earliest()
            .map(|d| d.offset().local_minus_utc())
            .unwrap_or(0)
    } else {
        parse_tz(tz_str)?
    };
    FixedOffset::east_opt(offset)?;
    Some(Scheduled { local, offset })
}

/// patronictl's `timestamp(precision)`: local `YYYY-MM-DD HH:MM:SS.ffffff` cut by
/// `7 - precision` characters (precision 6 → 5 fractional digits, 0 → no fraction).
pub fn timestamp(precision: usize) -> String {
    let s = Local::now().format("%Y-%m-%d %H:%M:%S.%6f").to_string();
    let cut = 7usize.saturating_sub(precision);
    s[..s.len() - cut].to_string()
}

/// `datetime.now() + 1 hour` as `%Y-%m-%dT%H:%M` (the example in schedule prompts).
pub fn next_hour_example() -> String {
    (Local::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> String {
        parse_scheduled(Some(s)).unwrap().unwrap().isoformat()
    }

    #[test]
    fn parses_like_dateutil() {
        assert_eq!(
            iso("2023-05-29T04:32:31+00:00"),
            "2023-05-29T04:32:31+00:00"
        );
        assert_eq!(iso("2023-05-29T04:32:31-3"), "2023-05-29T04:32:31-03:00");
        assert_eq!(iso("2019-09-24T12:00+00"), "2019-09-24T12:00:00+00:00");
        assert_eq!(iso("2019-09-24 12:00Z"), "2019-09-24T12:00:00+00:00");
        assert_eq!(
            iso("2030-01-02 03:04:05.123456+00:00"),
            "2030-01-02T03:04:05.123456+00:00"
        );
        assert_eq!(
            iso("2030-01-02T03:04:05.5+0530"),
            "2030-01-02T03:04:05.500000+05:30"
        );
        let s = parse_scheduled(Some("2030-01-02 03:04:05+01:00"))
            .unwrap()
            .unwrap();
        assert_eq!(s.to_py_str(), "2030-01-02 03:04:05+01:00");
        // naive → local zone (whatever it is, an offset is appended)
        let naive = iso("2030-01-02T03:04");
        assert!(naive.starts_with("2030-01-02T03:04:00"), "{naive}");
        assert!(naive.len() == "2030-01-02T03:04:00+00:00".len(), "{naive}");
    }

    #[test]
    fn now_and_errors() {
        assert_eq!(parse_scheduled(None), Ok(None));
        assert_eq!(parse_scheduled(Some("now")), Ok(None));
        assert_eq!(parse_scheduled(Some("")), Ok(None));
        assert_eq!(
            parse_scheduled(Some("tomorrow")).unwrap_err(),
            "Unable to parse scheduled timestamp (tomorrow). It should be in an unambiguous format (e.g. ISO 8601)"
        );
        assert!(parse_scheduled(Some("2023-13-01")).is_err());
        assert!(parse_scheduled(Some("2023-01-01T25:00")).is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(6).len(), "2024-01-01 10:00:00.12345".len());
        assert_eq!(timestamp(0).len(), "2024-01-01 10:00:00".len());
    }
}
