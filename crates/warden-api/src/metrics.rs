//! `GET /metrics`: Prometheus text exposition, byte-compatible with Patroni's
//! (spec/metrics.md), followed by a few Warden-only metrics under the `warden_` prefix.
//!
//! Everything is rendered from the published [`NodeStatus`] snapshot: no PostgreSQL or
//! DCS round trip, so a scrape never blocks.

use crate::health::sync_flags;
use serde_json::Value;
use std::fmt::Write as _;
use warden_core::cluster::{truthy, GlobalFlags};
use warden_core::status::{NodeStatus, Xlog};

/// PostgreSQL states in Patroni's `PostgresqlState` order: the index is the value of
/// `patroni_postgres_state` (fixed forever).
const STATES: [&str; 15] = [
    "initializing new cluster",
    "initdb failed",
    "running custom bootstrap script",
    "custom bootstrap failed",
    "creating replica",
    "running",
    "starting",
    "starting after custom bootstrap",
    "start failed",
    "restarting",
    "restart failed",
    "stopping",
    "stopped",
    "stop failed",
    "crashed",
];

/// The comment line Patroni prints between HELP and TYPE of `patroni_postgres_state`.
const STATE_VALUES_COMMENT: &str = "# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, \
3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, \
8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, \
14=crashed";

/// `patroni_postgres_state` value: the state's index, `-1` for `unknown` or anything else.
fn state_index(state: &str) -> i64 {
    STATES
        .iter()
        .position(|s| *s == state)
        .map_or(-1, |i| i as i64)
}

