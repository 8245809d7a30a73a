//! `GET /cluster` body (rest-api.md §6), the same thing python patronictl computes from
//! the DCS (`patroni.utils.cluster_as_json`).

use crate::health::GlobalFlags;
use serde_json::{Map, Value};
use warden_core::cluster::Cluster;
use warden_core::lsn::format_lsn;

/// Builds the cluster JSON; `scope` is added like Patroni's API does.
pub fn cluster_json(c: &Cluster, scope: &str) -> Value {
    let flags = GlobalFlags::from_cluster(Some(c));
    let leader = c.leader_name();
    let cluster_lsn = c.status.optime.unwrap_or(0);
    let sync_role = if flags.quorum_commit_mode {
        "quorum_standby"
    } else {
        "sync_standby"
    };

    let mut members: Vec<Value> = Vec::with_capacity(c.members.len());
    for m in &c.members {
        let d = &m.data;
        let is_leader = leader == Some(m.name.as_str());
        let role = if is_leader {
            if flags.standby_cluster {
                "standby_leader"
            } else {
                "leader"
            }
        } else if flags.synchronous_mode
            && c.sync.as_ref().is_some_and(|s| {
                s.sync_standby
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&m.name))
            })
        {
            sync_role
        } else {
            "replica"
        };
        let state = if role != "leader" {
            d.replication_state.as_deref().filter(|s| !s.is_empty())
        } else {
            None
        }
        .or(d.state.as_deref())
        .unwrap_or("");

        let mut o = Map::new();
        o.insert("name".into(), Value::String(m.name.clone()));
        o.insert("role".into(), Value::String(role.into()));
        o.insert("state".into(), Value::String(state.into()));
        o.insert(
            "api_url".into(),
            d.api_url.clone().map(Value::String).unwrap_or(Value::Null),
        );
        if let Some((host, port)) = d.conn_host_port() {
            if !host.is_empty() {
                o.insert("host".into(), Value::String(host));
                o.insert("port".into(), Value::from(port));
            }
        }
        if let Some(t) = d.timeline {
            o.insert("timeline".into(), Value::from(t));
        }
        if d.pending_restart {
            o.insert("pending_restart".into(), Value::Bool(true));
        }
        for k in ["pending_restart_reason", "scheduled_restart"] {
            if let Some(v) = d.extra.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
        if !d.tags.is_empty() {
            o.insert("tags".into(), Value::Object(d.tags.clone()));
        }
        if !is_leader {
            for (prefix, lsn) in [
                ("receive_", d.receive_lsn),
                ("replay_", d.replay_lsn),
                ("", d.xlog_location),
            ] {
                let (lag_key, lsn_key) = (format!("{prefix}lag"), format!("{prefix}lsn"));
                match lsn.filter(|l| *l != 0) {
                    None => {
                        o.insert(lag_key, Value::String("unknown".into()));
                        o.insert(lsn_key, Value::String("unknown".into()));
                    }
                    Some(l) => {
                        o.insert(lag_key, Value::from(cluster_lsn.saturating_sub(l)));
                        o.insert(lsn_key, Value::String(format_lsn(l)));
                    }
                }
            }
        }
        members.push(Value::Object(o));
    }
    members.sort_by(|a, b| {
        let n = |v: &Value| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        n(a).cmp(&n(b))
    });

    let mut ret = Map::new();
    ret.insert("members".into(), Value::Array(members));
    ret.insert("scope".into(), Value::String(scope.into()));
    if flags.paused {
        ret.insert("pause".into(), Value::Bool(true));
    }
    if let Some(f) = &c.failover {
        if let Some(at) = f.scheduled_at.as_deref().filter(|s| !s.is_empty()) {
            let mut s = Map::new();
            s.insert("at".into(), Value::String(at.into()));
            if let Some(l) = &f.leader {
                s.insert("from".into(), Value::String(l.clone()));
            }
            if let Some(m) = &f.member {
                s.insert("to".into(), Value::String(m.clone()));
            }
            ret.insert("scheduled_switchover".into(), Value::Object(s));
        }
    }
    Value::Object(ret)
}
