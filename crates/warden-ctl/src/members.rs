//! Member selection (patronictl's `get_all_members`, `get_any_member`,
//! `get_all_members_leader_first`) and the JSON bodies sent to the REST API.

use serde_json::{Map, Value};
use warden_core::cluster::{Cluster, Member, MemberData};

use crate::pyfmt::json_dumps;

/// `-r/--role` choices (`CtlPostgresqlRole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The lock holder.
    Leader,
    /// The lock holder unless it is a standby leader.
    Primary,
    /// The lock holder unless it is a primary.
    #[value(name = "standby-leader")]
    StandbyLeader,
    /// Everybody but the lock holder.
    Replica,
    /// Same as `replica`.
    Standby,
    /// Everybody.
    Any,
}

impl Role {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Primary => "primary",
            Role::StandbyLeader => "standby-leader",
            Role::Replica => "replica",
            Role::Standby => "standby",
            Role::Any => "any",
        }
    }
}

/// The leader's member entry; a member with empty data when the lock holder has no
/// member key (as Patroni's `Leader.member`).
pub fn leader_member(c: &Cluster) -> Option<Member> {
    let l = c.leader.as_ref()?;
    Some(c.member(&l.name).cloned().unwrap_or_else(|| Member {
        name: l.name.clone(),
        version: 0,
        session: 0,
        data: MemberData::default(),
    }))
}

/// `get_all_members(cluster, role)`.
pub fn all_members(c: &Cluster, role: Role) -> Vec<Member> {
    match role {
        Role::Leader | Role::Primary | Role::StandbyLeader => {
            let Some(l) = leader_member(c) else {
                return Vec::new();
            };
            let lrole = l.data.role.as_deref();
            let ok = match role {
                Role::Leader => true,
                Role::StandbyLeader => !matches!(lrole, Some("primary") | Some("master")),
                _ => lrole != Some("standby_leader"),
            };
            if ok {
                vec![l]
            } else {
                Vec::new()
            }
        }
        Role::Any => c.members.clone(),
        Role::Replica | Role::Standby => {
            let leader = c.leader_name();
            c.members
                .iter()
                .filter(|m| Some(m.name.as_str()) != leader)
                .cloned()
                .collect()
        }
    }
}

/// `get_any_member`: the first member with `role` (default `leader`) or named `member`.
pub fn any_member(
    c: &Cluster,
    role: Option<Role>,
    member: Option<&str>,
) -> Result<Option<Member>, String> {
    let role = match (member, role) {
        (Some(_), Some(_)) => {
            return Err("--role and --member are mutually exclusive options".into())
        }
        (Some(_), None) => Role::Any,
        (None, r) => r.unwrap_or(Role::Leader),
    };
    Ok(all_members(c, role)
        .into_iter()
        .find(|m| member.is_none_or(|n| m.name == n)))
}

/// `get_all_members_leader_first`: members with an `api_url`, the leader first.
pub fn leader_first(c: &Cluster) -> Vec<Member> {
    let mut out = Vec::new();
    let leader = leader_member(c).filter(|l| l.data.api_url.is_some());
    let leader_name = leader.as_ref().map(|l| l.name.clone());
    if let Some(l) = leader {
        out.push(l);
    }
    out.extend(
        c.members
            .iter()
            .filter(|m| m.data.api_url.is_some() && Some(&m.name) != leader_name.as_ref())
            .cloned(),
    );
    out
}

