//! Health-check decisions (rest-api.md §3), computed from the published [`NodeStatus`]
//! snapshot only: nothing here talks to PostgreSQL or the DCS.

use serde_json::Value;
use warden_core::cluster::truthy;
use warden_core::status::{NodeStatus, Xlog};

pub use warden_core::cluster::GlobalFlags;

// ---------------------------------------------------------------------------------------
// Query strings (Python `urllib.parse.parse_qs` semantics)

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Python's `unquote_plus(s, errors='replace')`: `+` is a space, valid `%XX` escapes are
/// decoded, invalid ones are kept verbatim, invalid UTF-8 becomes U+FFFD.
pub fn unquote_plus(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_val);
                let lo = b.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string like Python's `parse_qs` (blank values and pairs without `=`
/// are dropped; `&` separates). Pairs keep their order; duplicates are kept (readers use
/// the first one, as Patroni does with `[0]`).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            if v.is_empty() {
                return None;
            }
            Some((unquote_plus(k), unquote_plus(v)))
        })
        .collect()
}

/// First value of `key` (blank values are ignored, like `parse_qs`).
fn query_get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------
// Sizes with units (Patroni `parse_int(value, 'B')`)

/// Python-like `strtol`: sign, `0x` hex, leading `0` octal, maximal munch.
/// Returns the value (if any) and the rest of the string, trimmed.
fn strtol(v: &str) -> (Option<i128>, &str) {
    let v = v.trim();
    let b = v.as_bytes();
    let mut i = 0;
    let mut neg = false;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        neg = b[i] == b'-';
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return (None, v);
    }
    let base: u32 = if b[i] == b'0' {
        i += 1;
        if i < b.len() && (b[i] == b'x' || b[i] == b'X') {
            i += 1;
            16
        } else {
            // A lone "0" is a valid octal literal.
            i -= 1;
            8
        }
    } else {
        10
    };
    let start = i;
    let mut val: i128 = 0;
    while i < b.len() {
        let Some(d) = (b[i] as char).to_digit(base) else {
            break;
        };
        val = val.saturating_mul(base as i128).saturating_add(d as i128);
        i += 1;
    }
    if i == start {
        // "0x" without digits, or "08" style (Python's int() rejects both).
        return (None, v);
    }
    if base == 8 && i == start + 1 && i < b.len() && !b[i].is_ascii_whitespace() {
        // Python tries int("0<next char>", 8) first: "08", "0kB", "0.5" parse nothing.
        return (None, v);
    }
    (Some(if neg { -val } else { val }), v[i..].trim())
}

/// Python-like `strtod` on `[+-]digits[.digits][e[+-]digits]` or `[+-].digits[...]`.
fn strtod(v: &str) -> (Option<f64>, &str) {
    let v = v.trim();
    let b = v.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        let j = i + 1;
        let mut k = j;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        frac_digits = k - j;
        if int_digits > 0 || frac_digits > 0 {
            i = k;
        }
    }
    if int_digits == 0 && frac_digits == 0 {
        return (None, v);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut k = i + 1;
        if k < b.len() && (b[k] == b'-' || b[k] == b'+') {
            k += 1;
        }
        let ds = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        if k > ds {
            i = k;
        }
    }
    match v[..i].parse::<f64>() {
        Ok(f) if f.is_finite() => (Some(f), v[i..].trim()),
        _ => (None, v),
    }
}

fn byte_unit(unit: &str) -> Option<i128> {
    Some(match unit {
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    })
}

/// `parse_int(value, 'B')` as Patroni computes it (may be negative).
pub(crate) fn parse_bytes_signed(s: &str) -> Option<i128> {
    let (val, unit) = strtol(s);
    if unit.starts_with(['.', 'e', 'E']) {
        let (f, unit) = strtod(s);
        let f = f?;
        if unit.is_empty() {
            return Some(f.trunc() as i128);
        }
        let m = byte_unit(unit)?;
        let r = (f * m as f64).round_ties_even();
        return r.is_finite().then_some(r as i128);
    }
    let val = val?;
    if unit.is_empty() {
        return Some(val);
    }
    Some(val.saturating_mul(byte_unit(unit)?))
}

/// Parses a lag limit: bytes, or with a unit `B`, `kB`, `MB`, `GB`, `TB` (1024-based),
/// e.g. `16kB`, `1GB`, `1024`. `None` when unparsable or negative.
pub fn parse_lag(s: &str) -> Option<u64> {
    parse_bytes_signed(s).and_then(|v| u64::try_from(v).ok())
}

// ---------------------------------------------------------------------------------------
// The decision

fn tag_as_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string().to_lowercase()),
    }
}

/// Is this node a listed synchronous (or quorum) standby in the current view?
/// Returns `(sync_standby, quorum_standby)` as Patroni's status reports them.
pub fn sync_flags(s: &NodeStatus, now_ms: u64) -> (bool, bool) {
    s.sync_flags(now_ms)
}

