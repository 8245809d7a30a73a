//! Dynamic (DCS `config` key) configuration: defaults and timing validation (ha-loop.md §1).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::util::{parse_duration_secs, value_as_bool, value_as_int};
use crate::Postgresql;

/// GUCs only the dynamic layer may set (config.md §6.2); local values are ignored.
pub const PROTECTED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "cluster_name",
    "wal_level",
    "hot_standby",
    "max_connections",
    "max_wal_senders",
    "wal_keep_segments",
    "wal_keep_size",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "track_commit_timestamp",
    "max_replication_slots",
    "max_worker_processes",
    "wal_log_hints",
];

/// GUCs that can never be set through `parameters` (derived from `postgresql.listen` / `scope`).
pub const NEVER_SETTABLE_PARAMETERS: &[&str] = &["listen_addresses", "port", "cluster_name"];

/// Typed view of the dynamic configuration, with defaults applied and timings validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicConfig {
    /// Leader lease TTL in seconds (default 30, minimum 20 or `warden.min_ttl`).
    pub ttl: u64,
    /// The `ttl` minimum this was built with ([`crate::WardenSection::min_ttl`]).
    pub min_ttl: u64,
    /// Seconds between HA cycles (default 10, minimum 1).
    pub loop_wait: u64,
    /// Deadline of DCS / PostgreSQL operations in seconds (default 10, minimum 3).
    pub retry_timeout: u64,
    /// Maximum replication lag in bytes for a failover candidate (default 1048576).
    pub maximum_lag_on_failover: u64,
    /// Maximum lag in bytes of a sync standby before it is replaced; ≤ 0 disables (default -1).
    pub maximum_lag_on_syncnode: i64,
    /// Number of timeline history lines kept in the DCS; 0 = all (default 0).
    pub max_timelines_history: u64,
    /// Seconds a failed primary may try to restart before failing over (alias
    /// `master_start_timeout`; default 300).
    pub primary_start_timeout: u64,
    /// Sync mode only: SIGKILL postmaster if stop takes longer (alias `master_stop_timeout`; 0 = off).
    pub primary_stop_timeout: u64,
    /// Seconds to wait before racing for an unlocked cluster (0 = off).
    pub primary_race_backoff: u64,
    /// Candidates must not be on an older timeline (default false).
    pub check_timeline: bool,
    /// Maintenance mode (default false).
    pub pause: bool,
    /// `"off"`, `"on"` or `"quorum"` (booleans and `on`/`off`-like strings normalised).
    pub synchronous_mode: String,
    /// Strict synchronous mode (default false).
    pub synchronous_mode_strict: bool,
    /// Number of synchronous standbys (default 1, minimum 1).
    pub synchronous_node_count: u64,
    /// `postgresql.use_slots` (default true).
    pub use_slots: bool,
    /// `postgresql.use_pg_rewind` (default false).
    pub use_pg_rewind: bool,
    /// `postgresql.parameters` (empty when absent).
    pub parameters: Map<String, Value>,
    /// `postgresql.pg_hba` when set to a list of strings.
    pub pg_hba: Option<Vec<String>>,
    /// Retention of replication slots of vanished members in seconds (default 1800; 0 disables).
    pub member_slots_ttl: u64,
    /// Failsafe mode (default false).
    pub failsafe_mode: bool,
    /// The dynamic configuration exactly as given (not adjusted).
    pub raw: Value,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: 30,
            min_ttl: crate::PATRONI_MIN_TTL,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1_048_576,
            maximum_lag_on_syncnode: -1,
            max_timelines_history: 0,
            primary_start_timeout: 300,
            primary_stop_timeout: 0,
            primary_race_backoff: 0,
            check_timeline: false,
            pause: false,
            synchronous_mode: "off".to_string(),
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            use_slots: true,
            use_pg_rewind: false,
            parameters: Map::new(),
            pg_hba: None,
            member_slots_ttl: 1800,
            failsafe_mode: false,
            raw: Value::Object(Map::new()),
        }
    }
}

