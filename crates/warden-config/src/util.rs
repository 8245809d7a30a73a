//! Small value parsers shared by the loader (Patroni's `parse_bool`, `parse_int`, `split_host_port`, `unquote`).

use serde_json::Value;

/// Patroni's `parse_bool`: `on/true/yes/1` → true, `off/false/no/0` → false (case-insensitive,
/// surrounding whitespace ignored); anything else → `None`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Interpret a JSON value as a boolean the way Patroni's `parse_bool(str(value))` does
/// (JSON booleans, the integers 0/1, and the strings accepted by [`parse_bool`]).
pub fn value_as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => parse_bool(s),
        _ => None,
    }
}

/// C `strtol` with base 0 on the start of `s`: returns the value and the unparsed rest.
fn strtol(s: &str) -> Option<(i64, &str)> {
    let t = s.trim_start();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if body.len() > 2 && (body.starts_with("0x") || body.starts_with("0X")) {
        (16, &body[2..])
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    let end = digits
        .char_indices()
        .find(|(_, c)| !c.is_digit(radix))
        .map(|(i, _)| i)
        .unwrap_or(digits.len());
    if end == 0 {
        if radix == 8 {
            // a lone "0"
            return Some((0, &body[1..]));
        }
        return None;
    }
    let mag = i64::from_str_radix(&digits[..end], radix).ok()?;
    Some((if neg { -mag } else { mag }, &digits[end..]))
}

/// Patroni's `parse_int(value)` without a base unit: C-style integer (`0644` octal, `0x..`
/// hex), or a float rounded to the nearest integer; trailing text (units) → `None`.
pub fn parse_int(s: &str) -> Option<i64> {
    if let Some((v, rest)) = strtol(s) {
        if rest.trim().is_empty() {
            return Some(v);
        }
        if !(rest.starts_with('.') || rest.starts_with('e') || rest.starts_with('E')) {
            return None;
        }
    }
    let f: f64 = s.trim().parse().ok()?;
    if f.is_finite() && f.abs() < 9.0e18 {
        Some(f.round() as i64)
    } else {
        None
    }
}

/// Interpret a JSON value as an integer: JSON integers, integral floats, or strings accepted
/// by [`parse_int`]. Booleans are rejected.
pub fn value_as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.0e18)
                .map(|f| f.round() as i64)
        }),
        Value::String(s) => parse_int(s),
        _ => None,
    }
}

/// Parse a duration in seconds: an integer, or a number followed by a PostgreSQL time unit
/// (`ms`, `s`, `min`, `h`, `d`), e.g. `30min` → 1800.
pub fn parse_duration_secs(v: &Value) -> Option<i64> {
    if let Some(i) = value_as_int(v) {
        return Some(i);
    }
    let s = v.as_str()?.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let r = (n * mult).round();
    if r.is_finite() && r.abs() < 9.0e18 {
        Some(r as i64)
    } else {
        None
    }
}

/// Patroni's `split_host_port`: split `host:port` at the last `:`; IPv6 brackets are removed
/// from (each comma-separated) host. Without a `:` the `default_port` is used (`None` ⇒ error).
/// Returns `None` when the port is missing (and no default) or not a valid TCP port (1–65535).
pub fn split_host_port(value: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let value = value.trim();
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, p.trim().parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (value, default_port?),
    };
    let host = if host.contains(':') {
        host.split(',')
            .map(|h| h.trim().trim_matches(|c| c == '[' || c == ']'))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        host.trim().to_string()
    };
    Some((host, port))
}

/// Posix shell-word split (subset of Python's `shlex.split`); `None` on unbalanced quotes.
pub fn shell_split(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let n = chars.next()?;
                            if !matches!(n, '"' | '\\' | '$' | '`' | '\n') {
                                cur.push('\\');
                            }
                            cur.push(n);
                        }
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

/// Patroni's `unquote`: if the string is exactly one shell word, return it without quotes;
/// otherwise return it unchanged.
pub fn unquote(s: &str) -> String {
    match shell_split(s) {
        Some(v) if v.len() == 1 => v.into_iter().next().unwrap_or_default(),
        _ => s.to_string(),
    }
}

/// Render a scalar as Python's `str()` would for option values: strings as is, numbers in
/// decimal, booleans `true`/`false` (lower-case; Python would write `True`).
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Python truthiness of a JSON value.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
