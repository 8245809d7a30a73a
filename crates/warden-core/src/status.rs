//! What the agent publishes after every HA cycle for its REST API to serve.
//!
//! Health checks are answered from this snapshot alone: they never wait on PostgreSQL
//! or the DCS. Times are monotonic milliseconds (`*_ms`) from the agent's own clock so
//! the struct stays plain data.

use crate::cluster::Cluster;
use serde_json::{Map, Value};
use std::sync::Arc;

/// WAL positions as `GET /patroni` reports them in `xlog`.
#[derive(Clone, Debug, PartialEq)]
pub enum Xlog {
    /// Primary: flush LSN.
    Primary {
        /// `xlog.location`
        location: u64,
    },
    /// Replica positions.
    Replica {
        /// `xlog.received_location`
        received_location: Option<u64>,
        /// `xlog.replayed_location`
        replayed_location: Option<u64>,
        /// `xlog.replayed_timestamp`
        replayed_timestamp: Option<String>,
        /// `xlog.paused`
        paused: bool,
    },
}

/// The node's state as of its last HA cycle.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub scope: String,
    /// PostgreSQL state (`running`, `stopped`, `starting`, `creating replica`, …).
    pub state: String,
    /// Role: from `pg_is_in_recovery()` when PostgreSQL answered, else the agent's role.
    pub role: String,
    /// Did PostgreSQL answer the last status query?
    pub pg_answered: bool,
    /// `YYYY-MM-DD HH:MM:SS.ffffff+HH:MM`
    pub postmaster_start_time: Option<String>,
    /// e.g. 150004
    pub server_version: Option<u32>,
    /// WAL positions.
    pub xlog: Option<Xlog>,
    /// Current timeline.
    pub timeline: Option<u32>,
    /// `streaming` / `in archive recovery`.
    pub replication_state: Option<String>,
    /// `pg_stat_replication` rows as JSON objects.
    pub replication: Vec<Value>,
    /// Cluster is paused.
    pub paused: bool,
    /// The agent believes it holds the leader lock until this monotonic time.
    pub leader_until_ms: Option<u64>,
    /// Epoch seconds of the last successful DCS read (0 = never).
    pub dcs_last_seen: u64,
    /// The DCS view is valid until this monotonic time (`ttl` after the last read).
    pub cluster_valid_until_ms: Option<u64>,
    /// Last cluster view read from the DCS.
    pub cluster: Option<Arc<Cluster>>,
    /// Effective tags as published in the member key.
    pub tags: Map<String, Value>,
    /// Database system identifier.
    pub sysid: Option<String>,
    /// Restart needed to apply config.
    pub pending_restart: bool,
    /// `maximum_lag_on_failover` from the dynamic config (bytes).
    pub maximum_lag_on_failover: u64,
    /// `ttl` (seconds).
    pub ttl: u64,
    /// `loop_wait` (seconds).
    pub loop_wait: u64,
    /// The next HA cycle is due at this monotonic time (for `/liveness`).
    pub next_cycle_due_ms: u64,
    /// The last decision's one-line reason.
    pub last_decision: String,
    /// Agent version (Patroni-compatible).
    pub version: String,
    /// `{"<guc>": {"old_value": …, "new_value": …}}` when a restart is pending.
    pub pending_restart_reason: Map<String, Value>,
    /// A scheduled restart (`{"schedule": …, filters…}`), as `GET /patroni` shows it.
    pub scheduled_restart: Option<Value>,
    /// Failsafe mode is keeping this node's role without the DCS.
    pub failsafe_active: bool,
    /// `watchdog.mode: required` and the watchdog is not usable (`watchdog_failed`).
    pub watchdog_failed: bool,
    /// The watchdog device is open and kicked by this node.
    pub watchdog_active: bool,
    /// WAL receiver's `latest_end_lsn` (replica), for `leader_optime`.
    pub latest_end_lsn: Option<u64>,
    /// Duration of the last HA cycle (ms), for `warden_` metrics.
    pub last_cycle_ms: u64,
    /// Round trip of the last DCS read (ms), for `warden_` metrics.
    pub dcs_round_trip_ms: u64,
    /// HA cycles run since the agent started.
    pub cycles: u64,
    /// Wall-clock time (epoch milliseconds) at which the last HA cycle completed, 0 before
    /// the first one: a stuck loop keeps serving its last snapshot, so its age is what
    /// tells monitoring that the loop stalled.
    pub last_cycle_epoch_ms: u64,
}