/// Minimum values of the dynamic timing keys: (key, minimum).
pub const TIMING_MINIMUMS: &[(&str, i64)] = &[
    ("ttl", 20),
    ("loop_wait", 1),
    ("retry_timeout", 3),
    ("primary_start_timeout", 0),
    ("primary_stop_timeout", 0),
    ("maximum_lag_on_failover", 0),
    ("maximum_lag_on_syncnode", -1),
    ("member_slots_ttl", 0),
    ("synchronous_node_count", 1),
    ("max_timelines_history", 0),
    ("primary_race_backoff", 0),
];

fn first<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
    keys.iter().find_map(|k| {
        m.get_key_value(*k)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str(), v))
    })
}

impl DynamicConfig {
    /// Build from the DCS `config` JSON (or `bootstrap.dcs`). Missing keys get defaults;
    /// unparseable values get the default with a warning; ha-loop.md §1 rules 1–3 are applied
    /// (values below the minimum are raised, `loop_wait + 2*retry_timeout <= ttl` enforced),
    /// each adjustment producing a warning in Patroni's wording. Never fails.
    pub fn from_value(v: &Value) -> (DynamicConfig, Vec<String>) {
        Self::from_value_with_min_ttl(v, crate::PATRONI_MIN_TTL)
    }

    /// [`DynamicConfig::from_value`] with `ttl` raised to `min_ttl` instead of Patroni's
    /// 20 (`warden.min_ttl`, see [`crate::WardenSection`]).
    pub fn from_value_with_min_ttl(v: &Value, min_ttl: u64) -> (DynamicConfig, Vec<String>) {
        let mut d = DynamicConfig {
            raw: v.clone(),
            min_ttl,
            ..DynamicConfig::default()
        };
        let mut w = Vec::new();
        let empty = Map::new();
        let m = match v {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                w.push(format!(
                    "dynamic configuration is not a JSON object ({}), using defaults",
                    crate::yaml::describe(other)
                ));
                &empty
            }
        };

        let int = |keys: &[&str], default: i64, w: &mut Vec<String>| -> i64 {
            let Some((k, val)) = first(m, keys) else {
                return default;
            };
            let min = TIMING_MINIMUMS
                .iter()
                .find(|(n, _)| *n == keys[0])
                .map(|(_, m)| *m)
                .unwrap_or(i64::MIN);
            match value_as_int(val).map(|i| i.clamp(-(1 << 40), 1 << 40)) {
                Some(i)
                    if i < min
                        && keys[0] != "ttl"
                        && keys[0] != "loop_wait"
                        && keys[0] != "retry_timeout" =>
                {
                    w.push(format!("{k}={i} can't be smaller than {min}, adjusting..."));
                    min
                }
                Some(i) => i,
                None => {
                    w.push(format!(
                        "{k}: expected an integer, got {}, using default {default}",
                        crate::yaml::describe(val)
                    ));
                    default
                }
            }
        };
        let mut ttl = int(&["ttl"], 30, &mut w);
        let mut loop_wait = int(&["loop_wait"], 10, &mut w);
        let mut retry_timeout = int(&["retry_timeout"], 10, &mut w);
        d.maximum_lag_on_failover =
            int(&["maximum_lag_on_failover"], 1_048_576, &mut w).max(0) as u64;
        d.maximum_lag_on_syncnode = int(&["maximum_lag_on_syncnode"], -1, &mut w);
        d.max_timelines_history = int(&["max_timelines_history"], 0, &mut w).max(0) as u64;
        d.primary_start_timeout = int(
            &["primary_start_timeout", "master_start_timeout"],
            300,
            &mut w,
        )
        .max(0) as u64;
        d.primary_stop_timeout =
            int(&["primary_stop_timeout", "master_stop_timeout"], 0, &mut w).max(0) as u64;
        d.primary_race_backoff = int(&["primary_race_backoff"], 0, &mut w).max(0) as u64;
        d.synchronous_node_count = int(&["synchronous_node_count"], 1, &mut w).max(1) as u64;

