//! Standby clusters (Patroni's `standby_cluster` section of the dynamic configuration).
//!
//! A standby cluster replicates from another ("remote") PostgreSQL site. Its leader lock
//! holder, the *standby leader*, runs PostgreSQL as a standby that follows the remote
//! site (streaming from `host:port`, or only `restore_command` = archive recovery); the
//! other members follow the standby leader. Nothing in a standby cluster is ever a
//! writable primary until the section is removed (`promote-cluster`), and a primary
//! cluster given the section (`demote-cluster`) turns its primary into a standby leader.
//!
//! This module reads the section (pure, lenient: a value of the wrong type counts as
//! absent; `warden-config` reports such values with the key). The decisions are in
//! `ha::standby`.

use serde_json::Value;

/// Where a standby leader takes its WAL from: the remote site as `standby_cluster`
/// names it. Compared with what PostgreSQL was last configured with, so any change (a
/// `PATCH /config` switching to archive recovery, a new host) reconfigures it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteSource {
    /// `host` (libpq: may list several hosts separated by commas).
    pub host: Option<String>,
    /// `port`.
    pub port: Option<u16>,
    /// The slot to stream from on the remote: `primary_slot_name` converted as a member
    /// name is (Patroni's `slot_name_from_member_name`); only when the key is set and
    /// `postgresql.use_slots` is on.
    pub slot: Option<String>,
    /// `restore_command` (for the standby leader and the standby cluster's replicas).
    pub restore_command: Option<String>,
    /// `archive_cleanup_command` (for every member of the standby cluster).
    pub archive_cleanup_command: Option<String>,
    /// `recovery_min_apply_delay` (only for a node following the remote site itself).
    pub recovery_min_apply_delay: Option<String>,
}

impl RemoteSource {
    /// The recovery parameters besides `primary_conninfo`/`primary_slot_name` that this
    /// source sets, as (GUC, value). `following_remote`: a node that follows the remote
    /// site itself (the standby leader, or anyone while the cluster has none) also
    /// delays apply; the replicas of the standby leader only take the archive commands
    /// (Patroni passes them along with the member to follow).
    pub fn recovery_overrides(&self, following_remote: bool) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = &self.restore_command {
            out.push(("restore_command", c.clone()));
        }
        if let Some(c) = &self.archive_cleanup_command {
            out.push(("archive_cleanup_command", c.clone()));
        }
        if following_remote {
            if let Some(d) = &self.recovery_min_apply_delay {
                out.push(("recovery_min_apply_delay", d.clone()));
            }
        }
        out
    }

    /// Streams from the remote (a host is named); otherwise only the archive is used.
    pub fn streams(&self) -> bool {
        self.host.is_some()
    }
}

/// A valid `standby_cluster` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyCluster {
    /// The remote site.
    pub source: RemoteSource,
    /// `create_replica_methods`: how the standby leader (and the replicas) build their
    /// data directory from the remote site; empty = the member's own configuration.
    pub create_replica_methods: Vec<String>,
}

