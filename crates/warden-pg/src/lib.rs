//! PostgreSQL control for Warden (a Patroni-compatible HA agent): data directory state,
//! postgresql.conf / pg_hba.conf / standby.signal / pgpass files, starting and stopping
//! the postmaster, the monitoring query, initdb, pg_basebackup, pg_rewind, replication
//! slots. The contract is `spec/postgres-management.md`.
//!
//! The library runs tools as the current user; [`PgSettings::run_as`] switches every
//! spawned command to another uid/gid (used by tests running as root).

#![warn(missing_docs)]

mod controldata;
mod error;
mod postgres;
mod process;
mod render;
mod replica;
mod settings;
mod slots;
mod status;
mod tls;

pub use controldata::{ControlData, DataDirState};
pub use error::PgError;
pub use postgres::{
    create_private_dir_all, parse_timeline_history, Postgres, ReadyState, WalMonitor,
};
pub use process::kill_instance;
pub use render::{
    build_archiver_command, conf_quote, dsn_escape, format_dsn, format_lsn, parse_lsn,
    pgpass_content, pgpass_escape, pgpass_find, primary_conninfo, quote_ident, quote_literal,
    render_lines_file, render_postgresql_conf, service_file_content, slot_name_for_member,
    tool_conninfo, ConninfoParams, DSN_KEY_ORDER, GENERATED_HEADER, SERVICE_NAME,
};
pub use replica::{CloneSource, CommandExit};
pub use settings::{
    effective_parameters, parse_pg_bool, Credentials, CustomBootstrapMode, PgSettings, SslOptions,
    StopMode, Upstream, CMDLINE_GUCS, RECOVERY_GUCS,
};
pub use slots::{SlotSession, SlotState, SLOT_NEEDS_COPY_CODES};
pub use status::{PgStatus, ReplicationRow, SlotInfo, WalPositions};