        // rule 1
        for (name, val, min) in [
            ("loop_wait", &mut loop_wait, 1),
            (
                "retry_timeout",
                &mut retry_timeout,
                crate::retry_timeout_floor(min_ttl) as i64,
            ),
            ("ttl", &mut ttl, min_ttl as i64),
        ] {
            if *val < min {
                w.push(format!(
                    "{name}={val} can't be smaller than {min}, adjusting..."
                ));
                *val = min;
            }
        }
        // rules 2 and 3
        if 1 + 2 * retry_timeout > ttl {
            let new_retry = (ttl - 1) / 2;
            w.push(format!(
                "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={ttl} and retry_timeout={retry_timeout}. Adjusting loop_wait from {loop_wait} to 1 and retry_timeout from {retry_timeout} to {new_retry}"
            ));
            loop_wait = 1;
            retry_timeout = new_retry;
        } else if loop_wait + 2 * retry_timeout > ttl {
            let new_loop = ttl - 2 * retry_timeout;
            w.push(format!(
                "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={ttl}, loop_wait={loop_wait} and retry_timeout={retry_timeout}. Adjusting loop_wait from {loop_wait} to {new_loop}"
            ));
            loop_wait = new_loop;
        }
        // Warden's rule for the short leases only it allows (with Patroni's retry_timeout
        // minimum the rules above imply it): the next renewal must land before the fence
        // guard's deadline with time to spare. Lower loop_wait first, then retry_timeout.
        let (t, lw, rt) = (ttl as u64, loop_wait as u64, retry_timeout as u64);
        if !warden_core::ha::timing_fits_fence(t, lw, rt) {
            let budget = (t * 1000)
                .saturating_sub(warden_core::ha::fence_margin_ms(t))
                .saturating_sub(warden_core::ha::RENEWAL_SLACK_MS)
                / 1000;
            let new_loop = budget.saturating_sub(rt).max(1);
            let new_retry = if new_loop + rt > budget {
                budget.saturating_sub(1).max(1)
            } else {
                rt
            };
            w.push(format!(
                "Violated Warden's rule \"loop_wait + retry_timeout + 1 <= ttl - fence margin ({} ms)\", where ttl={ttl}, loop_wait={loop_wait} and retry_timeout={retry_timeout}. Adjusting loop_wait to {new_loop} and retry_timeout to {new_retry}",
                warden_core::ha::fence_margin_ms(t)
            ));
            loop_wait = new_loop as i64;
            retry_timeout = new_retry as i64;
        }
        d.ttl = ttl as u64;
        d.loop_wait = loop_wait as u64;
        d.retry_timeout = retry_timeout as u64;

        let boolean =
            |key: &str, default: bool, src: &Map<String, Value>, w: &mut Vec<String>| match src
                .get(key)
                .filter(|v| !v.is_null())
            {
                None => default,
                Some(val) => value_as_bool(val).unwrap_or_else(|| {
                    w.push(format!(
                        "{key}: expected a boolean, got {}, using default {default}",
                        crate::yaml::describe(val)
                    ));
                    default
                }),
            };
        d.check_timeline = boolean("check_timeline", false, m, &mut w);
        d.pause = boolean("pause", false, m, &mut w);
        d.synchronous_mode_strict = boolean("synchronous_mode_strict", false, m, &mut w);
        d.failsafe_mode = boolean("failsafe_mode", false, m, &mut w);
        d.synchronous_mode = match m.get("synchronous_mode").filter(|v| !v.is_null()) {
            None => "off".to_string(),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("quorum") => "quorum".to_string(),
            Some(val) => match value_as_bool(val) {
                Some(true) => "on".to_string(),
                Some(false) => "off".to_string(),
                None => {
                    w.push(format!(
                        "synchronous_mode: unrecognised value {}, using off",
                        crate::yaml::describe(val)
                    ));
                    "off".to_string()
                }
            },
        };
        standby_cluster_warnings(m.get("standby_cluster"), &mut w);
        d.member_slots_ttl = match m.get("member_slots_ttl").filter(|v| !v.is_null()) {
            None => 1800,
            Some(val) => match parse_duration_secs(val) {
                Some(i) if i >= 0 => i as u64,
                _ => {
                    w.push(format!(
                        "member_slots_ttl: invalid value {}, using default 1800",
                        crate::yaml::describe(val)
                    ));
                    1800
                }
            },
        };