/// Patroni's `''.join(x.zfill(2) for x in version.split('.'))`: `4.1.4` → `040104`.
fn padded_semver(version: &str) -> String {
    version
        .split('.')
        .map(|p| {
            if p.chars().count() < 2 {
                format!("{}{p}", "0".repeat(2 - p.chars().count()))
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Microseconds since the epoch of a timestamp as Python's `str(datetime)` writes it:
/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM[:SS]]` (also `T` as separator, `Z`, `±HH`,
/// `±HHMM`; no offset is read as UTC). `None` if it does not parse.
pub fn parse_timestamp_micros(ts: &str) -> Option<i64> {
    let ts = ts.trim();
    if ts.len() < 19 || !ts.is_char_boundary(10) || !ts.is_char_boundary(19) {
        return None;
    }
    let (date, rest) = ts.split_at(10);
    let sep = rest.as_bytes()[0];
    if sep != b' ' && sep != b'T' {
        return None;
    }
    let (time, mut rest) = rest[1..].split_at(8);
    let mut d = date.split('-');
    let (y, mo, da) = (digits(d.next()?)?, digits(d.next()?)?, digits(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let mut t = time.split(':');
    let (h, mi, s) = (digits(t.next()?)?, digits(t.next()?)?, digits(t.next()?)?);
    if t.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let f = &frac[..n];
        // Python keeps microseconds; pad or cut to 6 digits.
        let six: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = digits(&six)?;
        rest = &frac[n..];
    }
    let offset_s = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let off = &rest[1..];
            let parts: Vec<&str> = if off.contains(':') {
                off.split(':').collect()
            } else if off.len() == 4 {
                vec![&off[..2], &off[2..]]
            } else {
                vec![off]
            };
            if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
                return None;
            }
            let mut secs = 0;
            for (i, p) in parts.iter().enumerate() {
                secs += digits(p)? * [3600, 60, 1][i];
            }
            sign * secs
        }
    };
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// Python's `repr(float)` for a value computed as `timedelta.total_seconds()`:
/// shortest round-trip digits, always with a fractional part (`1724873966.0`).
fn python_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'E']) || !v.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// `(ts - epoch).total_seconds()` rendered like Python, or `0` when absent/unparsable.
fn epoch_value(ts: Option<&str>) -> String {
    match ts
        .filter(|t| !t.is_empty())
        .and_then(parse_timestamp_micros)
    {
        Some(us) => python_float(us as f64 / 1e6),
        None => "0".to_string(),
    }
}

/// Seconds from milliseconds for the `warden_` gauges (`0.012`, `3`, …).
fn seconds(ms: u64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// Escapes a label value per the Prometheus text format (backslash, quote, newline).
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Patroni's `failover_priority`: 0 if `nofailover` is truthy, else the
/// `failover_priority` tag as an integer (default 1).
fn failover_priority(s: &NodeStatus) -> i64 {
    if s.tags.get("nofailover").is_some_and(truthy) {
        return 0;
    }
    let parsed = match s.tags.get("failover_priority") {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(v)) => v.trim().parse::<i64>().ok(),
        Some(Value::Bool(b)) => Some(i64::from(*b)),
        _ => None,
    };
    parsed.unwrap_or(1)
}

struct Out {
    buf: String,
    labels: String,
}

impl Out {
    fn metric(&mut self, name: &str, typ: &str, help: &str, value: impl std::fmt::Display) {
        let _ = write!(
            self.buf,
            "# HELP {name} {help}\n# TYPE {name} {typ}\n{name}{} {value}\n",
            self.labels
        );
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.metric(name, "gauge", help, value);
    }

    fn flag(&mut self, name: &str, help: &str, value: bool) {
        self.metric(name, "gauge", help, u8::from(value));
    }
}

/// The `GET /metrics` body for snapshot `s` at monotonic time `now_ms` (the clock of
/// [`crate::monotonic_ms`]): Patroni's 24–26 metrics in Patroni's order, then the
/// `warden_` metrics.
pub fn render_metrics(s: &NodeStatus, now_ms: u64) -> String {
    let mut o = Out {
        buf: String::with_capacity(8192),
        labels: format!("{{scope=\"{}\",name=\"{}\"}}", s.scope, s.name),
    };
    let (received, replayed, replayed_ts, paused, location) = match &s.xlog {
        Some(Xlog::Primary { location }) => (0, 0, None, false, *location),
        Some(Xlog::Replica {
            received_location,
            replayed_location,
            replayed_timestamp,
            paused,
        }) => (
            received_location.or(*replayed_location).unwrap_or(0),
            replayed_location.unwrap_or(0),
            replayed_timestamp.as_deref(),
            *paused,
            0,
        ),
        None => (0, 0, None, false, 0),
    };
    let (sync_standby, quorum_standby) = sync_flags(s, now_ms);
    // The last known dynamic config and /failsafe content, even if the view is stale
    // (Patroni keeps its global config and failsafe dict across DCS outages).
    let known = s.cluster.as_deref();
    let failsafe_enabled = known
        .and_then(|c| c.config.as_ref())
        .and_then(|k| k.value.get("failsafe_mode"))
        .is_some_and(truthy);
    let failsafe_member = known
        .and_then(|c| c.failsafe.as_ref())
        .is_some_and(|f| f.contains_key(&s.name));
    let unlocked = s.valid_cluster(now_ms).is_none_or(|c| c.is_unlocked());
    let server_version = s.server_version.unwrap_or(0);

    o.gauge(
        "patroni_version",
        "Patroni semver without periods.",
        padded_semver(&s.version),
    );
    o.flag(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        s.state == "running",
    );
    o.gauge(
        "patroni_postmaster_start_time",
        "Epoch seconds since Postgres started.",
        epoch_value(s.postmaster_start_time.as_deref()),
    );
    o.flag(
        "patroni_primary",
        "Value is 1 if this node is the leader, 0 otherwise.",
        s.role == "primary",
    );
    o.metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        location,
    );
    o.flag(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        s.role == "standby_leader",
    );
    o.flag(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        s.role == "replica",
    );
    o.flag(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        sync_standby,
    );
    o.flag(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        quorum_standby,
    );
    o.metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        received,
    );
    o.metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        replayed,
    );
    o.gauge(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        epoch_value(replayed_ts),
    );
    o.flag(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        paused,
    );
    if server_version >= 90600 {
        let rs = s.replication_state.as_deref();
        o.flag(
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            rs == Some("streaming"),
        );
        o.flag(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            rs == Some("in archive recovery"),
        );
    }
    o.gauge(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        server_version,
    );
    o.flag(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        unlocked,
    );
    o.flag(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        s.failsafe_active,
    );
    o.flag(
        "patroni_failsafe_mode_enabled",
        "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
        failsafe_enabled,
    );
    o.flag(
        "patroni_failsafe_member",
        "Value is 1 if this node is a member of failsafe, 0 otherwise.",
        failsafe_member,
    );
    o.gauge(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        s.timeline.unwrap_or(0),
    );
    o.gauge(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        s.dcs_last_seen,
    );
    o.flag(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        s.pending_restart || !s.pending_restart_reason.is_empty(),
    );
    o.flag(
        "patroni_is_paused",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        s.paused,
    );
    let _ = write!(
        o.buf,
        "# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
         {STATE_VALUES_COMMENT}\n\
         # TYPE patroni_postgres_state gauge\n\
         patroni_postgres_state{} {}\n",
        o.labels,
        state_index(&s.state)
    );
    o.gauge(
        "patroni_failover_priority",
        "Failover priority of this node.",
        failover_priority(s),
    );

    // Warden-only metrics.
    o.gauge(
        "warden_ha_cycle_duration_seconds",
        "Duration of the last HA cycle in seconds.",
        seconds(s.last_cycle_ms),
    );
    o.gauge(
        "warden_dcs_round_trip_seconds",
        "Round trip of the last DCS read in seconds.",
        seconds(s.dcs_round_trip_ms),
    );
    o.metric(
        "warden_ha_cycles_total",
        "counter",
        "HA cycles run since the agent started.",
        s.cycles,
    );
    let remaining = match s.leader_until_ms {
        Some(t) if s.is_leader(now_ms) => t - now_ms,
        _ => 0,
    };
    o.gauge(
        "warden_leader_lock_remaining_seconds",
        "Seconds until this node's leader lock expires unless renewed, 0 if it does not hold it.",
        seconds(remaining),
    );
    // Patroni has no watchdog metric.
    o.flag(
        "warden_watchdog_active",
        "Value is 1 if this node's watchdog device is open and kicked, 0 otherwise.",
        s.watchdog_active,
    );
    // Patroni has no metric for the age of the HA loop: a stuck loop keeps serving its
    // last snapshot, so monitoring compares this timestamp with its own clock.
    o.gauge(
        "warden_ha_last_cycle_timestamp_seconds",
        "Epoch seconds when the last HA cycle completed, 0 before the first one.",
        seconds(s.last_cycle_epoch_ms),
    );
    // Patroni's `patroni_sync_standby` is 0 on every node both when synchronous mode is
    // off and when it is on without a synchronous standby; this tells the two apart.
    o.flag(
        "warden_synchronous_mode",
        "Value is 1 if synchronous_mode (on or quorum) is enabled in a non-standby cluster, 0 otherwise.",
        GlobalFlags::from_cluster(known).synchronous_mode,
    );
    let _ = write!(
        o.buf,
        "# HELP warden_last_decision_info The last HA decision of this node, in the reason label; value is always 1.\n\
         # TYPE warden_last_decision_info gauge\n\
         warden_last_decision_info{{scope=\"{}\",name=\"{}\",reason=\"{}\"}} 1\n",
        s.scope,
        s.name,
        escape_label_value(&s.last_decision)
    );
    o.buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use std::sync::Arc;
    use warden_core::cluster::{Cluster, ConfigKey, Leader, SyncState};

    /// The sample of spec/metrics.md §3, verbatim.
    const SPEC_SAMPLE: &str = r#"# HELP patroni_version Patroni semver without periods.
# TYPE patroni_version gauge
patroni_version{scope="batman",name="patroni2"} 040104
# HELP patroni_postgres_running Value is 1 if Postgres is running, 0 otherwise.
# TYPE patroni_postgres_running gauge
patroni_postgres_running{scope="batman",name="patroni2"} 1
# HELP patroni_postmaster_start_time Epoch seconds since Postgres started.
# TYPE patroni_postmaster_start_time gauge
patroni_postmaster_start_time{scope="batman",name="patroni2"} 1724873966.352526
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_primary gauge
patroni_primary{scope="batman",name="patroni2"} 0
# HELP patroni_xlog_location Current location of the Postgres transaction log, 0 if this node is not the leader.
# TYPE patroni_xlog_location counter
patroni_xlog_location{scope="batman",name="patroni2"} 0
# HELP patroni_standby_leader Value is 1 if this node is the standby_leader, 0 otherwise.
# TYPE patroni_standby_leader gauge
patroni_standby_leader{scope="batman",name="patroni2"} 0
# HELP patroni_replica Value is 1 if this node is a replica, 0 otherwise.
# TYPE patroni_replica gauge
patroni_replica{scope="batman",name="patroni2"} 1
# HELP patroni_sync_standby Value is 1 if this node is a sync standby, 0 otherwise.
# TYPE patroni_sync_standby gauge
patroni_sync_standby{scope="batman",name="patroni2"} 0
# HELP patroni_quorum_standby Value is 1 if this node is a quorum standby, 0 otherwise.
# TYPE patroni_quorum_standby gauge
patroni_quorum_standby{scope="batman",name="patroni2"} 0
# HELP patroni_xlog_received_location Current location of the received Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_received_location counter
patroni_xlog_received_location{scope="batman",name="patroni2"} 67419744
# HELP patroni_xlog_replayed_location Current location of the replayed Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_replayed_location counter
patroni_xlog_replayed_location{scope="batman",name="patroni2"} 67419744
# HELP patroni_xlog_replayed_timestamp Current timestamp of the replayed Postgres transaction log, 0 if null.
# TYPE patroni_xlog_replayed_timestamp gauge
patroni_xlog_replayed_timestamp{scope="batman",name="patroni2"} 0
# HELP patroni_xlog_paused Value is 1 if the Postgres xlog is paused, 0 otherwise.
# TYPE patroni_xlog_paused gauge
patroni_xlog_paused{scope="batman",name="patroni2"} 0
# HELP patroni_postgres_streaming Value is 1 if Postgres is streaming, 0 otherwise.
# TYPE patroni_postgres_streaming gauge
patroni_postgres_streaming{scope="batman",name="patroni2"} 1
# HELP patroni_postgres_in_archive_recovery Value is 1 if Postgres is replicating from archive, 0 otherwise.
# TYPE patroni_postgres_in_archive_recovery gauge
patroni_postgres_in_archive_recovery{scope="batman",name="patroni2"} 0
# HELP patroni_postgres_server_version Version of Postgres (if running), 0 otherwise.
# TYPE patroni_postgres_server_version gauge
patroni_postgres_server_version{scope="batman",name="patroni2"} 160004
# HELP patroni_cluster_unlocked Value is 1 if the cluster is unlocked, 0 if locked.
# TYPE patroni_cluster_unlocked gauge
patroni_cluster_unlocked{scope="batman",name="patroni2"} 0
# HELP patroni_failsafe_mode_is_active Value is 1 if failsafe mode is active, 0 if inactive.
# TYPE patroni_failsafe_mode_is_active gauge
patroni_failsafe_mode_is_active{scope="batman",name="patroni2"} 0
# HELP patroni_failsafe_mode_enabled Value is 1 if failsafe_mode is enabled, 0 otherwise.
# TYPE patroni_failsafe_mode_enabled gauge
patroni_failsafe_mode_enabled{scope="batman",name="patroni2"} 0
# HELP patroni_failsafe_member Value is 1 if this node is a member of failsafe, 0 otherwise.
# TYPE patroni_failsafe_member gauge
patroni_failsafe_member{scope="batman",name="patroni2"} 0
# HELP patroni_postgres_timeline Postgres timeline of this node (if running), 0 otherwise.
# TYPE patroni_postgres_timeline gauge
patroni_postgres_timeline{scope="batman",name="patroni2"} 1
# HELP patroni_dcs_last_seen Epoch timestamp when DCS was last contacted successfully by Patroni.
# TYPE patroni_dcs_last_seen gauge
patroni_dcs_last_seen{scope="batman",name="patroni2"} 1724874295
# HELP patroni_pending_restart Value is 1 if the node needs a restart, 0 otherwise.
# TYPE patroni_pending_restart gauge
patroni_pending_restart{scope="batman",name="patroni2"} 0
# HELP patroni_is_paused Value is 1 if auto failover is disabled, 0 otherwise.
# TYPE patroni_is_paused gauge
patroni_is_paused{scope="batman",name="patroni2"} 0
# HELP patroni_postgres_state Numeric representation of Postgres state.
# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed
# TYPE patroni_postgres_state gauge
patroni_postgres_state{scope="batman",name="patroni2"} 5
# HELP patroni_failover_priority Failover priority of this node.
# TYPE patroni_failover_priority gauge
patroni_failover_priority{scope="batman",name="patroni2"} 1
"#;

    /// Every Patroni metric with its TYPE, in output order.
    const PATRONI_METRICS: [(&str, &str); 26] = [
        ("patroni_version", "gauge"),
        ("patroni_postgres_running", "gauge"),
        ("patroni_postmaster_start_time", "gauge"),
        ("patroni_primary", "gauge"),
        ("patroni_xlog_location", "counter"),
        ("patroni_standby_leader", "gauge"),
        ("patroni_replica", "gauge"),
        ("patroni_sync_standby", "gauge"),
        ("patroni_quorum_standby", "gauge"),
        ("patroni_xlog_received_location", "counter"),
        ("patroni_xlog_replayed_location", "counter"),
        ("patroni_xlog_replayed_timestamp", "gauge"),
        ("patroni_xlog_paused", "gauge"),
        ("patroni_postgres_streaming", "gauge"),
        ("patroni_postgres_in_archive_recovery", "gauge"),
        ("patroni_postgres_server_version", "gauge"),
        ("patroni_cluster_unlocked", "gauge"),
        ("patroni_failsafe_mode_is_active", "gauge"),
        ("patroni_failsafe_mode_enabled", "gauge"),
        ("patroni_failsafe_member", "gauge"),
        ("patroni_postgres_timeline", "gauge"),
        ("patroni_dcs_last_seen", "gauge"),
        ("patroni_pending_restart", "gauge"),
        ("patroni_is_paused", "gauge"),
        ("patroni_postgres_state", "gauge"),
        ("patroni_failover_priority", "gauge"),
    ];

    const WARDEN_METRICS: [(&str, &str); 8] = [
        ("warden_ha_cycle_duration_seconds", "gauge"),
        ("warden_dcs_round_trip_seconds", "gauge"),
        ("warden_ha_cycles_total", "counter"),
        ("warden_leader_lock_remaining_seconds", "gauge"),
        ("warden_watchdog_active", "gauge"),
        ("warden_ha_last_cycle_timestamp_seconds", "gauge"),
        ("warden_synchronous_mode", "gauge"),
        ("warden_last_decision_info", "gauge"),
    ];

    fn cluster(leader: Option<&str>, config: Value) -> Arc<Cluster> {
        Arc::new(Cluster {
            leader: leader.map(|n| Leader {
                name: n.into(),
                version: 1,
                session: 7,
            }),
            config: Some(ConfigKey {
                value: config,
                version: 2,
            }),
            ..Cluster::default()
        })
    }

    /// The replica of the spec sample (Patroni 4.1.4 test harness).
    fn replica() -> NodeStatus {
        NodeStatus {
            name: "patroni2".into(),
            scope: "batman".into(),
            state: "running".into(),
            role: "replica".into(),
            pg_answered: true,
            postmaster_start_time: Some("2024-08-28 19:39:26.352526+00:00".into()),
            server_version: Some(160004),
            xlog: Some(Xlog::Replica {
                received_location: Some(67419744),
                replayed_location: Some(67419744),
                replayed_timestamp: None,
                paused: false,
            }),
            timeline: Some(1),
            replication_state: Some("streaming".into()),
            dcs_last_seen: 1724874295,
            cluster_valid_until_ms: Some(30_000),
            cluster: Some(cluster(Some("patroni1"), json!({"ttl": 30}))),
            version: "4.1.4".into(),
            last_decision:
                "no action. I am (patroni2), a secondary, and following a leader (patroni1)".into(),
            last_cycle_ms: 12,
            dcs_round_trip_ms: 3,
            cycles: 42,
            last_cycle_epoch_ms: 1_724_874_295_250,
            ..NodeStatus::default()
        }
    }

    fn primary() -> NodeStatus {
        let mut fs = Map::new();
        fs.insert("pg1".into(), json!("http://127.0.0.1:8008/patroni"));
        fs.insert("pg2".into(), json!("http://127.0.0.1:8009/patroni"));
        let c = Cluster {
            failsafe: Some(fs),
            ..(*cluster(
                Some("pg1"),
                json!({"failsafe_mode": true, "synchronous_mode": true}),
            ))
            .clone()
        };
        let mut tags = Map::new();
        tags.insert("failover_priority".into(), json!(3));
        NodeStatus {
            name: "pg1".into(),
            scope: "demo".into(),
            state: "running".into(),
            role: "primary".into(),
            pg_answered: true,
            postmaster_start_time: Some("2025-03-01 10:00:00+01:00".into()),
            server_version: Some(150004),
            xlog: Some(Xlog::Primary { location: 50331992 }),
            timeline: Some(3),
            leader_until_ms: Some(31_500),
            dcs_last_seen: 1740819600,
            cluster_valid_until_ms: Some(40_000),
            cluster: Some(Arc::new(c)),
            tags,
            pending_restart: true,
            watchdog_active: true,
            version: "4.1.5".into(),
            last_decision: "no action. I am (pg1), the leader with the lock".into(),
            last_cycle_ms: 1500,
            dcs_round_trip_ms: 0,
            cycles: 7,
            ..NodeStatus::default()
        }
    }

    #[test]
    fn replica_matches_the_spec_sample_then_warden_metrics() {
        let out = render_metrics(&replica(), 1_000);
        let (patroni, warden) = out.split_at(SPEC_SAMPLE.len());
        assert_eq!(patroni, SPEC_SAMPLE);
        assert_eq!(
            warden,
            "# HELP warden_ha_cycle_duration_seconds Duration of the last HA cycle in seconds.\n\
             # TYPE warden_ha_cycle_duration_seconds gauge\n\
             warden_ha_cycle_duration_seconds{scope=\"batman\",name=\"patroni2\"} 0.012\n\
             # HELP warden_dcs_round_trip_seconds Round trip of the last DCS read in seconds.\n\
             # TYPE warden_dcs_round_trip_seconds gauge\n\
             warden_dcs_round_trip_seconds{scope=\"batman\",name=\"patroni2\"} 0.003\n\
             # HELP warden_ha_cycles_total HA cycles run since the agent started.\n\
             # TYPE warden_ha_cycles_total counter\n\
             warden_ha_cycles_total{scope=\"batman\",name=\"patroni2\"} 42\n\
             # HELP warden_leader_lock_remaining_seconds Seconds until this node's leader lock expires unless renewed, 0 if it does not hold it.\n\
             # TYPE warden_leader_lock_remaining_seconds gauge\n\
             warden_leader_lock_remaining_seconds{scope=\"batman\",name=\"patroni2\"} 0\n\
             # HELP warden_watchdog_active Value is 1 if this node's watchdog device is open and kicked, 0 otherwise.\n\
             # TYPE warden_watchdog_active gauge\n\
             warden_watchdog_active{scope=\"batman\",name=\"patroni2\"} 0\n\
             # HELP warden_ha_last_cycle_timestamp_seconds Epoch seconds when the last HA cycle completed, 0 before the first one.\n\
             # TYPE warden_ha_last_cycle_timestamp_seconds gauge\n\
             warden_ha_last_cycle_timestamp_seconds{scope=\"batman\",name=\"patroni2\"} 1724874295.25\n\
             # HELP warden_synchronous_mode Value is 1 if synchronous_mode (on or quorum) is enabled in a non-standby cluster, 0 otherwise.\n\
             # TYPE warden_synchronous_mode gauge\n\
             warden_synchronous_mode{scope=\"batman\",name=\"patroni2\"} 0\n\
             # HELP warden_last_decision_info The last HA decision of this node, in the reason label; value is always 1.\n\
             # TYPE warden_last_decision_info gauge\n\
             warden_last_decision_info{scope=\"batman\",name=\"patroni2\",reason=\"no action. I am (patroni2), a secondary, and following a leader (patroni1)\"} 1\n"
        );
    }

    /// Sample lines (`name{labels} value`) of the output, in order.
    fn samples(out: &str) -> Vec<(String, String)> {
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn primary_values() {
        let out = render_metrics(&primary(), 30_000);
        let l = "{scope=\"demo\",name=\"pg1\"}";
        let expect = [
            ("patroni_version", "040105"),
            ("patroni_postgres_running", "1"),
            // 10:00:00+01:00 = 09:00:00 UTC; whole seconds render like Python (`.0`).
            ("patroni_postmaster_start_time", "1740819600.0"),
            ("patroni_primary", "1"),
            ("patroni_xlog_location", "50331992"),
            ("patroni_standby_leader", "0"),
            ("patroni_replica", "0"),
            ("patroni_sync_standby", "0"),
            ("patroni_quorum_standby", "0"),
            ("patroni_xlog_received_location", "0"),
            ("patroni_xlog_replayed_location", "0"),
            ("patroni_xlog_replayed_timestamp", "0"),
            ("patroni_xlog_paused", "0"),
            ("patroni_postgres_streaming", "0"),
            ("patroni_postgres_in_archive_recovery", "0"),
            ("patroni_postgres_server_version", "150004"),
            ("patroni_cluster_unlocked", "0"),
            ("patroni_failsafe_mode_is_active", "0"),
            ("patroni_failsafe_mode_enabled", "1"),
            ("patroni_failsafe_member", "1"),
            ("patroni_postgres_timeline", "3"),
            ("patroni_dcs_last_seen", "1740819600"),
            ("patroni_pending_restart", "1"),
            ("patroni_is_paused", "0"),
            ("patroni_postgres_state", "5"),
            ("patroni_failover_priority", "3"),
            ("warden_ha_cycle_duration_seconds", "1.5"),
            ("warden_dcs_round_trip_seconds", "0"),
            ("warden_ha_cycles_total", "7"),
            ("warden_leader_lock_remaining_seconds", "1.5"),
            ("warden_watchdog_active", "1"),
            // No cycle completed yet.
            ("warden_ha_last_cycle_timestamp_seconds", "0"),
            ("warden_synchronous_mode", "1"),
        ];
        let got = samples(&out);
        let want: Vec<(String, String)> = expect
            .iter()
            .map(|(n, v)| (format!("{n}{l}"), v.to_string()))
            .chain(std::iter::once((
                "warden_last_decision_info{scope=\"demo\",name=\"pg1\",reason=\"no action. I am (pg1), the leader with the lock\"}".to_string(),
                "1".to_string(),
            )))
            .collect();
        assert_eq!(got, want);
        // HELP/TYPE pairs are in the documented order and types.
        let types: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (n, t) = l.split_once(' ').unwrap();
                (n.to_string(), t.to_string())
            })
            .collect();
        let want_types: Vec<(String, String)> = PATRONI_METRICS
            .iter()
            .chain(WARDEN_METRICS.iter())
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(types, want_types);
        assert!(out.ends_with('\n') && !out.ends_with("\n\n"));
        // Lock expired: the remaining time is 0.
        let late = render_metrics(&primary(), 32_000);
        assert!(
            late.contains("warden_leader_lock_remaining_seconds{scope=\"demo\",name=\"pg1\"} 0\n")
        );
    }

    #[test]
    fn postgres_down_omits_streaming_metrics_and_reports_zeros() {
        let s = NodeStatus {
            name: "pg3".into(),
            scope: "demo".into(),
            state: "unknown".into(),
            role: "replica".into(),
            version: "4.1.4".into(),
            ..NodeStatus::default()
        };
        let out = render_metrics(&s, 0);
        assert!(!out.contains("patroni_postgres_streaming"));
        assert!(!out.contains("patroni_postgres_in_archive_recovery"));
        assert_eq!(out.matches("# TYPE patroni_").count(), 24);
        let l = "{scope=\"demo\",name=\"pg3\"}";
        for line in [
            format!("patroni_postgres_running{l} 0"),
            format!("patroni_postmaster_start_time{l} 0"),
            format!("patroni_postgres_server_version{l} 0"),
            format!("patroni_cluster_unlocked{l} 1"),
            format!("patroni_postgres_timeline{l} 0"),
            format!("patroni_dcs_last_seen{l} 0"),
            format!("patroni_postgres_state{l} -1"),
            format!("patroni_failover_priority{l} 1"),
            "warden_last_decision_info{scope=\"demo\",name=\"pg3\",reason=\"\"} 1".to_string(),
        ] {
            assert!(out.contains(&format!("{line}\n")), "missing {line}\n{out}");
        }
    }

    #[test]
    fn sync_quorum_paused_archive_and_nofailover() {
        let mut s = replica();
        let sync = Some(SyncState {
            leader: Some("patroni1".into()),
            sync_standby: vec!["patroni2".into()],
            quorum: 0,
            version: 1,
        });
        s.cluster = Some(Arc::new(Cluster {
            sync: sync.clone(),
            ..(*cluster(Some("patroni1"), json!({"synchronous_mode": true}))).clone()
        }));
        s.paused = true;
        s.replication_state = Some("in archive recovery".into());
        s.xlog = Some(Xlog::Replica {
            received_location: None,
            replayed_location: Some(100),
            replayed_timestamp: Some("2024-08-28 19:40:00.5-02:30".into()),
            paused: true,
        });
        s.state = "creating replica".into();
        s.tags.insert("nofailover".into(), json!(true));
        s.tags.insert("failover_priority".into(), json!(5));
        let out = render_metrics(&s, 0);
        let l = "{scope=\"batman\",name=\"patroni2\"}";
        for line in [
            format!("patroni_sync_standby{l} 1"),
            format!("patroni_quorum_standby{l} 0"),
            format!("patroni_is_paused{l} 1"),
            format!("patroni_postgres_streaming{l} 0"),
            format!("patroni_postgres_in_archive_recovery{l} 1"),
            format!("patroni_xlog_received_location{l} 100"),
            format!("patroni_xlog_replayed_location{l} 100"),
            // 19:40:00.5 at -02:30 = 22:10:00.5 UTC
            format!("patroni_xlog_replayed_timestamp{l} 1724883000.5"),
            format!("patroni_xlog_paused{l} 1"),
            format!("patroni_postgres_running{l} 0"),
            format!("patroni_postgres_state{l} 4"),
            format!("patroni_failover_priority{l} 0"),
        ] {
            assert!(out.contains(&format!("{line}\n")), "missing {line}\n{out}");
        }
        s.cluster = Some(Arc::new(Cluster {
            sync,
            ..(*cluster(Some("patroni1"), json!({"synchronous_mode": "quorum"}))).clone()
        }));
        let out = render_metrics(&s, 0);
        assert!(out.contains(&format!("patroni_sync_standby{l} 0\n")));
        assert!(out.contains(&format!("patroni_quorum_standby{l} 1\n")));
        // Stale DCS view: unlocked, no sync flags.
        let out = render_metrics(&s, 60_000);
        assert!(out.contains(&format!("patroni_cluster_unlocked{l} 1\n")));
        assert!(out.contains(&format!("patroni_quorum_standby{l} 0\n")));
    }

    /// `warden_synchronous_mode` follows the last known dynamic config (like
    /// `patroni_failsafe_mode_enabled`), is on for `quorum` and off in a standby cluster.
    #[test]
    fn synchronous_mode_flag() {
        let l = "{scope=\"batman\",name=\"patroni2\"}";
        let standby = json!({"synchronous_mode": true,
                             "standby_cluster": {"host": "10.0.0.1", "port": 5432}});
        for (config, want) in [
            (json!({}), 0),
            (json!({"synchronous_mode": false}), 0),
            (json!({"synchronous_mode": true}), 1),
            (json!({"synchronous_mode": "on"}), 1),
            (json!({"synchronous_mode": "quorum"}), 1),
            (standby, 0),
        ] {
            let mut s = replica();
            s.cluster = Some(cluster(Some("patroni1"), config.clone()));
            // Valid view, then a stale one: the last known config still counts.
            for now in [0, 60_000] {
                let out = render_metrics(&s, now);
                assert!(
                    out.contains(&format!("warden_synchronous_mode{l} {want}\n")),
                    "{config} at {now}: {out}"
                );
            }
        }
        let mut s = replica();
        s.cluster = None;
        assert!(render_metrics(&s, 0).contains(&format!("warden_synchronous_mode{l} 0\n")));
    }

    #[test]
    fn helpers() {
        assert_eq!(padded_semver("4.1.4"), "040104");
        assert_eq!(padded_semver("4.10.0"), "041000");
        assert_eq!(padded_semver("3.0.2"), "030002");
        assert_eq!(parse_timestamp_micros("1970-01-01 00:00:00+00:00"), Some(0));
        assert_eq!(
            parse_timestamp_micros("2024-08-28 19:39:26.352526+00:00"),
            Some(1_724_873_966_352_526)
        );
        assert_eq!(
            parse_timestamp_micros("2024-08-28T21:39:26.35+02"),
            Some(1_724_873_966_350_000)
        );
        assert_eq!(
            parse_timestamp_micros("2024-02-29 00:00:00Z"),
            Some(1_709_164_800_000_000)
        );
        assert_eq!(parse_timestamp_micros("yesterday"), None);
        assert_eq!(parse_timestamp_micros("2024-13-01 00:00:00+00"), None);
        assert_eq!(epoch_value(Some("")), "0");
        assert_eq!(
            epoch_value(Some("1970-01-01 00:00:01.000001+00")),
            "1.000001"
        );
        assert_eq!(python_float(1724873966.0), "1724873966.0");
        assert_eq!(state_index("running"), 5);
        assert_eq!(state_index("crashed"), 14);
        assert_eq!(state_index("unknown"), -1);
        assert_eq!(
            escape_label_value("a \"b\" c\\d\ne"),
            "a \\\"b\\\" c\\\\d\\ne"
        );
    }

    #[test]
    fn decision_reason_is_escaped() {
        let mut s = replica();
        s.last_decision = "failed: \"x\"\\y\nz".into();
        let out = render_metrics(&s, 0);
        assert!(out.ends_with(
            "warden_last_decision_info{scope=\"batman\",name=\"patroni2\",reason=\"failed: \\\"x\\\"\\\\y\\nz\"} 1\n"
        ));
    }

    /// Parses the output with the Python Prometheus client's reference text-format parser
    /// (`prometheus_client.parser.text_string_to_metric_families`) and checks every
    /// metric's name, type, labels and value. Skipped (with a message) when python3 or
    /// `prometheus_client` is missing (`pip install prometheus-client`); set
    /// `WARDEN_REQUIRE_PROM_PARSER=1` to make that a failure.
    #[test]
    fn output_parses_with_prometheus_client() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let have = Command::new("python3")
            .args(["-c", "import prometheus_client.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var_os("WARDEN_REQUIRE_PROM_PARSER").is_none(),
                "python3 with prometheus_client is required"
            );
            eprintln!("SKIPPED: python3 -c 'import prometheus_client' failed (pip install prometheus-client)");
            return;
        }
        const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type, "documentation": fam.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value,
                             "timestamp": s.timestamp} for s in fam.samples]})
print(json.dumps(out))
"#;
        let mut primary = primary();
        primary.last_decision = "odd \"reason\" with \\ and\nnewline".into();
        for (s, now, n) in [(replica(), 1_000, 34), (primary, 30_000, 34)] {
            let text = render_metrics(&s, now);
            let mut child = Command::new("python3")
                .args(["-c", SCRIPT])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let res = child.wait_with_output().unwrap();
            assert!(
                res.status.success(),
                "prometheus_client rejected the output: {}\n{text}",
                String::from_utf8_lossy(&res.stderr)
            );
            let fams: Vec<Value> = serde_json::from_slice(&res.stdout).unwrap();
            assert_eq!(fams.len(), n, "{fams:#?}");
            let want: Vec<(&str, &str)> = PATRONI_METRICS
                .iter()
                .chain(WARDEN_METRICS.iter())
                .copied()
                .collect();
            for (fam, (name, typ)) in fams.iter().zip(want) {
                // The client strips `_total` from counter family names.
                let fam_name = if typ == "counter" {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                assert_eq!(fam["name"], fam_name, "{fam}");
                assert_eq!(fam["type"], typ, "{fam}");
                assert!(fam["documentation"].as_str().is_some_and(|d| !d.is_empty()));
                let samples = fam["samples"].as_array().unwrap();
                assert_eq!(samples.len(), 1, "{fam}");
                let smp = &samples[0];
                // ... and names counter samples `<family>_total`.
                if typ == "counter" {
                    assert_eq!(smp["name"], format!("{fam_name}_total"));
                } else {
                    assert_eq!(smp["name"], name);
                }
                assert_eq!(smp["labels"]["scope"], json!(s.scope));
                assert_eq!(smp["labels"]["name"], json!(s.name));
                assert!(smp["timestamp"].is_null());
                assert!(smp["value"].is_number(), "{smp}");
                if name == "warden_last_decision_info" {
                    assert_eq!(smp["labels"]["reason"], json!(s.last_decision));
                } else {
                    assert_eq!(smp["labels"].as_object().unwrap().len(), 2);
                }
            }
            let value = |n: &str| {
                fams.iter()
                    .flat_map(|f| f["samples"].as_array().unwrap())
                    .find(|smp| smp["name"] == n)
                    .map(|smp| smp["value"].as_f64().unwrap())
                    .unwrap()
            };
            let version: f64 = padded_semver(&s.version).parse().unwrap();
            assert_eq!(value("patroni_version"), version);
            assert_eq!(
                value("patroni_postmaster_start_time"),
                parse_timestamp_micros(s.postmaster_start_time.as_deref().unwrap()).unwrap() as f64
                    / 1e6
            );
        }
    }
}