/// The health-check status code (200 or 503) for `path` (without the query string) and
/// its parsed query pairs, following rest-api.md §3.
pub fn health_code(path: &str, query: &[(String, String)], s: &NodeStatus, now_ms: u64) -> u16 {
    let path = if path == "/" { "/primary" } else { path };
    let cluster = s.valid_cluster(now_ms);
    // The last known dynamic config, even when the view itself is stale (Patroni keeps
    // using its global config).
    let flags = GlobalFlags::from_cluster(s.cluster.as_deref());

    let leader_optime = cluster.and_then(|c| c.status.optime).unwrap_or(0) as i128;
    let replayed = match &s.xlog {
        Some(Xlog::Replica {
            replayed_location, ..
        }) => replayed_location.unwrap_or(0) as i128,
        _ => 0,
    };
    let max_lag = query_get(query, "lag").and_then(parse_bytes_signed);
    let lagging = match max_lag {
        Some(lag) => leader_optime > 0 && leader_optime > replayed.saturating_add(lag),
        None => false,
    };
    let matches_replication_state = match query_get(query, "replication_state") {
        Some(want) => s.replication_state.as_deref() == Some(want),
        None => true,
    };
    let noloadbalance = s.tags.get("noloadbalance").is_some_and(truthy);
    let role = s.role.as_str();
    let running = s.state == "running";

    let mut replica_code = if !noloadbalance
        && !lagging
        && role == "replica"
        && running
        && matches_replication_state
    {
        200
    } else {
        503
    };

    let (leader_code, primary_code, standby_leader_code);
    if cluster.is_none() && s.paused {
        leader_code = if role == "primary" || role == "standby_leader" {
            200
        } else {
            503
        };
        primary_code = if role == "primary" { 200 } else { 503 };
        standby_leader_code = if role == "standby_leader" { 200 } else { 503 };
    } else if s.is_leader(now_ms) {
        leader_code = 200;
        if flags.standby_cluster {
            primary_code = 503;
            replica_code = 503;
            standby_leader_code = if role == "replica" || role == "standby_leader" {
                200
            } else {
                503
            };
        } else {
            primary_code = 200;
            standby_leader_code = 503;
        }
    } else {
        leader_code = 503;
        primary_code = 503;
        standby_leader_code = 503;
    }
    let writable = primary_code == 200 || standby_leader_code == 200;

    let mut code = 503;
    let mut ignore_tags = false;
    if path.contains("standby_leader") || path.contains("standby-leader") {
        code = standby_leader_code;
        ignore_tags = true;
    } else if path.contains("leader") {
        code = leader_code;
        ignore_tags = true;
    } else if path.contains("master") || path.contains("primary") || path.contains("read-write") {
        code = primary_code;
        ignore_tags = true;
    } else if path.contains("replica") {
        code = replica_code;
    } else if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
        code = if writable { 200 } else { replica_code };
    } else if path.contains("health") {
        code = if running { 200 } else { 503 };
    } else if cluster.is_some() {
        let (is_sync, is_quorum) = sync_flags(s, now_ms);
        match path {
            "/sync" | "/synchronous" if is_sync => code = replica_code,
            "/quorum" if is_quorum => code = replica_code,
            "/async" | "/asynchronous" if !is_sync && !is_quorum => code = replica_code,
            "/read-only-quorum" => {
                if writable {
                    code = 200
                } else if is_quorum {
                    code = replica_code
                }
            }
            "/read-only-sync" | "/read-only-synchronous" => {
                if writable {
                    code = 200
                } else if is_sync {
                    code = replica_code
                }
            }
            _ => {}
        }
    }

    if !ignore_tags && code == 200 {
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in query {
            let Some(tag) = k.strip_prefix("tag_") else {
                continue;
            };
            if v.is_empty() || seen.contains(&tag) {
                continue; // blank values are dropped; only the first value of a key counts
            }
            seen.push(tag);
            match s.tags.get(tag).and_then(tag_as_string) {
                Some(actual) if actual == *v => {}
                _ => return 503,
            }
        }
    }
    code
}

/// `GET /liveness`: 200 while paused or while the next HA cycle is not overdue by more
/// than `ttl` (running primary) or `2*ttl` (anything else).
pub fn liveness_code(s: &NodeStatus, now_ms: u64) -> u16 {
    if s.paused {
        return 200;
    }
    let is_primary = s.role == "primary" && s.state == "running";
    let threshold = s
        .ttl
        .saturating_mul(1000)
        .saturating_mul(if is_primary { 1 } else { 2 });
    if s.next_cycle_due_ms.saturating_add(threshold) > now_ms {
        200
    } else {
        503
    }
}

/// `GET /readiness?lag=&mode=apply|write` (rest-api.md §3 special probes).
pub fn readiness_code(query: &[(String, String)], s: &NodeStatus, now_ms: u64) -> u16 {
    if s.is_leader(now_ms) {
        return 200;
    }
    if s.state != "running" {
        return 503;
    }
    if s.replication_state.as_deref() != Some("streaming") {
        return 503;
    }
    // The WAL receiver's latest_end_lsn and the failsafe state are not in the snapshot:
    // without a DCS view the node is not ready.
    let Some(cluster) = s.valid_cluster(now_ms) else {
        return 503;
    };
    let leader_optime = cluster.status.optime.unwrap_or(0) as i128;
    let write_mode = query_get(query, "mode") == Some("write");
    let location = match &s.xlog {
        Some(Xlog::Replica {
            received_location,
            replayed_location,
            ..
        }) => {
            if write_mode {
                received_location.or(*replayed_location)
            } else {
                *replayed_location
            }
        }
        _ => None,
    }
    .unwrap_or(0) as i128;
    let lag = leader_optime - location;
    let limit = query_get(query, "lag")
        .and_then(parse_bytes_signed)
        .unwrap_or(s.maximum_lag_on_failover as i128);
    if lag > limit {
        503
    } else {
        200
    }
}
