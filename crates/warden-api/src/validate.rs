//! Validation of the management requests that needs no cluster knowledge
//! (rest-api.md §4.1, §4.2 steps 2–6, the `POST /restart` filters), as pure functions.
//!
//! Errors are `(status code, message)` with Patroni's exact texts.

use crate::management::{RestartRequest, SwitchoverKind, SwitchoverRequest};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Map, Value};
use warden_core::cluster::py_truthy as truthy;

/// A validation failure: HTTP status code and the plain-text body.
pub type Rejection = (u16, String);

fn reject(code: u16, msg: impl Into<String>) -> Rejection {
    (code, msg.into())
}

/// Why a timestamp could not be parsed.
#[derive(Debug, PartialEq, Eq)]
enum TsError {
    /// Parsed, but no time zone.
    NoTimezone,
    /// Not a timestamp.
    Invalid,
}

/// Parses a timestamp leniently, in the spirit of `dateutil.parser.parse` for the
/// forms patronictl and people send: `YYYY-MM-DD` or `YYYYMMDD`, then `T`/`t`/spaces,
/// then `HH[:MM[:SS[.ffffff]]]` or `HHMM[SS]`, then an optional zone `Z`, `UTC`, `GMT`,
/// `±HH`, `±HHMM`, `±HH:MM` (optionally after spaces). A date alone means midnight.
fn parse_timestamp(input: &str) -> Result<DateTime<FixedOffset>, TsError> {
    let s = input.trim();
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |from: usize, n: usize| -> Option<u32> {
        let part = b.get(from..from + n)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    // Date.
    let year = digits(0, 4).ok_or(TsError::Invalid)?;
    i += 4;
    let (month, day);
    if b.get(i) == Some(&b'-') {
        month = digits(i + 1, 2).ok_or(TsError::Invalid)?;
        if b.get(i + 3) != Some(&b'-') {
            return Err(TsError::Invalid);
        }
        day = digits(i + 4, 2).ok_or(TsError::Invalid)?;
        i += 6;
    } else {
        month = digits(i, 2).ok_or(TsError::Invalid)?;
        day = digits(i + 2, 2).ok_or(TsError::Invalid)?;
        i += 4;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(TsError::Invalid)?;

    // Separator and time.
    let mut time = NaiveTime::MIN;
    let after_date = i;
    if matches!(b.get(i), Some(b'T' | b't')) {
        i += 1;
    } else {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    let has_time = digits(i, 2).is_some() && i > after_date;
    if has_time {
        let hour = digits(i, 2).ok_or(TsError::Invalid)?;
        i += 2;
        let (mut minute, mut second, mut micro) = (0, 0, 0);
        let colon = b.get(i) == Some(&b':');
        if colon || digits(i, 2).is_some() {
            let off = usize::from(colon);
            minute = digits(i + off, 2).ok_or(TsError::Invalid)?;
            i += off + 2;
            let colon2 = b.get(i) == Some(&b':');
            if (colon && colon2) || (!colon && digits(i, 2).is_some()) {
                let off = usize::from(colon2);
                second = digits(i + off, 2).ok_or(TsError::Invalid)?;
                i += off + 2;
                if matches!(b.get(i), Some(b'.' | b',')) {
                    i += 1;
                    let start = i;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    if i == start {
                        return Err(TsError::Invalid);
                    }
                    let mut frac: String = s[start..i].chars().take(6).collect();
                    while frac.len() < 6 {
                        frac.push('0');
                    }
                    micro = frac.parse().map_err(|_| TsError::Invalid)?;
                }
            }
        }
        time =
            NaiveTime::from_hms_micro_opt(hour, minute, second, micro).ok_or(TsError::Invalid)?;
    } else if i != after_date && i < b.len() {
        // "2024-01-01T" followed by something that is not a time.
        if matches!(b.get(after_date), Some(b'T' | b't')) {
            return Err(TsError::Invalid);
        }
    }
    let naive = NaiveDateTime::new(date, time);

    // Time zone.
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let rest = &s[i..];
    let offset_secs: i32 = if rest.is_empty() {
        return Err(TsError::NoTimezone);
    } else if ["Z", "z", "UTC", "GMT", "utc", "gmt"].contains(&rest) {
        0
    } else {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Err(TsError::Invalid),
        };
        let r = &rest[1..];
        let rb = r.as_bytes();
        let all_digits = |x: &[u8]| !x.is_empty() && x.iter().all(u8::is_ascii_digit);
        let (h, m) = match rb.len() {
            2 if all_digits(rb) => (&r[0..2], "0"),
            4 if all_digits(rb) => (&r[0..2], &r[2..4]),
            5 if rb[2] == b':' && all_digits(&rb[0..2]) && all_digits(&rb[3..5]) => {
                (&r[0..2], &r[3..5])
            }
            _ => return Err(TsError::Invalid),
        };
        let h: i32 = h.parse().map_err(|_| TsError::Invalid)?;
        let m: i32 = m.parse().map_err(|_| TsError::Invalid)?;
        if h > 23 || m > 59 {
            return Err(TsError::Invalid);
        }
        sign * (h * 3600 + m * 60)
    };
    let tz = FixedOffset::east_opt(offset_secs).ok_or(TsError::Invalid)?;
    naive
        .and_local_timezone(tz)
        .single()
        .ok_or(TsError::Invalid)
}

/// Python's `datetime.isoformat()` for an aware datetime: `YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM`.
pub fn isoformat(dt: &DateTime<FixedOffset>) -> String {
    if dt.timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

/// rest-api.md §4.1: parses a `schedule` / `scheduled_at` value for `action`
/// (`restart`, `switchover`) and returns it normalised with [`isoformat`].
///
/// * no time zone → 400 `Timezone information is mandatory for the scheduled <action>`;
/// * before `now` → 422 `Cannot schedule <action> in the past`;
/// * anything else unparsable (also non-strings) → 422 `Unable to parse scheduled timestamp…`.
pub fn parse_schedule(
    value: &Value,
    action: &str,
    now: DateTime<Utc>,
) -> Result<String, Rejection> {
    let unparsable = || {
        reject(
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )
    };
    let Value::String(s) = value else {
        return Err(unparsable());
    };
    match parse_timestamp(s) {
        Ok(dt) if dt < now => Err(reject(422, format!("Cannot schedule {action} in the past"))),
        Ok(dt) => Ok(isoformat(&dt)),
        Err(TsError::NoTimezone) => Err(reject(
            400,
            format!("Timezone information is mandatory for the scheduled {action}"),
        )),
        Err(TsError::Invalid) => Err(unparsable()),
    }
}

/// A member name from the request: falsy values are "not given"; non-strings are
/// kept in their JSON spelling (they will not match any member).
fn name_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(v) if truthy(v) => Some(v.to_string()),
        _ => None,
    }
}

/// rest-api.md §4.2 steps 2–6 for `POST /switchover` (`kind` = Switchover) and
/// `POST /failover` (`kind` = Failover). `paused` is the cluster's pause state.
pub fn validate_switchover(
    body: &Map<String, Value>,
    kind: SwitchoverKind,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<SwitchoverRequest, Rejection> {
    let leader = name_of(body.get("leader"));
    let candidate = name_of(body.get("candidate")).or_else(|| name_of(body.get("member")));
    let scheduled = body.get("scheduled_at").filter(|v| truthy(v));
    let failover = kind == SwitchoverKind::Failover;

    // Step 2.
    if failover && candidate.is_none() {
        return Err(reject(
            400,
            "Failover could be performed only to a specific candidate",
        ));
    }
    if !failover && leader.is_none() {
        return Err(reject(
            400,
            "Switchover could be performed only from a specific leader",
        ));
    }
    // Step 3.
    let mut scheduled_at = None;
    if let Some(v) = scheduled {
        if failover {
            return Err(reject(400, "Failover can't be scheduled"));
        }
        if paused {
            return Err(reject(400, "Can't schedule switchover in the paused state"));
        }
        scheduled_at = Some(parse_schedule(v, "switchover", now)?);
    }
    // Step 4.
    if paused && candidate.is_none() {
        return Err(reject(
            400,
            "Switchover is possible only to a specific candidate in a paused state",
        ));
    }
    // Step 5.
    let kind = if failover && leader.is_some() {
        tracing::warn!(
            "received failover request with leader specified - performing switchover instead"
        );
        SwitchoverKind::Switchover
    } else {
        kind
    };
    // Step 6.
    if leader == candidate {
        return Err(reject(400, "Switchover target and source are the same"));
    }
    Ok(SwitchoverRequest {
        kind,
        leader,
        candidate,
        scheduled_at,
    })
}

/// Python's `round()` (half to even) for the values seen here.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// Patroni's `parse_int(value, 's')`: an integer number of seconds, optionally with a
/// time unit (`us`, `ms`, `s`, `min`, `h`, `d`), hex/octal integers and decimals
/// accepted. `None` when unparsable.
pub fn parse_seconds(value: &Value) -> Option<i64> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None, // Python str(True)/str(None)/… do not parse
    };
    let v = text.trim();
    let (num, unit): (f64, &str) = {
        let b = v.as_bytes();
        let mut i = 0;
        let neg = match b.first() {
            Some(b'-') => {
                i = 1;
                true
            }
            Some(b'+') => {
                i = 1;
                false
            }
            _ => false,
        };
        let sign = if neg { -1.0 } else { 1.0 };
        let int_part: Option<(f64, usize)> = if b[i..].starts_with(b"0x") {
            let start = i + 2;
            let mut j = start;
            while b.get(j).is_some_and(u8::is_ascii_hexdigit) {
                j += 1;
            }
            if j > start {
                i64::from_str_radix(&v[start..j], 16)
                    .ok()
                    .map(|n| (n as f64, j))
            } else {
                None
            }
        } else if b.get(i) == Some(&b'0') {
            let mut j = i + 1;
            while b.get(j).is_some_and(|c| (b'0'..=b'7').contains(c)) {
                j += 1;
            }
            if j == i + 1 {
                Some((0.0, j))
            } else {
                i64::from_str_radix(&v[i + 1..j], 8)
                    .ok()
                    .map(|n| (n as f64, j))
            }
        } else {
            let mut j = i;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if j > i {
                v[i..j].parse::<f64>().ok().map(|n| (n, j))
            } else {
                None
            }
        };
        let float_needed = match int_part {
            None => v[i..].starts_with('.'),
            Some((_, end)) => matches!(b.get(end), Some(b'.' | b'e' | b'E')),
        };
        if float_needed {
            // DBL_RE: [0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?
            let mut j = i;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            if j == i {
                return None;
            }
            if matches!(b.get(j), Some(b'e' | b'E')) {
                let mut k = j + 1;
                if matches!(b.get(k), Some(b'+' | b'-')) {
                    k += 1;
                }
                let ds = k;
                while b.get(k).is_some_and(u8::is_ascii_digit) {
                    k += 1;
                }
                if k > ds {
                    j = k;
                }
            }
            (sign * v[i..j].parse::<f64>().ok()?, &v[j..])
        } else {
            let (n, end) = int_part?;
            (sign * n, &v[end..])
        }
    };
    let unit = unit.trim();
    let secs = if unit.is_empty() {
        num
    } else {
        // (factor to seconds, rounding multiplier in seconds: the next smaller unit)
        let (factor, multiplier) = match unit {
            "d" => (86_400.0, Some(3_600.0)),
            "h" => (3_600.0, Some(60.0)),
            "min" => (60.0, Some(1.0)),
            "s" => (1.0, Some(0.001)),
            "ms" => (0.001, Some(0.000_001)),
            "us" => (0.000_001, None),
            _ => return None,
        };
        let mut x = num * factor;
        if let Some(m) = multiplier {
            x = round_half_even(x / m) * m;
        }
        x
    };
    let r = round_half_even(secs);
    if r.is_finite() && r.abs() < 9.0e18 {
        Some(r as i64)
    } else {
        None
    }
}

