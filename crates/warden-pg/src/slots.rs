//! Replication slot operations (spec §7): the SQL and file work behind the core's slot
//! plan. Nothing here decides which slot to touch.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use tokio_postgres::Client;

use crate::error::PgError;
use crate::postgres::{LocalTarget, Postgres};
use crate::render::format_lsn;
use crate::settings::Upstream;
use crate::status::{RawSlot, SlotInfo};

/// SQLSTATEs of a slot whose WAL is gone (`58P01`, undefined_file) or that was
/// invalidated (`55000`, object_not_in_prerequisite_state): advancing it cannot work,
/// it must be copied again.
pub const SLOT_NEEDS_COPY_CODES: [&str; 2] = ["58P01", "55000"];

/// A connection to the local server for slot work, in one database.
pub struct SlotSession {
    client: Client,
}

/// A logical slot read from the primary for copying: its attributes and the bytes of
/// its `pg_replslot/<name>/state` file.
#[derive(Clone, Debug)]
pub struct SlotState {
    /// attributes (type, database, plugin, confirmed_flush_lsn)
    pub info: SlotInfo,
    /// content of `pg_replslot/<name>/state`
    pub state: Vec<u8>,
}

impl Postgres {
    /// Opens a superuser session on the local server in `database` (the configured
    /// database when None). No statement timeout: advancing a logical slot decodes WAL
    /// and may take a while.
    pub async fn slot_session(&self, database: Option<&str>) -> Result<SlotSession, PgError> {
        let db = database.unwrap_or(&self.settings().database).to_string();
        let client = self
            .connect_db(
                self.local_target(),
                self.settings().port,
                &self.settings().superuser,
                &db,
                "Patroni",
                Some(0),
            )
            .await?;
        Ok(SlotSession { client })
    }

    /// Reads the logical slots `names` from the primary `from` with their state files
    /// (`pg_read_binary_file`), as the rewind user when one is configured (it was
    /// granted that function), else the superuser. PostgreSQL 17 failover slots are
    /// left to PostgreSQL's own slot synchronisation.
    pub async fn read_slot_states(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> Result<Vec<SlotState>, PgError> {
        let creds = self
            .settings()
            .rewind
            .as_ref()
            .unwrap_or(&self.settings().superuser);
        let client = self
            .connect_to(
                LocalTarget::Tcp(from.host.clone()),
                from.port,
                creds,
                "Patroni",
                Some(30_000),
            )
            .await?;
        let failover = if self.major_version().unwrap_or(0) >= 17 {
            " NOT failover AND"
        } else {
            ""
        };
        let sql = format!(
            "SELECT pg_catalog.to_jsonb(s)::text, \
             pg_catalog.pg_read_binary_file('pg_replslot/' || s.slot_name || '/state') \
             FROM pg_catalog.pg_replication_slots s WHERE{failover} NOT pg_catalog.pg_is_in_recovery() \
             AND s.slot_type = 'logical' AND s.slot_name = ANY($1)"
        );
        let names: Vec<String> = names.to_vec();
        let rows = client
            .query(&sql, &[&names])
            .await
            .map_err(|e| PgError::query("logical slots on the primary", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |e| PgError::query("logical slots on the primary (decode)", e);
            let json: String = r.try_get(0).map_err(get)?;
            let state: Vec<u8> = r.try_get(1).map_err(get)?;
            let raw: RawSlot = serde_json::from_str(&json).map_err(|e| PgError::Parse {
                what: "pg_replication_slots row".into(),
                detail: e.to_string(),
            })?;
            out.push(SlotState {
                info: raw.into_info(),
                state,
            });
        }
        Ok(out)
    }

    /// Writes copied slot state files into `pg_replslot` of the stopped server, each
    /// atomically (`<name>.tmp` directory, fsync, rename, fsync), as Patroni's
    /// `copy_logical_slots` does. PostgreSQL must not be running.
    pub fn install_slot_states(&self, slots: &[SlotState]) -> Result<(), PgError> {
        let dir = self.settings().data_dir.join("pg_replslot");
        let file_mode = self.file_mode();
        let dir_mode = if file_mode & 0o040 != 0 { 0o750 } else { 0o700 };
        for s in slots {
            let name = &s.info.name;
            // Names come from the primary; never let one escape pg_replslot.
            if !warden_core::slots::is_valid_slot_name(name) {
                return Err(PgError::Invalid(format!(
                    "refusing to install slot with unexpected name {name:?}"
                )));
            }
            let target = dir.join(name);
            let tmp = dir.join(format!("{name}.tmp"));
            remove_dir_if_exists(&tmp)?;
            std::fs::DirBuilder::new()
                .mode(dir_mode)
                .create(&tmp)
                .map_err(|e| PgError::io("create", &tmp, e))?;
            self.chown(&tmp)?;
            let file = tmp.join("state");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file_mode)
                .open(&file)
                .map_err(|e| PgError::io("create", &file, e))?;
            f.write_all(&s.state)
                .and_then(|()| f.sync_all())
                .map_err(|e| PgError::io("write", &file, e))?;
            drop(f);
            self.chown(&file)?;
            fsync_dir(&tmp)?;
            remove_dir_if_exists(&target)?;
            std::fs::rename(&tmp, &target).map_err(|e| PgError::io("rename", &tmp, e))?;
            fsync_dir(&target)?;
        }
        fsync_dir(&dir)
    }
}

fn remove_dir_if_exists(p: &Path) -> Result<(), PgError> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io("remove", p, e)),
    }
}

