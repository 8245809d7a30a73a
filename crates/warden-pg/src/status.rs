//! The per-cycle monitoring query (spec §3, "one round trip").

use serde::{Deserialize, Serialize};

/// One row of `pg_stat_replication`, serialised with Patroni's field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRow {
    /// role of the walsender
    pub usename: Option<String>,
    /// standby's application_name (its member name)
    pub application_name: Option<String>,
    /// client address (`host(client_addr)`, None for unix socket)
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, `backup`, `stopping`
    pub state: Option<String>,
    /// `async`, `potential`, `sync`, `quorum`
    pub sync_state: Option<String>,
    /// priority in synchronous_standby_names
    pub sync_priority: Option<i32>,
    /// `write_lsn` (bytes; not part of Patroni's `replication` rendering)
    #[serde(skip_serializing, default, deserialize_with = "lsn_text")]
    pub write_lsn: Option<u64>,
    /// `flush_lsn` (bytes)
    #[serde(skip_serializing, default, deserialize_with = "lsn_text")]
    pub flush_lsn: Option<u64>,
    /// `replay_lsn` (bytes)
    #[serde(skip_serializing, default, deserialize_with = "lsn_text")]
    pub replay_lsn: Option<u64>,
}

/// Reads an LSN the query renders as text (`0/3000148`).
fn lsn_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.as_deref().and_then(crate::render::parse_lsn))
}

/// One row of `pg_replication_slots` (temporary slots are left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// slot name
    pub name: String,
    /// `physical` or `logical`
    #[serde(rename = "type")]
    pub slot_type: String,
    /// a walsender/decoder is using it
    pub active: bool,
    /// oldest WAL the slot retains (None until reserved)
    pub restart_lsn: Option<u64>,
    /// logical: output plugin
    pub plugin: Option<String>,
    /// logical: database
    pub database: Option<String>,
    /// physical: `xmin` fed back by a hot standby (text; None when null)
    pub xmin: Option<String>,
    /// logical: `catalog_xmin` (text; None when null)
    pub catalog_xmin: Option<String>,
    /// logical: `confirmed_flush_lsn`
    pub confirmed_flush_lsn: Option<u64>,
    /// `wal_status`: `reserved`, `extended`, `unreserved` or `lost`
    pub wal_status: Option<String>,
    /// PostgreSQL 17: created with `failover = true`
    pub failover: bool,
}

impl SlotInfo {
    /// The slot as the core's slot decisions see it.
    pub fn to_core(&self) -> warden_core::slots::ExistingSlot {
        warden_core::slots::ExistingSlot {
            name: self.name.clone(),
            slot_type: self.slot_type.clone(),
            plugin: self.plugin.clone(),
            database: self.database.clone(),
            active: self.active,
            xmin: self.xmin.clone(),
            restart_lsn: self.restart_lsn,
            confirmed_flush_lsn: self.confirmed_flush_lsn,
            wal_status: self.wal_status.clone(),
            failover: self.failover,
        }
    }
}

/// Result of [`crate::Postgres::query_status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgStatus {
    /// `pg_is_in_recovery()`
    pub in_recovery: bool,
    /// primary: from `pg_walfile_name(pg_current_wal_lsn())`; replica: `received_tli`
    /// of the WAL receiver, else `pg_control_checkpoint().timeline_id`
    pub timeline: Option<u32>,
    /// primary: `pg_current_wal_flush_lsn()`; replica: max(receive, replay)
    pub wal_position: u64,
    /// `pg_last_wal_receive_lsn()`
    pub receive_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()`
    pub replay_lsn: Option<u64>,
    /// replica: `streaming` when the WAL receiver streams, else `in archive recovery`
    /// when a `restore_command` is set, else None
    pub replication_state: Option<String>,
    /// `server_version_num` (e.g. 150004)
    pub server_version: u32,
    /// `pg_postmaster_start_time()` as Python's `str(datetime)`
    pub postmaster_start_time: String,
    /// `pg_stat_replication`
    pub replication: Vec<ReplicationRow>,
    /// `pg_last_xact_replay_timestamp()` as Python's `str(datetime)`
    pub replayed_timestamp: Option<String>,
    /// `pg_is_wal_replay_paused()` (false on a primary)
    pub replay_paused: bool,
    /// `sender_host`/`sender_port` of the WAL receiver
    pub primary_conninfo_host_port: Option<(String, u16)>,
    /// `pg_replication_slots`
    pub slots: Vec<SlotInfo>,
    /// `current_setting('synchronous_standby_names')`
    pub synchronous_standby_names: String,
    /// `current_setting('synchronous_commit')`
    pub synchronous_commit: String,
    /// `pg_conf_load_time()`: changes with every reload and restart, i.e. whenever
    /// `pg_settings.pending_restart` can have changed.
    pub conf_load_time: Option<String>,
}

/// Result of [`crate::WalMonitor::read`]: just the WAL positions, for answers that
/// must be fresher than the last HA cycle (a peer's `GET /patroni` before a switchover).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalPositions {
    /// `pg_is_in_recovery()`
    pub in_recovery: bool,
    /// primary: `pg_current_wal_flush_lsn()`
    pub flush_lsn: Option<u64>,
    /// `pg_last_wal_receive_lsn()`
    pub receive_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()`
    pub replay_lsn: Option<u64>,
    /// `pg_is_wal_replay_paused()` (false on a primary)
    pub replay_paused: bool,
    /// `pg_last_xact_replay_timestamp()` as Python's `str(datetime)`
    pub replayed_timestamp: Option<String>,
    /// As [`PgStatus::replication_state`]: `streaming`, `in archive recovery` or None.
    pub replication_state: Option<String>,
}