/// A string-like value: strings as they are, numbers as written; anything else (and an
/// empty string, which Patroni treats as unset) is absent.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl StandbyCluster {
    /// The `standby_cluster` section of a dynamic configuration, when it makes this a
    /// standby cluster (Patroni's `is_standby_cluster`: a mapping with a non-empty
    /// `host`, `port` or `restore_command`). `use_slots`: `postgresql.use_slots` of the
    /// same configuration (without it no slot is used on the remote either).
    pub fn from_config(cfg: &Value, use_slots: bool) -> Option<StandbyCluster> {
        let sc = cfg.get("standby_cluster")?.as_object()?;
        let set = |k: &str| sc.get(k).is_some_and(crate::cluster::py_truthy);
        if !(set("host") || set("port") || set("restore_command")) {
            return None;
        }
        let port = match sc.get("port") {
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        // Patroni uses the slot only when the key is present (`no_replication_slot`
        // otherwise), whatever the docs say about a default derived from the name.
        let slot = text(sc.get("primary_slot_name"))
            .filter(|_| use_slots)
            .map(|s| crate::slots::slot_name_for_member(&s));
        let create_replica_methods = match sc.get("create_replica_methods") {
            Some(Value::Array(a)) => a.iter().filter_map(|m| text(Some(m))).collect::<Vec<_>>(),
            Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
            _ => Vec::new(),
        };
        Some(StandbyCluster {
            source: RemoteSource {
                host: text(sc.get("host")),
                port,
                slot,
                restore_command: text(sc.get("restore_command")),
                archive_cleanup_command: text(sc.get("archive_cleanup_command")),
                recovery_min_apply_delay: text(sc.get("recovery_min_apply_delay")),
            },
            create_replica_methods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_section_naming_a_source_makes_a_standby_cluster() {
        let cases = [
            (json!({}), false),
            (json!({"standby_cluster": null}), false),
            (json!({"standby_cluster": {}}), false),
            (json!({"standby_cluster": "host"}), false),
            (json!({"standby_cluster": {"host": ""}}), false),
            (
                json!({"standby_cluster": {"primary_slot_name": "s", "create_replica_methods": ["basebackup"]}}),
                false,
            ),
            (json!({"standby_cluster": {"port": 0}}), false),
            (json!({"standby_cluster": {"host": "10.0.0.1"}}), true),
            (json!({"standby_cluster": {"port": 5433}}), true),
            (
                json!({"standby_cluster": {"restore_command": "cp x %p"}}),
                true,
            ),
        ];
        for (cfg, want) in cases {
            assert_eq!(
                StandbyCluster::from_config(&cfg, true).is_some(),
                want,
                "{cfg}"
            );
        }
    }

    #[test]
    fn reads_every_key() {
        let cfg = json!({"standby_cluster": {
            "host": "db.remote", "port": "5433", "primary_slot_name": "Standby-1",
            "restore_command": "cp /a/%f %p", "archive_cleanup_command": "clean %r",
            "recovery_min_apply_delay": "5min",
            "create_replica_methods": ["backup_restore", "basebackup"]
        }});
        let sc = StandbyCluster::from_config(&cfg, true).expect("standby");
        assert_eq!(
            sc,
            StandbyCluster {
                source: RemoteSource {
                    host: Some("db.remote".into()),
                    port: Some(5433),
                    slot: Some("standby_1".into()),
                    restore_command: Some("cp /a/%f %p".into()),
                    archive_cleanup_command: Some("clean %r".into()),
                    recovery_min_apply_delay: Some("5min".into()),
                },
                create_replica_methods: vec!["backup_restore".into(), "basebackup".into()],
            }
        );
        // Without use_slots no slot is used on the remote either.
        assert_eq!(
            StandbyCluster::from_config(&cfg, false).map(|s| s.source.slot),
            Some(None)
        );
        // A numeric delay is written as a number of milliseconds, as PostgreSQL reads it.
        let cfg = json!({"standby_cluster": {"host": "h", "recovery_min_apply_delay": 1000}});
        assert_eq!(
            StandbyCluster::from_config(&cfg, true).and_then(|s| s.source.recovery_min_apply_delay),
            Some("1000".into())
        );
    }

    #[test]
    fn overrides_for_leader_and_replicas() {
        let src = RemoteSource {
            host: None,
            restore_command: Some("r".into()),
            archive_cleanup_command: Some("c".into()),
            recovery_min_apply_delay: Some("1s".into()),
            ..RemoteSource::default()
        };
        assert!(!src.streams());
        assert_eq!(
            src.recovery_overrides(true),
            vec![
                ("restore_command", "r".to_string()),
                ("archive_cleanup_command", "c".to_string()),
                ("recovery_min_apply_delay", "1s".to_string())
            ]
        );
        assert_eq!(src.recovery_overrides(false).len(), 2);
    }
}