/// Switchover/failover candidates: members other than the leader without `nofailover`,
/// sorted by name.
pub fn failover_candidates(c: &Cluster) -> Vec<String> {
    let leader = c.leader_name();
    let mut names: Vec<String> = c
        .members
        .iter()
        .filter(|m| Some(m.name.as_str()) != leader && !m.data.nofailover())
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

/// Python `repr()` of a list of strings (`['a', 'b']`).
pub fn py_list_repr(items: &[String]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|s| {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect();
    format!("[{}]", inner.join(", "))
}

/// Host and port patronictl uses to connect (`conn_kwargs`, else `conn_url`).
pub fn conn_host_port(m: &Member) -> Option<(String, u16)> {
    if let Some(Value::Object(kw)) = m.data.extra.get("conn_kwargs") {
        let host = kw.get("host").and_then(Value::as_str)?;
        let port = match kw.get("port") {
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok())?,
            Some(Value::String(s)) => s.parse().ok()?,
            _ => 5432,
        };
        return Some((host.to_string(), port));
    }
    m.data.conn_host_port()
}

/// Database name of the member's `conn_url` (path without `/`).
pub fn conn_dbname(m: &Member) -> Option<String> {
    let url = m.data.conn_url.as_deref()?;
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let db = path.split(['?', '#']).next().unwrap_or("");
    Some(db.to_string()).filter(|d| !d.is_empty())
}

/// Body of POST `/switchover` or `/failover` as patronictl builds it:
/// `{"candidate": c|null, "leader": L, "scheduled_at": iso}` (leader only for a
/// switchover, scheduled_at only when given), serialized by `json.dumps`.
pub fn failover_body(
    switchover: bool,
    candidate: Option<&str>,
    leader: Option<&str>,
    scheduled_at: Option<&str>,
) -> String {
    let mut m = Map::new();
    m.insert(
        "candidate".into(),
        candidate
            .map(|c| Value::String(c.into()))
            .unwrap_or(Value::Null),
    );
    if switchover {
        m.insert(
            "leader".into(),
            leader
                .map(|c| Value::String(c.into()))
                .unwrap_or(Value::Null),
        );
    }
    if let Some(s) = scheduled_at {
        m.insert("scheduled_at".into(), Value::String(s.into()));
    }
    json_dumps(&Value::Object(m))
}

/// `dcs.manual_failover(leader, candidate, scheduled_at)`: the compact value written to
/// the `failover` key (empty parts omitted; `{}` clears the request).
pub fn manual_failover_value(
    leader: Option<&str>,
    candidate: Option<&str>,
    scheduled_at: Option<&str>,
) -> String {
    let mut m = Map::new();
    if let Some(l) = leader.filter(|s| !s.is_empty()) {
        m.insert("leader".into(), Value::String(l.into()));
    }
    if let Some(c) = candidate.filter(|s| !s.is_empty()) {
        m.insert("member".into(), Value::String(c.into()));
    }
    if let Some(s) = scheduled_at {
        m.insert("scheduled_at".into(), Value::String(s.into()));
    }
    Value::Object(m).to_string()
}

/// Body of POST `/restart`.
pub fn restart_body(
    pending: bool,
    postgres_version: Option<&str>,
    schedule: Option<&str>,
    timeout: Option<&str>,
) -> String {
    let mut m = Map::new();
    if pending {
        m.insert("restart_pending".into(), Value::Bool(true));
    }
    if let Some(v) = postgres_version {
        m.insert("postgres_version".into(), Value::String(v.into()));
    }
    if let Some(s) = schedule {
        m.insert("schedule".into(), Value::String(s.into()));
    }
    if let Some(t) = timeout {
        m.insert("timeout".into(), Value::String(t.into()));
    }
    json_dumps(&Value::Object(m))
}

/// Body of POST `/reinitialize`.
pub fn reinit_body(force: bool, from_leader: bool) -> String {
    format!("{{\"force\": {force}, \"from_leader\": {from_leader}}}")
}

/// Body of PATCH `/config` for `pause` / `resume`.
pub fn pause_body(paused: bool) -> String {
    if paused {
        "{\"pause\": true}".into()
    } else {
        "{\"pause\": null}".into()
    }
}

/// `postgres_version_to_int` validation of `--pg-version`.
pub fn check_pg_version(v: &str) -> Result<(), String> {
    let comps: Result<Vec<i64>, _> = v.split('.').map(|c| c.trim().parse::<i64>()).collect();
    let comps = comps.map_err(|_| format!("Invalid PostgreSQL version: {v}"))?;
    if comps.len() < 2 || (comps.len() == 2 && comps[0] < 10) || comps.len() > 3 {
        return Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {v}"
        ));
    }
    Ok(())
}

/// `format_pg_version`: `90624` → `9.6.24`, `140008` → `14.8`.
pub fn format_pg_version(v: i64) -> String {
    if v < 100000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10000, v % 100)
    }
}

/// `history` rows: `[TL, LSN, Reason, Timestamp, New Leader]`, missing trailing
/// elements as `""`.
pub fn history_rows(c: &Cluster) -> Vec<Vec<Value>> {
    c.history
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            vec![
                Value::from(h.timeline),
                Value::from(h.lsn),
                Value::String(h.reason.clone()),
                Value::String(h.timestamp.clone().unwrap_or_default()),
                Value::String(h.new_leader.clone().unwrap_or_default()),
            ]
        })
        .collect()
}

/// `global_config.is_standby_cluster`.
pub fn is_standby_cluster(c: &Cluster) -> bool {
    match c.config_value().get("standby_cluster") {
        Some(Value::Object(s)) => ["host", "port", "restore_command"]
            .iter()
            .any(|k| s.get(*k).is_some_and(crate::pyfmt::py_truthy)),
        _ => false,
    }
}

/// `global_config.is_synchronous_mode`.
pub fn is_synchronous_mode(c: &Cluster) -> bool {
    let cfg = c.config_value();
    let v = cfg.get("synchronous_mode");
    let on = v.is_some_and(|v| {
        crate::pyfmt::py_parse_bool(v) || crate::pyfmt::py_str(v).eq_ignore_ascii_case("quorum")
    });
    on && !is_standby_cluster(c)
}