/// The WAL position query behind [`WalPositions`].
pub(crate) const WAL_SQL: &str = "\
SELECT pg_catalog.pg_is_in_recovery(),
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_flush_lsn()::text END,
  pg_catalog.pg_last_wal_receive_lsn()::text,
  pg_catalog.pg_last_wal_replay_lsn()::text,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END,
  pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USTZH:TZM'),
  pg_catalog.current_setting('restore_command'),
  w.status
FROM (SELECT 1) AS dummy LEFT JOIN pg_catalog.pg_stat_wal_receiver AS w ON true";

/// The monitoring query (PostgreSQL 13+).
pub(crate) const STATUS_SQL: &str = "\
SELECT pg_catalog.pg_is_in_recovery(),
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
       ELSE ('x' || pg_catalog.left(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 8))::bit(32)::int8 END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_flush_lsn()::text END,
  pg_catalog.pg_last_wal_receive_lsn()::text,
  pg_catalog.pg_last_wal_replay_lsn()::text,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END,
  pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USTZH:TZM'),
  pg_catalog.current_setting('server_version_num')::int4,
  pg_catalog.to_char(pg_catalog.pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS.USTZH:TZM'),
  pg_catalog.current_setting('restore_command'),
  (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::int8,
  w.status, w.received_tli::int8, w.sender_host, w.sender_port,
  (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
      'usename', r.usename, 'application_name', r.application_name,
      'client_addr', pg_catalog.host(r.client_addr), 'state', r.state,
      'sync_state', r.sync_state, 'sync_priority', r.sync_priority,
      'write_lsn', r.write_lsn::text, 'flush_lsn', r.flush_lsn::text, 'replay_lsn', r.replay_lsn::text)
      ORDER BY r.application_name), '[]')::text
     FROM pg_catalog.pg_stat_replication r),
  (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.to_jsonb(s) ORDER BY s.slot_name), '[]')::text
     FROM pg_catalog.pg_replication_slots s WHERE NOT s.temporary),
  pg_catalog.current_setting('synchronous_standby_names'),
  pg_catalog.current_setting('synchronous_commit'),
  pg_catalog.pg_conf_load_time()::text
FROM (SELECT 1) AS dummy LEFT JOIN pg_catalog.pg_stat_wal_receiver AS w ON true";

/// A `pg_replication_slots` row as `to_jsonb` renders it (columns vary by version:
/// `failover` exists from 17 on).
#[derive(Deserialize)]
pub(crate) struct RawSlot {
    pub slot_name: String,
    pub slot_type: String,
    pub active: bool,
    pub restart_lsn: Option<String>,
    pub plugin: Option<String>,
    pub database: Option<String>,
    #[serde(default)]
    pub xmin: Option<serde_json::Value>,
    #[serde(default)]
    pub catalog_xmin: Option<serde_json::Value>,
    #[serde(default)]
    pub confirmed_flush_lsn: Option<String>,
    #[serde(default)]
    pub wal_status: Option<String>,
    #[serde(default)]
    pub failover: Option<bool>,
}

impl RawSlot {
    pub(crate) fn into_info(self) -> SlotInfo {
        // xids come as JSON strings or numbers depending on the version
        let xid = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        SlotInfo {
            name: self.slot_name,
            slot_type: self.slot_type,
            active: self.active,
            restart_lsn: self
                .restart_lsn
                .as_deref()
                .and_then(crate::render::parse_lsn),
            plugin: self.plugin,
            database: self.database,
            xmin: xid(self.xmin),
            catalog_xmin: xid(self.catalog_xmin),
            confirmed_flush_lsn: self
                .confirmed_flush_lsn
                .as_deref()
                .and_then(crate::render::parse_lsn),
            wal_status: self.wal_status,
            failover: self.failover.unwrap_or(false),
        }
    }
}
