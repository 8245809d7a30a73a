//! PostgreSQL test helpers (independent of warden-pg's types so every crate can use them).
//!
//! [`PgTestDir`] hands out per-node directories owned by the PostgreSQL user and, on drop,
//! SIGKILLs every postmaster whose `postmaster.pid` lies under it — so a panicking test
//! never leaves PostgreSQL running.

use std::path::PathBuf;

use crate::{free_port, stop_all_postgres_under, RunAs, TestDir};

/// `(uid, gid)` to run PostgreSQL tools as: the `postgres` user when root, else None.
pub fn run_as_ids() -> Option<(u32, u32)> {
    let r = RunAs::detect();
    match (r.uid, r.gid) {
        (Some(u), Some(g)) => Some((u, g)),
        _ => None,
    }
}

/// initdb options that make tests fast and give password-checked TCP connections.
pub fn fast_initdb_options() -> Vec<String> {
    [
        "--no-sync",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--encoding=UTF8",
        "--locale=C",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Bootstrap pg_hba lines: password auth on loopback, trust on the unix socket.
pub fn test_hba_lines() -> Vec<String> {
    [
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication all 127.0.0.1/32 scram-sha-256",
        "local all all trust",
        "local replication all trust",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Directories and port of one test PostgreSQL node.
#[derive(Clone, Debug)]
pub struct PgNodeDirs {
    /// member name
    pub name: String,
    /// `<tmp>/<name>/data` (mode 0700, not created by initdb yet but existing and empty)
    pub data_dir: PathBuf,
    /// `<tmp>/<name>/sock`: use as `unix_socket_directories`
    pub socket_dir: PathBuf,
    /// `<tmp>/<name>/pgpass` (not created)
    pub pgpass: PathBuf,
    /// free loopback port
    pub port: u16,
}

/// A temp dir for PostgreSQL nodes; kills every postmaster under it on drop.
pub struct PgTestDir {
    /// the underlying dir (removed after the postmasters are killed)
    pub dir: TestDir,
}

impl PgTestDir {
    /// New temp dir owned by the PostgreSQL user.
    pub fn new(prefix: &str) -> PgTestDir {
        PgTestDir {
            dir: TestDir::new(prefix),
        }
    }

    /// Creates `<name>/`, `<name>/data` (0700) and `<name>/sock` and picks a port.
    pub fn node(&self, name: &str) -> PgNodeDirs {
        let base = self.dir.subdir(name, false);
        let data_dir = self.dir.subdir(&format!("{name}/data"), true);
        let socket_dir = self.dir.subdir(&format!("{name}/sock"), false);
        PgNodeDirs {
            name: name.to_string(),
            data_dir,
            socket_dir,
            pgpass: base.join("pgpass"),
            port: free_port(),
        }
    }
}

impl Drop for PgTestDir {
    fn drop(&mut self) {
        stop_all_postgres_under(self.dir.path());
    }
}