/// The time-dependent facts in a `GET /patroni` body ([`NodeStatus::time_facts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeFacts {
    /// The node is a synchronous standby in the (still valid) cluster view.
    pub sync_standby: bool,
    /// The node is a quorum standby in the (still valid) cluster view.
    pub quorum_standby: bool,
    /// No valid cluster view, or nobody holds the leader lock.
    pub cluster_unlocked: bool,
}

impl NodeStatus {
    /// `loop_wait` in seconds (10 when unknown).
    pub fn loop_wait_secs(&self) -> u64 {
        if self.loop_wait == 0 {
            10
        } else {
            self.loop_wait
        }
    }

    /// `is_leader`: the lock was updated within `ttl`.
    pub fn is_leader(&self, now_ms: u64) -> bool {
        self.leader_until_ms.is_some_and(|t| now_ms < t)
    }

    /// The DCS view if it is still valid at `now_ms`.
    pub fn valid_cluster(&self, now_ms: u64) -> Option<&Cluster> {
        match (self.cluster_valid_until_ms, &self.cluster) {
            (Some(t), Some(c)) if now_ms < t => Some(c),
            _ => None,
        }
    }

    /// (`sync_standby`, `quorum_standby`): a replica listed in the `sync` key while
    /// synchronous (or quorum) mode is on in a non-standby cluster.
    pub fn sync_flags(&self, now_ms: u64) -> (bool, bool) {
        let Some(c) = self.valid_cluster(now_ms) else {
            return (false, false);
        };
        let flags = crate::cluster::GlobalFlags::from_cluster(Some(c));
        if self.role != "replica" || !flags.synchronous_mode {
            return (false, false);
        }
        let listed = c.sync.as_ref().is_some_and(|st| {
            st.sync_standby
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&self.name))
        });
        match (listed, flags.quorum_commit_mode) {
            (false, _) => (false, false),
            (true, true) => (false, true),
            (true, false) => (true, false),
        }
    }

    /// WAL position replayed (replica) or written (primary).
    pub fn replayed_location(&self) -> Option<u64> {
        match &self.xlog {
            Some(Xlog::Primary { location }) => Some(*location),
            Some(Xlog::Replica {
                replayed_location, ..
            }) => *replayed_location,
            None => None,
        }
    }

    /// `GET /patroni` body (field order as Patroni emits it).
    pub fn to_json(&self, now_ms: u64) -> Value {
        self.to_json_with(self.time_facts(now_ms))
    }

    /// What of [`NodeStatus::to_json`]'s answer depends on the time of asking (the
    /// cluster view expires): with the snapshot, a key for a cached body.
    pub fn time_facts(&self, now_ms: u64) -> TimeFacts {
        let (sync_standby, quorum_standby) = self.sync_flags(now_ms);
        TimeFacts {
            sync_standby,
            quorum_standby,
            cluster_unlocked: self.valid_cluster(now_ms).is_none_or(|c| c.is_unlocked()),
        }
    }

    /// `GET /patroni` body for the given [`TimeFacts`].
    pub fn to_json_with(&self, t: TimeFacts) -> Value {
        let mut m = Map::new();
        m.insert("state".into(), Value::String(self.state.clone()));
        if let Some(t) = &self.postmaster_start_time {
            m.insert("postmaster_start_time".into(), Value::String(t.clone()));
        }
        m.insert("role".into(), Value::String(self.role.clone()));
        if let Some(v) = self.server_version {
            m.insert("server_version".into(), Value::from(v));
        }
        match &self.xlog {
            Some(Xlog::Primary { location }) => {
                m.insert("xlog".into(), serde_json::json!({ "location": location }));
            }
            Some(Xlog::Replica {
                received_location,
                replayed_location,
                replayed_timestamp,
                paused,
            }) => {
                m.insert(
                    "xlog".into(),
                    serde_json::json!({
                        "received_location": received_location.or(*replayed_location),
                        "replayed_location": replayed_location,
                        "replayed_timestamp": replayed_timestamp,
                        "paused": paused,
                    }),
                );
            }
            None => {}
        }
        match (t.sync_standby, t.quorum_standby) {
            (true, _) => {
                m.insert("sync_standby".into(), Value::Bool(true));
            }
            (_, true) => {
                m.insert("quorum_standby".into(), Value::Bool(true));
            }
            _ => {}
        }
        if let Some(t) = self.timeline {
            m.insert("timeline".into(), Value::from(t));
        }
        if let Some(r) = &self.replication_state {
            m.insert("replication_state".into(), Value::String(r.clone()));
        }
        if !self.replication.is_empty() {
            m.insert("replication".into(), Value::Array(self.replication.clone()));
        }
        if self.paused {
            m.insert("pause".into(), Value::Bool(true));
        }
        if t.cluster_unlocked {
            m.insert("cluster_unlocked".into(), Value::Bool(true));
        }
        if self.failsafe_active {
            m.insert("failsafe_mode_is_active".into(), Value::Bool(true));
        }
        if self.watchdog_failed {
            m.insert("watchdog_failed".into(), Value::Bool(true));
        }
        m.insert("dcs_last_seen".into(), Value::from(self.dcs_last_seen));
        if !self.tags.is_empty() {
            m.insert("tags".into(), Value::Object(self.tags.clone()));
        }
        if let Some(s) = &self.sysid {
            m.insert(
                "database_system_identifier".into(),
                Value::String(s.clone()),
            );
        }
        if self.pending_restart {
            m.insert("pending_restart".into(), Value::Bool(true));
            if !self.pending_restart_reason.is_empty() {
                m.insert(
                    "pending_restart_reason".into(),
                    Value::Object(self.pending_restart_reason.clone()),
                );
            }
        }
        m.insert(
            "patroni".into(),
            serde_json::json!({"version": self.version, "scope": self.scope, "name": self.name}),
        );
        if let Some(Value::Object(r)) = &self.scheduled_restart {
            let mut r = r.clone();
            r.remove("postmaster_start_time");
            m.insert("scheduled_restart".into(), Value::Object(r));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_json_for_a_replica() {
        let s = NodeStatus {
            name: "pg2".into(),
            scope: "demo".into(),
            state: "running".into(),
            role: "replica".into(),
            xlog: Some(Xlog::Replica {
                received_location: Some(10),
                replayed_location: Some(9),
                replayed_timestamp: None,
                paused: false,
            }),
            timeline: Some(1),
            replication_state: Some("streaming".into()),
            version: "4.1.5".into(),
            ..NodeStatus::default()
        };
        let v = s.to_json(0);
        assert_eq!(v["xlog"]["received_location"], 10);
        assert_eq!(v["cluster_unlocked"], true);
        assert_eq!(v["patroni"]["name"], "pg2");
        assert!(v.get("pending_restart").is_none());
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys[0], "state");
        assert_eq!(keys[1], "role");
    }

    #[test]
    fn sync_standby_only_in_synchronous_mode() {
        use crate::cluster::{Cluster, KeyValue};
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: v.into(),
            mod_revision: 1,
            lease: 0,
        };
        let with_mode = |mode: &str| {
            let c = Cluster::from_kvs(&[
                kv("config", &format!(r#"{{"synchronous_mode":{mode}}}"#)),
                kv(
                    "sync",
                    r#"{"leader":"pg1","quorum":0,"sync_standby":"pg2"}"#,
                ),
                kv("leader", "pg1"),
            ]);
            NodeStatus {
                name: "pg2".into(),
                role: "replica".into(),
                cluster: Some(Arc::new(c)),
                cluster_valid_until_ms: Some(10),
                ..NodeStatus::default()
            }
        };
        assert_eq!(with_mode("true").to_json(0)["sync_standby"], true);
        assert_eq!(with_mode("\"quorum\"").to_json(0)["quorum_standby"], true);
        assert!(with_mode("false").to_json(0).get("sync_standby").is_none());
        assert!(
            with_mode("true").to_json(20).get("sync_standby").is_none(),
            "expired view"
        );
    }
}