/// Checks a `postgres_version` filter like Patroni's `postgres_version_to_int`:
/// `X.Y` (X ≥ 10) or `X.Y.Z`, integers only.
pub fn check_postgres_version(value: &Value) -> Result<String, String> {
    let s = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("Invalid PostgreSQL version: {other}")),
    };
    let parts: Result<Vec<i64>, _> = s.split('.').map(|p| p.trim().parse::<i64>()).collect();
    let Ok(parts) = parts else {
        return Err(format!("Invalid PostgreSQL version: {s}"));
    };
    if parts.len() < 2 || (parts.len() == 2 && parts[0] < 10) || parts.len() > 3 {
        return Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {s}"
        ));
    }
    Ok(s)
}

/// The `restart_pending` filter: booleans, Patroni's boolean words (`"True"`, `on`,
/// `0`, …), otherwise Python truthiness.
fn restart_pending_flag(v: &Value) -> bool {
    match v {
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => true,
            "off" | "false" | "no" | "0" => false,
            _ => !s.is_empty(),
        },
        other => truthy(other),
    }
}

/// Validates a `POST /restart` body (already parsed; `{}` when absent) like Patroni:
/// paused + `schedule` → 500 first, then each key in order (first error wins).
pub fn validate_restart(
    body: &Map<String, Value>,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<RestartRequest, Rejection> {
    if paused && body.contains_key("schedule") {
        return Err(reject(500, "Can't schedule restart in the paused state"));
    }
    let mut req = RestartRequest::default();
    for (k, v) in body {
        match k.as_str() {
            "schedule" => req.schedule = Some(parse_schedule(v, "restart", now)?),
            "role" => {
                let role =
                    match v.as_str() {
                        Some("primary" | "master") => "primary",
                        Some("standby_leader") => "standby_leader",
                        Some("replica") => "replica",
                        _ => return Err(reject(
                            400,
                            "PostgreSQL role should be either primary, standby_leader, or replica",
                        )),
                    };
                req.role = Some(role.to_string());
            }
            "postgres_version" => {
                req.postgres_version = Some(check_postgres_version(v).map_err(|e| reject(400, e))?);
            }
            "timeout" => match parse_seconds(v) {
                Some(t) if t > 0 => req.timeout = u64::try_from(t).ok(),
                _ => {
                    return Err(reject(
                        400,
                        "Timeout should be a positive number of seconds",
                    ))
                }
            },
            "restart_pending" => req.restart_pending = Some(restart_pending_flag(v)),
            other => {
                return Err(reject(
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                ))
            }
        }
    }
    Ok(req)
}

/// `force` / `from_leader` of `POST /reinitialize`: Patroni's `parse_bool`, unknown → false.
pub fn parse_bool_flag(v: Option<&Value>) -> bool {
    let Some(v) = v else { return false };
    let s = match v {
        Value::Bool(b) => return *b,
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    matches!(s.as_str(), "on" | "true" | "yes" | "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00+00:00")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn timestamps() {
        let ok = |s: &str| parse_schedule(&json!(s), "switchover", now());
        assert_eq!(
            ok("2030-09-24T12:00+00").unwrap(),
            "2030-09-24T12:00:00+00:00"
        );
        assert_eq!(
            ok("2030-01-01 10:00:00.123456+00:00").unwrap(),
            "2030-01-01T10:00:00.123456+00:00"
        );
        assert_eq!(
            ok("2030-01-01T10:00:00Z").unwrap(),
            "2030-01-01T10:00:00+00:00"
        );
        assert_eq!(
            ok("2030-01-01T10:00:00.5-0230").unwrap(),
            "2030-01-01T10:00:00.500000-02:30"
        );
        assert_eq!(ok("20300101T1000+02").unwrap(), "2030-01-01T10:00:00+02:00");
        assert_eq!(
            ok("2030-01-01 10:00 UTC").unwrap(),
            "2030-01-01T10:00:00+00:00"
        );
        assert_eq!(
            ok("2030-01-01T10:00:00.1234567+00:00").unwrap(),
            "2030-01-01T10:00:00.123456+00:00"
        );
        for s in ["2030-01-01T10:00", "2030-01-01 10:00:00", "2030-01-01"] {
            assert_eq!(
                ok(s),
                Err((
                    400,
                    "Timezone information is mandatory for the scheduled switchover".into()
                )),
                "{s}"
            );
        }
        for s in [
            "garbage",
            "",
            "2030-13-01T10:00+00",
            "2030-02-30T10:00+00",
            "2030-01-01T25:00+00",
            "2030-01-01T10:00+25",
            "2030-01-01T10:00+00 trailing",
            "2030-01-01Tx",
            "2030-01-01T10:00:+00",
        ] {
            let r = ok(s).unwrap_err();
            assert_eq!(r.0, 422, "{s}");
            assert!(
                r.1.starts_with("Unable to parse scheduled timestamp"),
                "{s}"
            );
        }
        assert_eq!(
            parse_schedule(&json!(5), "restart", now()).unwrap_err().0,
            422
        );
        assert_eq!(
            ok("2019-09-24T12:00+00"),
            Err((422, "Cannot schedule switchover in the past".into()))
        );
    }

    #[test]
    fn switchover_checks_in_order() {
        use SwitchoverKind::*;
        let v = |b: Value, k, p| validate_switchover(&obj(b), k, p, now());
        let msg = |r: Result<SwitchoverRequest, Rejection>| r.unwrap_err();
        assert_eq!(
            msg(v(json!({"foo": "bar"}), Failover, false)),
            (
                400,
                "Failover could be performed only to a specific candidate".into()
            )
        );
        assert_eq!(
            msg(v(json!({"candidate": "b"}), Switchover, false)).1,
            "Switchover could be performed only from a specific leader"
        );
        assert_eq!(
            msg(v(
                json!({"candidate": "b", "scheduled_at": "2030-01-01T00:00+00"}),
                Failover,
                false
            ))
            .1,
            "Failover can't be scheduled"
        );
        assert_eq!(
            msg(v(
                json!({"leader": "a", "candidate": "b", "scheduled_at": "2030-01-01T00:00+00"}),
                Switchover,
                true
            ))
            .1,
            "Can't schedule switchover in the paused state"
        );
        assert_eq!(
            msg(v(json!({"leader": "a"}), Switchover, true)).1,
            "Switchover is possible only to a specific candidate in a paused state"
        );
        assert_eq!(
            msg(v(json!({"leader": "a", "member": "a"}), Switchover, false)).1,
            "Switchover target and source are the same"
        );
        let r = v(
            json!({"leader": "a", "member": "b", "candidate": ""}),
            Failover,
            false,
        )
        .unwrap();
        assert_eq!(r.kind, Switchover);
        assert_eq!(r.candidate.as_deref(), Some("b"));
        let r = v(
            json!({"leader": "a", "scheduled_at": "2030-01-01 00:00:00+01:00"}),
            Switchover,
            false,
        )
        .unwrap();
        assert_eq!(r.scheduled_at.as_deref(), Some("2030-01-01T00:00:00+01:00"));
        assert_eq!(r.candidate, None);
        // Empty scheduled_at is "not scheduled".
        let r = v(
            json!({"candidate": "b", "scheduled_at": ""}),
            Failover,
            true,
        )
        .unwrap();
        assert_eq!(r.kind, Failover);
        assert_eq!(r.scheduled_at, None);
    }

    #[test]
    fn seconds() {
        for (v, want) in [
            (json!(5), Some(5)),
            (json!("5"), Some(5)),
            (json!(" 10 s "), Some(10)),
            (json!("2min"), Some(120)),
            (json!("1h"), Some(3600)),
            (json!("1d"), Some(86400)),
            (json!("1500ms"), Some(2)),
            (json!("2500ms"), Some(2)),
            (json!(5.5), Some(6)),
            (json!("0x10"), Some(16)),
            (json!("010"), Some(8)),
            (json!("-3"), Some(-3)),
            (json!("1e2"), Some(100)),
            (json!(".5s"), Some(0)),
            (json!("5 years"), None),
            (json!("abc"), None),
            (json!(true), None),
            (json!(null), None),
            (json!(""), None),
            (json!("08"), None),
        ] {
            assert_eq!(parse_seconds(&v), want, "{v}");
        }
    }

    #[test]
    fn restart_filters() {
        let v = |b: Value, p| validate_restart(&obj(b), p, now());
        assert_eq!(v(json!({}), false).unwrap(), RestartRequest::default());
        let r = v(
            json!({"schedule": "2030-01-01T00:00:00+00:00", "role": "master", "postgres_version": "15.4",
                   "timeout": "1min", "restart_pending": "True"}),
            false,
        )
        .unwrap();
        assert_eq!(
            r,
            RestartRequest {
                schedule: Some("2030-01-01T00:00:00+00:00".into()),
                role: Some("primary".into()),
                postgres_version: Some("15.4".into()),
                timeout: Some(60),
                restart_pending: Some(true),
            }
        );
        assert_eq!(
            v(json!({"restart_pending": false}), false)
                .unwrap()
                .restart_pending,
            Some(false)
        );
        assert_eq!(
            v(json!({"restart_pending": "false"}), false)
                .unwrap()
                .restart_pending,
            Some(false)
        );
        assert_eq!(
            v(json!({"schedule": "garbage"}), true),
            Err((500, "Can't schedule restart in the paused state".into()))
        );
        assert_eq!(
            v(json!({"role": "leader"}), false),
            Err((
                400,
                "PostgreSQL role should be either primary, standby_leader, or replica".into()
            ))
        );
        assert_eq!(
            v(json!({"postgres_version": "9.6"}), false),
            Err((
                400,
                "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6".into()
            ))
        );
        assert_eq!(
            v(json!({"postgres_version": "a.b"}), false),
            Err((400, "Invalid PostgreSQL version: a.b".into()))
        );
        assert!(v(json!({"postgres_version": "9.6.24"}), false).is_ok());
        for t in [json!(0), json!(-1), json!("x"), json!(null)] {
            assert_eq!(
                v(json!({"timeout": t}), false),
                Err((400, "Timeout should be a positive number of seconds".into()))
            );
        }
        assert_eq!(
            v(json!({"foo": 1}), false),
            Err((400, "Unknown filter for the scheduled restart: foo".into()))
        );
        // First error wins, in body order.
        assert_eq!(
            v(json!({"foo": 1, "role": "x"}), false).unwrap_err().1,
            "Unknown filter for the scheduled restart: foo"
        );
        assert_eq!(
            v(json!({"schedule": "2030-01-01T00:00:00"}), false),
            Err((
                400,
                "Timezone information is mandatory for the scheduled restart".into()
            ))
        );
        assert_eq!(
            v(json!({"schedule": "2020-01-01T00:00:00+00"}), false),
            Err((422, "Cannot schedule restart in the past".into()))
        );
    }

    #[test]
    fn bool_flags() {
        assert!(parse_bool_flag(Some(&json!(true))));
        assert!(parse_bool_flag(Some(&json!("on"))));
        assert!(parse_bool_flag(Some(&json!(1))));
        assert!(!parse_bool_flag(Some(&json!("nope"))));
        assert!(!parse_bool_flag(None));
    }
}