        match m.get("postgresql") {
            Some(Value::Object(pg)) => {
                d.use_slots = boolean("use_slots", true, pg, &mut w);
                d.use_pg_rewind = boolean("use_pg_rewind", false, pg, &mut w);
                match pg.get("parameters") {
                    Some(Value::Object(p)) => d.parameters = p.clone(),
                    None | Some(Value::Null) => {}
                    Some(other) => w.push(format!(
                        "postgresql.parameters: expected a mapping, got {}, ignored",
                        crate::yaml::describe(other)
                    )),
                }
                match pg.get("pg_hba") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) if a.iter().all(|x| x.is_string()) => {
                        d.pg_hba = Some(
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect(),
                        )
                    }
                    Some(other) => w.push(format!(
                        "postgresql.pg_hba: expected a list of strings, got {}, ignored",
                        crate::yaml::describe(other)
                    )),
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => w.push(format!(
                "postgresql: expected a mapping, got {}, ignored",
                crate::yaml::describe(other)
            )),
        }
        (d, w)
    }
}

/// Values of `standby_cluster` that would be ignored (Patroni's schema: strings, an
/// integer port up to 65535, a list of method names), one warning naming each key.
fn standby_cluster_warnings(v: Option<&Value>, w: &mut Vec<String>) {
    let sc = match v {
        None | Some(Value::Null) => return,
        Some(Value::Object(sc)) => sc,
        Some(other) => {
            w.push(format!(
                "standby_cluster: expected a mapping, got {}, ignored",
                crate::yaml::describe(other)
            ));
            return;
        }
    };
    for (k, val) in sc {
        let ok = match k.as_str() {
            "host" | "primary_slot_name" | "restore_command" | "archive_cleanup_command" => {
                matches!(val, Value::String(_) | Value::Null)
            }
            "recovery_min_apply_delay" => {
                matches!(val, Value::String(_) | Value::Number(_) | Value::Null)
            }
            "port" => match val {
                Value::Null => true,
                Value::String(s) => s.trim().parse::<u16>().is_ok() || s.is_empty(),
                _ => value_as_int(val).is_some_and(|p| (0..=65535).contains(&p)),
            },
            "create_replica_methods" => match val {
                Value::Array(a) => a.iter().all(Value::is_string),
                Value::String(_) | Value::Null => true,
                _ => false,
            },
            _ => true,
        };
        if !ok {
            w.push(format!(
                "standby_cluster.{k}: unexpected value {}, ignored",
                crate::yaml::describe(val)
            ));
        }
    }
}

/// Render a GUC value the way it is written to postgresql.conf / the command line:
/// booleans `on`/`off`, numbers in decimal, strings as is; `null` → `None` (unset);
/// lists/mappings → their compact JSON text.
pub fn render_guc_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(true) => Some("on".to_string()),
        Value::Bool(false) => Some("off".to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Effective `postgresql.parameters` (config.md §1.4, §6.2): the dynamic parameters,
/// overridden key by key by the local ones — except protected GUCs ([`PROTECTED_PARAMETERS`]),
/// which come from the dynamic layer only. `listen_addresses`, `port` and `cluster_name` are
/// dropped from both layers (they derive from `postgresql.listen` and `scope`). A `null` value
/// removes the parameter. Defaults for protected GUCs, role-specific `parameters_<role>`,
/// per-version validation and recovery GUC handling are NOT applied here (the PostgreSQL
/// layer does that).
pub fn effective_postgresql_parameters(
    dynamic: &DynamicConfig,
    local: &Postgresql,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in &dynamic.parameters {
        if NEVER_SETTABLE_PARAMETERS.contains(&k.as_str()) {
            continue;
        }
        match render_guc_value(v) {
            Some(s) => {
                out.insert(k.clone(), s);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (k, v) in &local.parameters {
        if PROTECTED_PARAMETERS.contains(&k.as_str()) {
            continue;
        }
        match render_guc_value(v) {
            Some(s) => {
                out.insert(k.clone(), s);
            }
            None => {
                out.remove(k);
            }
        }
    }
    out
}