fn fsync_dir(p: &Path) -> Result<(), PgError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| PgError::io("fsync", p, e))
}

impl SlotSession {
    /// Drops the slot unless it is active, as Patroni's query: `(active, dropped)`;
    /// `(false, false)` when it does not exist.
    pub async fn drop_slot(&self, name: &str) -> Result<(bool, bool), PgError> {
        let rows = self
            .client
            .query(
                "WITH slots AS (SELECT slot_name, active FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1), dropped AS (SELECT pg_catalog.pg_drop_replication_slot(slot_name), \
                 true AS dropped FROM slots WHERE not active) \
                 SELECT active, COALESCE(dropped, false) FROM slots FULL OUTER JOIN dropped ON true",
                &[&name],
            )
            .await
            .map_err(|e| PgError::query(&format!("drop slot {name}"), e))?;
        match rows.first() {
            None => Ok((false, false)),
            Some(r) => {
                let get = |e| PgError::query(&format!("drop slot {name}"), e);
                let active: Option<bool> = r.try_get(0).map_err(get)?;
                let dropped: bool = r.try_get(1).map_err(get)?;
                Ok((active.unwrap_or(false), dropped))
            }
        }
    }

    /// `pg_create_physical_replication_slot(name, true)` unless such a physical slot exists.
    pub async fn create_physical_slot(&self, name: &str) -> Result<(), PgError> {
        self.client
            .execute(
                "SELECT pg_catalog.pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical' AND slot_name = $1)",
                &[&name],
            )
            .await
            .map(|_| ())
            .map_err(|e| PgError::query(&format!("create physical slot {name}"), e))
    }

    /// `pg_create_logical_replication_slot(name, plugin)` in this session's database
    /// unless such a logical slot exists.
    pub async fn create_logical_slot(&self, name: &str, plugin: &str) -> Result<(), PgError> {
        self.client
            .execute(
                "SELECT pg_catalog.pg_create_logical_replication_slot($1, $2) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical' AND slot_name = $1)",
                &[&name, &plugin],
            )
            .await
            .map(|_| ())
            .map_err(|e| PgError::query(&format!("create logical slot {name}"), e))
    }

    /// `pg_replication_slot_advance(name, lsn)` (a logical slot must be advanced in its
    /// own database).
    pub async fn advance_slot(&self, name: &str, lsn: u64) -> Result<(), PgError> {
        let lsn = format_lsn(lsn);
        self.client
            .execute(
                "SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&name, &lsn],
            )
            .await
            .map(|_| ())
            .map_err(|e| PgError::query(&format!("advance slot {name} to {lsn}"), e))
    }
}