/// `loop_wait` of the dynamic configuration (default 10).
pub fn loop_wait(c: &Cluster) -> u64 {
    c.config_value()
        .get("loop_wait")
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .filter(|v| *v > 0)
        .unwrap_or(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::cluster::KeyValue;

    fn cluster(leader: Option<&str>, members: &[(&str, &str)]) -> Cluster {
        let mut kvs = Vec::new();
        if let Some(l) = leader {
            kvs.push(KeyValue {
                key: "leader".into(),
                value: l.into(),
                mod_revision: 1,
                lease: 0,
            });
        }
        for (n, d) in members {
            kvs.push(KeyValue {
                key: format!("members/{n}"),
                value: d.to_string(),
                mod_revision: 2,
                lease: 0,
            });
        }
        Cluster::from_kvs(&kvs)
    }

    #[test]
    fn roles() {
        let c = cluster(
            Some("a"),
            &[
                (
                    "a",
                    r#"{"role":"primary","api_url":"http://h:1/patroni","conn_url":"postgres://h1:5433/postgres"}"#,
                ),
                (
                    "b",
                    r#"{"role":"replica","api_url":"http://h:2/patroni","conn_url":"postgres://h2/db"}"#,
                ),
                ("c", r#"{"role":"replica","tags":{"nofailover":true}}"#),
            ],
        );
        let names = |v: Vec<Member>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(all_members(&c, Role::Leader)), ["a"]);
        assert_eq!(names(all_members(&c, Role::Primary)), ["a"]);
        assert!(all_members(&c, Role::StandbyLeader).is_empty());
        assert_eq!(names(all_members(&c, Role::Replica)), ["b", "c"]);
        assert_eq!(names(all_members(&c, Role::Any)), ["a", "b", "c"]);
        assert_eq!(names(leader_first(&c)), ["a", "b"]);
        assert_eq!(failover_candidates(&c), ["b"]);
        let m = any_member(&c, None, None).unwrap().unwrap();
        assert_eq!(conn_host_port(&m), Some(("h1".into(), 5433)));
        let m = any_member(&c, None, Some("b")).unwrap().unwrap();
        assert_eq!(conn_host_port(&m), Some(("h2".into(), 5432)));
        assert_eq!(conn_dbname(&m).as_deref(), Some("db"));
        assert_eq!(
            any_member(&c, Some(Role::Any), Some("b")).unwrap_err(),
            "--role and --member are mutually exclusive options"
        );
        assert!(any_member(&c, None, Some("zz")).unwrap().is_none());
        // leader without a member key
        let c = cluster(Some("x"), &[("b", "{}")]);
        assert_eq!(names(all_members(&c, Role::Leader)), ["x"]);
        assert_eq!(names(leader_first(&c)), Vec::<String>::new());
    }

    #[test]
    fn bodies() {
        assert_eq!(
            failover_body(true, Some("b"), Some("a"), None),
            r#"{"candidate": "b", "leader": "a"}"#
        );
        assert_eq!(
            failover_body(true, None, Some("a"), Some("2030-01-01T00:00:00+00:00")),
            r#"{"candidate": null, "leader": "a", "scheduled_at": "2030-01-01T00:00:00+00:00"}"#
        );
        assert_eq!(
            failover_body(false, Some("b"), None, None),
            r#"{"candidate": "b"}"#
        );
        assert_eq!(
            manual_failover_value(Some("a"), Some("b"), None),
            r#"{"leader":"a","member":"b"}"#
        );
        assert_eq!(manual_failover_value(Some(""), Some(""), None), "{}");
        assert_eq!(
            restart_body(
                true,
                Some("16.1"),
                Some("2030-01-01T00:00:00+00:00"),
                Some("30")
            ),
            r#"{"restart_pending": true, "postgres_version": "16.1", "schedule": "2030-01-01T00:00:00+00:00", "timeout": "30"}"#
        );
        assert_eq!(restart_body(false, None, None, None), "{}");
        assert_eq!(
            reinit_body(true, false),
            r#"{"force": true, "from_leader": false}"#
        );
        assert_eq!(pause_body(true), r#"{"pause": true}"#);
        assert_eq!(pause_body(false), r#"{"pause": null}"#);
    }

    #[test]
    fn misc() {
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(140008), "14.8");
        assert!(check_pg_version("9.6.24").is_ok());
        assert_eq!(
            check_pg_version("9.6").unwrap_err(),
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"
        );
        assert_eq!(
            check_pg_version("a.b").unwrap_err(),
            "Invalid PostgreSQL version: a.b"
        );
        assert_eq!(py_list_repr(&["a".into(), "b".into()]), "['a', 'b']");
    }
}
